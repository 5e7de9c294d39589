//! The admin API on the real binary: changes that move live traffic and survive a restart,
//! refused changes that leave traffic alone, token and Host checks, exact request and plugin
//! counts in a Prometheus scrape, and the log stream.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789abcdef";

/// Writes a configuration whose admin API needs [`TOKEN`] (from a token file beside it).
fn write_config(dir: &Path, listen: SocketAddr, admin: SocketAddr, rest: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("switchyard.toml");
    let text = format!(
        "# written by the admin API test\n[server]\nlisten = [\"{listen}\"]\nthreads = 1\n\n[admin]\nlisten = \"{admin}\"\ntoken_file = \"admin.token\"\n\n{rest}"
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    config
}

/// Waits until the admin API answers (with the token).
async fn wait_up(admin: SocketAddr, running: &mut common::RunningBinary) {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = running.0.try_wait() {
            panic!("switchyard exited with {status}");
        }
        let answer = common::client().get(format!("http://{admin}/api/v1/health")).bearer_auth(TOKEN).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the admin API never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One API call with the token: status and JSON answer.
async fn call(admin: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut request = common::client().request(method, format!("http://{admin}/api/v1{path}")).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
}

/// Which backends answer `n` requests for `host` (by the origins' `x-backend`).
async fn backends_seen(proxy: SocketAddr, host: &str, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let answer = common::get(proxy, host, "/").await;
        seen.push(answer.backend.unwrap_or_else(|| format!("status {}", answer.status)));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_move_live_traffic_survive_a_restart_and_bad_ones_change_nothing() {
    let (a, b1, b2) = (common::origin("a").await, common::origin("b1").await, common::origin("b2").await);
    let other = common::origin("other").await;
    let (listen, admin) = (common::closed_port(), common::closed_port());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rest = format!(
        "[[upstream]]\nname = \"other\"\nbackends = [{{ address = \"{}\" }}]\n\n[[site]]\nhosts = [\"other.test\"]\n[[site.route]]\nupstream = \"other\"\n",
        other.addr
    );
    let config = write_config(dir.path(), listen, admin, &rest);
    let mut running = common::RunningBinary::start(&config);
    wait_up(admin, &mut running).await;
    assert_eq!(common::get(listen, "shop.test", "/").await.status, 404, "no site for shop.test yet");

    // A backend (creating its upstream), two more, then a domain that sends to it.
    for (address, tag) in [(a.addr, "a"), (b1.addr, "b"), (b2.addr, "b")] {
        let (status, answer) = call(
            admin,
            "POST",
            "/backends",
            Some(json!({"upstream": "shop", "address": address.to_string(), "tags": [tag]})),
        )
        .await;
        assert_eq!(status, 201, "{answer}");
        assert_eq!(answer["id"], format!("shop@{address}"));
    }
    let site = json!({"hosts": ["shop.test"], "route": [{"upstream": "shop"}]});
    let (status, answer) = call(admin, "POST", "/domains", Some(site)).await;
    assert_eq!(status, 201, "{answer}");
    let seen = backends_seen(listen, "shop.test", 6).await;
    assert!(seen.iter().all(|b| ["a", "b1", "b2"].contains(&b.as_str())), "{seen:?}");

    // The tag switch: everything to "a", then everything to "b", each seen on the next request.
    let (status, answer) = call(admin, "POST", "/domains/shop.test/switch", Some(json!({"tag": "a"}))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(backends_seen(listen, "shop.test", 4).await, vec!["a"; 4]);
    let (status, answer) = call(admin, "POST", "/domains/shop.test/switch", Some(json!({"tag": "b"}))).await;
    assert_eq!(status, 200, "{answer}");
    let seen = backends_seen(listen, "shop.test", 4).await;
    assert!(seen.iter().all(|b| b == "b1" || b == "b2"), "after the switch to b: {seen:?}");

    // Drain b1: only b2 answers; then delete b1.
    let b1_id = format!("shop@{}", b1.addr);
    let (status, answer) = call(admin, "POST", &format!("/backends/{b1_id}/drain"), Some(json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    let (_, backend) = call(admin, "GET", &format!("/backends/{b1_id}"), None).await;
    assert_eq!((backend["drain"].as_bool(), backend["available"].as_bool()), (Some(true), Some(false)), "{backend}");
    assert_eq!(backends_seen(listen, "shop.test", 4).await, vec!["b2"; 4]);
    let (status, answer) = call(admin, "DELETE", &format!("/backends/{b1_id}"), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(call(admin, "GET", &format!("/backends/{b1_id}"), None).await.0, 404);
    let (status, probe) = call(admin, "POST", &format!("/backends/shop@{}/health", b2.addr), Some(json!({}))).await;
    assert_eq!((status, probe["probe"]["passed"].as_bool()), (200, Some(true)), "{probe}");

    // Invalid changes are refused with a reason, and traffic is as it was.
    let bad_route = json!({"hosts": ["shop.test"], "route": [{"upstream": "nowhere"}]});
    let (status, answer) = call(admin, "PUT", "/domains/shop.test", Some(bad_route)).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["message"].as_str().unwrap_or("").contains("nowhere"), "{answer}");
    let (status, answer) =
        call(admin, "POST", "/backends", Some(json!({"upstream": "shop", "address": "not an address"}))).await;
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = call(admin, "POST", "/domains/shop.test/switch", Some(json!({"tag": "c"}))).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(call(admin, "POST", "/domains", Some(json!({"hosts": ["other.test"]}))).await.0, 409);
    assert_eq!(call(admin, "DELETE", "/domains/none.test", None).await.0, 404);
    assert_eq!(backends_seen(listen, "shop.test", 3).await, vec!["b2"; 3]);
    assert_eq!(common::get(listen, "other.test", "/").await.backend.as_deref(), Some("other"));

    // Concurrent edits: a stale If-Match is refused.
    let response = common::client()
        .post(format!("http://{admin}/api/v1/domains/shop.test/switch"))
        .bearer_auth(TOKEN)
        .header("if-match", "\"0000000000000000\"")
        .json(&json!({"tag": "a"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 412);
    let current = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (_, config_view) = call(admin, "GET", "/config", None).await;
    assert_eq!(current.as_deref(), config_view["etag"].as_str());
    assert_eq!(config_view["config"]["admin"]["token_file"], "<redacted>");

    // The file says all of it, comments kept; a restart serves the same.
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.starts_with("# written by the admin API test"), "{text}");
    assert!(text.contains("drain = true") || !text.contains(&b1.addr.to_string()), "{text}");
    drop(running);
    let mut running = common::RunningBinary::start(&config);
    wait_up(admin, &mut running).await;
    assert_eq!(backends_seen(listen, "shop.test", 3).await, vec!["b2"; 3]);
    let (_, domains) = call(admin, "GET", "/domains", None).await;
    let hosts: Vec<&str> =
        domains["domains"].as_array().into_iter().flatten().filter_map(|d| d["hosts"][0].as_str()).collect();
    assert_eq!(hosts, vec!["other.test", "shop.test"]);
    let (_, backends) = call(admin, "GET", "/domains/shop.test/backends", None).await;
    let ids: Vec<&str> = backends["upstreams"][0]["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, vec![format!("shop@{}", a.addr), format!("shop@{}", b2.addr)]);

    // Deleting the domain's only host removes the site.
    let (status, answer) = call(admin, "DELETE", "/domains/shop.test", None).await;
    assert_eq!((status, answer["removed"].as_str()), (200, Some("site")), "{answer}");
    assert_eq!(common::get(listen, "shop.test", "/").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_host_are_checked_and_a_public_listener_needs_a_token() {
    let origin = common::origin("o").await;
    let (listen, admin) = (common::closed_port(), common::closed_port());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rest = format!("[[upstream]]\nname = \"o\"\nbackends = [{{ address = \"{}\" }}]\n", origin.addr);
    let config = write_config(dir.path(), listen, admin, &rest);
    let mut running = common::RunningBinary::start(&config);
    wait_up(admin, &mut running).await;
    let url = format!("http://{admin}/api/v1/backends");
    let client = common::client();
    let without = client.get(&url).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(without.status().as_u16(), 401);
    assert!(without.headers().contains_key("www-authenticate"));
    let wrong =
        client.get(&url).bearer_auth("test-token-0123456789abcdeX").send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wrong.status().as_u16(), 401);
    let metrics = client.get(format!("http://{admin}/metrics")).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metrics.status().as_u16(), 401, "metrics need the token too");
    let rebinding = client
        .get(&url)
        .bearer_auth(TOKEN)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rebinding.status().as_u16(), 403);
    let right = client.get(&url).bearer_auth(TOKEN).header("host", format!("localhost:{}", admin.port()));
    assert_eq!(right.send().await.unwrap_or_else(|e| panic!("{e}")).status().as_u16(), 200);
    // A form post (the kind a web page can send across sites) changes nothing.
    let form = client
        .post(format!("http://{admin}/api/v1/reload"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(form.status().as_u16(), 415);
    drop(running);

    // Listening beyond loopback without a token: the process refuses to start, saying why.
    let public = SocketAddr::from(([0, 0, 0, 0], common::closed_port().port()));
    let open = dir.path().join("open.toml");
    std::fs::write(&open, format!("[server]\nlisten = [\"{listen}\"]\n[admin]\nlisten = \"{public}\"\n{rest}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&open)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started without a token: {stderr}");
    assert!(stderr.contains("open.toml:") && stderr.contains("token_file"), "{stderr}");
}

/// A scrape as `name{labels}` → value.
fn scrape_values(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_requests_by_status_and_plugin_calls_exactly() {
    let (a, b) = (common::origin("a").await, common::origin("b").await);
    let (listen, admin) = (common::closed_port(), common::closed_port());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rest = format!(
        "[[upstream]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n\n[[site]]\nname = \"shop\"\nhosts = [\"shop.test\"]\nheader_policy = false\n[[site.route]]\nname = \"all\"\nupstream = \"app\"\n",
        a.addr, b.addr
    );
    let config = write_config(dir.path(), listen, admin, &rest);
    let mut running = common::RunningBinary::start(&config);
    wait_up(admin, &mut running).await;
    for _ in 0..7 {
        assert_eq!(common::get(listen, "shop.test", "/").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(common::get(listen, "unknown.test", "/").await.status, 404);
    }
    // A request is counted when it ends, just after its answer reached the client, and its
    // connection is counted until the proxy sees it close: scrape until the last ones are in.
    let ok_series = r#"switchyard_requests_total{code="2xx",route="all",site="shop",upstream="app"}"#;
    let not_found_series = r#"switchyard_requests_total{code="4xx",route="-",site="-",upstream="-"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, values) = loop {
        let text = common::client()
            .get(format!("http://{admin}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let values = scrape_values(&text);
        let settled = values.get(ok_series) == Some(&7.0)
            && values.get(not_found_series) == Some(&3.0)
            && values.get("switchyard_client_connections_active") == Some(&0.0);
        if settled || Instant::now() > deadline {
            break (text, values);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let value = |series: &str| values.get(series).copied().unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(value(r#"switchyard_requests_total{code="2xx",route="all",site="shop",upstream="app"}"#), 7.0);
    assert_eq!(value(r#"switchyard_requests_total{code="5xx",route="all",site="shop",upstream="app"}"#), 0.0);
    assert_eq!(value(r#"switchyard_requests_total{code="4xx",route="-",site="-",upstream="-"}"#), 3.0);
    assert_eq!(value(r#"switchyard_request_duration_seconds_count{route="all",site="shop",upstream="app"}"#), 7.0);
    // The router decides every request. It is deterministic, so it is called once per host and
    // path (the requests come one after another), and its decision is given again for the other
    // requests to the same host and path: 7 to shop.test/, 3 to unknown.test/. The balancer runs
    // for each proxied one (two candidates).
    assert_eq!(value(r#"switchyard_plugin_calls_total{plugin="router",role="router"}"#), 2.0);
    assert_eq!(value(r#"switchyard_plugin_decisions_reused_total{plugin="router",role="router"}"#), 8.0);
    assert_eq!(value(r#"switchyard_plugin_calls_total{plugin="round-robin",role="balancer"}"#), 7.0);
    assert_eq!(value(r#"switchyard_plugin_traps_total{plugin="router",role="router"}"#), 0.0);
    assert_eq!(value(&format!(r#"switchyard_backend_healthy{{backend="{}",upstream="app"}}"#, a.addr)), 1.0);
    assert_eq!(value("switchyard_client_connections_active"), 0.0);

    let (status, stats) = call(admin, "GET", "/stats?window=60", None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["total"]["requests"], 10, "{stats}");
    assert_eq!(stats["total"]["errors"], 0, "{stats}");
    let shop = stats["sites"].as_array().into_iter().flatten().find(|s| s["site"] == "shop").cloned();
    assert_eq!(shop.map(|s| s["requests"].clone()), Some(json!(7)), "{stats}");
    let (_, plugins) = call(admin, "GET", "/plugins", None).await;
    let router = plugins["plugins"].as_array().into_iter().flatten().find(|p| p["name"] == "router").cloned();
    let router = router.unwrap_or_else(|| panic!("no router in {plugins}"));
    assert_eq!((router["calls"].clone(), router["reused"].clone()), (json!(2), json!(8)), "{router}");
    assert_eq!(router["sha256"].as_str().map(str::len), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stream_delivers_access_lines_as_requests_happen() {
    let origin = common::origin("o").await;
    let (listen, admin) = (common::closed_port(), common::closed_port());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rest = format!(
        "[[upstream]]\nname = \"o\"\nbackends = [{{ address = \"{}\" }}]\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"o\"\n",
        origin.addr
    );
    let config = write_config(dir.path(), listen, admin, &rest);
    let mut running = common::RunningBinary::start_logging(&config, "warn,switchyard::access=info");
    wait_up(admin, &mut running).await;
    let mut stream = reqwest::Client::new()
        .get(format!("http://{admin}/api/v1/logs/stream?filter=switchyard::access&recent=false"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(stream.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let mut received = String::new();
    // The first chunk is the stream's opening comment: the subscription is in place.
    while !received.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await;
        let chunk = chunk.unwrap_or_else(|_| panic!("no opening")).unwrap_or_else(|e| panic!("{e}"));
        let chunk = chunk.unwrap_or_else(|| panic!("the stream ended"));
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    for i in 0..3 {
        assert_eq!(common::get(listen, "any.test", &format!("/streamed-{i}")).await.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(0..3).all(|i| received.contains(&format!("/streamed-{i}"))) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => received.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream stopped ({other:?}) with:\n{received}"),
        }
    }
    let line = received.lines().find(|l| l.contains("/streamed-0")).unwrap_or_default();
    let event: Value =
        serde_json::from_str(line.trim_start_matches("data: ")).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(event["status"], 200, "{event}");
    assert_eq!(event["upstream"], "o", "{event}");
    assert_eq!(event["target"], "switchyard::access", "{event}");
}
