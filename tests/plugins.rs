//! Plugin stories: a custom router loaded from a file replaces the built-in; sha256 pins and
//! config rejections are refused at load with file:line:col; plugins that trap, loop forever or
//! eat memory get their failure policy's answer within the deadline while the proxy lives on.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchyard::plugin::sha256_hex;

fn filtered_config(backend: &str, failure: &str) -> String {
    format!(
        r#"
[server]
request_filters = ["chaos"]

[[plugin]]
name = "chaos"
path = "chaos.wasm"
failure = "{failure}"
timeout_ms = 20
memory_limit_mb = 8

[[upstream]]
name = "u"
backends = [{{ address = "{backend}" }}]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "u"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_router_from_a_file_replaces_the_built_in() {
    let (acme, globex, shared) = (origin("acme").await, origin("globex").await, origin("shared").await);
    let config = format!(
        r#"
[[plugin]]
name = "tenants"
path = "tenant-router.wasm"
sha256 = "{sha}"
roles = ["router"]
config = {{ domain = "saas.test", default = "shared", tenants = {{ acme = "acme", globex = "globex" }} }}

[[upstream]]
name = "acme"
backends = [{{ address = "{}" }}]
[[upstream]]
name = "globex"
backends = [{{ address = "{}" }}]
[[upstream]]
name = "shared"
backends = [{{ address = "{}" }}]

# The built-in router would send everything to "shared"; the plugin replaces it.
[[site]]
hosts = ["*"]
[[site.route]]
upstream = "shared"
"#,
        acme.addr,
        globex.addr,
        shared.addr,
        sha = sha256_hex(&std::fs::read(fixture("tenant-router")).unwrap_or_default()),
    );
    let generation = must_build(&config);
    let tenants = generation.plugins.iter().find(|p| p.name() == "tenants").cloned();
    let tenants = tenants.unwrap_or_else(|| panic!("no tenants plugin"));
    assert!(
        !tenants.remembers(switchyard::plugin::Role::Router),
        "a plugin that does not declare itself deterministic is always called"
    );
    let proxy = proxy(generation).await;
    let r = send(proxy.local_addr, "GET", "www.saas.test", "/", &[("x-tenant", "acme")]).await;
    assert_eq!(r.backend.as_deref(), Some("acme"));
    let r = send(proxy.local_addr, "GET", "www.saas.test", "/", &[("x-tenant", "acme")]).await;
    assert_eq!(r.backend.as_deref(), Some("acme"));
    let stats = tenants.shared().stats.role_snapshot(switchyard::plugin::Role::Router);
    assert_eq!((stats.calls, stats.reused), (2, 0), "called for each request");
    assert_eq!(
        r.echoed_header("x-switchyard-tenant").as_deref(),
        Some("acme"),
        "the plugin's header change reaches the upstream"
    );
    assert_eq!(get(proxy.local_addr, "globex.saas.test", "/a").await.backend.as_deref(), Some("globex"));
    assert_eq!(get(proxy.local_addr, "nobody.saas.test", "/a").await.backend.as_deref(), Some("shared"));
}

#[test]
fn a_sha256_mismatch_is_refused_at_load_with_its_place() {
    let config = r#"[[plugin]]
name = "tenants"
path = "tenant-router.wasm"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
config = { tenants = { a = "u" } }
"#;
    let problems = build(config).err().unwrap_or_else(|| panic!("a wrong pin must be refused"));
    let text = problems.to_string();
    assert!(text.contains("test.toml:4:10: plugin `tenants`: sha256 mismatch"), "{text}");
}

#[test]
fn a_plugin_rejecting_its_config_is_a_load_error_naming_it() {
    let config = r#"[[plugin]]
name = "picky"
path = "chaos.wasm"
config = { reject = "the answer must be 42" }
"#;
    let problems = build(config).err().unwrap_or_else(|| panic!("a rejected config must fail the load"));
    let text = problems.to_string();
    assert!(text.contains("plugin `picky`"), "{text}");
    assert!(text.contains("the answer must be 42"), "{text}");
    assert!(text.contains("test.toml:3:"), "{text}");
}

#[test]
fn a_plugin_without_the_required_role_is_refused() {
    let config = r#"
[[plugin]]
name = "chaos"
path = "chaos.wasm"

[[upstream]]
name = "u"
balancer = "chaos"
backends = [{ address = "127.0.0.1:9" }]
"#;
    let text = build(config).err().map(|d| d.to_string()).unwrap_or_default();
    assert!(text.contains("test.toml:8:12: plugin `chaos` cannot be used as a balancer"), "{text}");
}

async fn expect_contained(at: std::net::SocketAddr, misbehaviour: &str, status: u16) -> Duration {
    let started = Instant::now();
    let r = send(at, "GET", "x.test", "/", &[("x-misbehave", misbehaviour)]).await;
    let took = started.elapsed();
    assert_eq!(r.status, status, "{misbehaviour}: {}", r.body);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_plugins_are_contained_with_policy_closed() {
    let a = origin("a").await;
    let generation = must_build(&filtered_config(&a.addr.to_string(), "closed"));
    let chaos =
        generation.plugins.iter().find(|p| p.name() == "chaos").cloned().unwrap_or_else(|| panic!("no chaos plugin"));
    let proxy = proxy(generation).await;

    expect_contained(proxy.local_addr, "trap", 500).await;
    assert_eq!(get(proxy.local_addr, "x.test", "/").await.status, 200, "served after a trap");

    let took = expect_contained(proxy.local_addr, "loop", 500).await;
    // The deadline is 20 ms; allow for a loaded machine, but not for a hang.
    assert!(took < Duration::from_secs(2), "an endless loop was cut off after {took:?}");
    assert_eq!(get(proxy.local_addr, "x.test", "/").await.status, 200, "served after a timeout");

    expect_contained(proxy.local_addr, "grow", 500).await;
    assert_eq!(get(proxy.local_addr, "x.test", "/").await.status, 200, "served after a memory breach");

    let stats = chaos.shared().stats.snapshot();
    assert_eq!((stats.traps, stats.timeouts, stats.memory_breaches), (1, 1, 1), "{stats:?}");
    assert!(stats.calls >= 6, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_plugins_are_skipped_with_policy_open() {
    let a = origin("a").await;
    let proxy = proxy(must_build(&filtered_config(&a.addr.to_string(), "open"))).await;
    for misbehaviour in ["trap", "loop", "grow", "trap"] {
        let r = send(proxy.local_addr, "GET", "x.test", "/", &[("x-misbehave", misbehaviour)]).await;
        assert_eq!((r.status, r.backend.as_deref()), (200, Some("a")), "{misbehaviour}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_can_use_every_host_import() {
    let a = origin("a").await;
    let proxy = proxy(must_build(&filtered_config(&a.addr.to_string(), "closed"))).await;
    let r = send(proxy.local_addr, "POST", "Tour.Test:81", "/", &[("x-misbehave", "host-tour")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("x-tour").and_then(|v| v.to_str().ok()), Some("1"));
    for expected in [
        "now_ok=true",
        "mono_ok=true",
        "random_differs=true",
        "kv_set=true",
        "kv_get=v",
        "kv_deleted=true",
        "kv_limit=true",
        "incr=2",
        "protected=true",
        "context=done",
        "client_ip=127.0.0.1",
        "method=POST",
        "host=tour.test",
    ] {
        assert!(r.body.contains(expected), "{expected} missing from {}", r.body);
    }
    // The key-value store is shared by all instances of the plugin and outlives the request.
    let again = send(proxy.local_addr, "GET", "x", "/", &[("x-misbehave", "host-tour")]).await;
    assert!(again.body.contains("incr=4"), "{}", again.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_response_filter_roles_are_wired_per_route() {
    let (a, b, other) = (origin("a").await, origin("b").await, origin("other").await);
    let config = format!(
        r#"
[[plugin]]
name = "chaos"
path = "chaos.wasm"

[[upstream]]
name = "ab"
backends = [{{ address = "{}", tags = ["a"] }}, {{ address = "{}", tags = ["b"] }}]

[[upstream]]
name = "other"
backends = [{{ address = "{}" }}]

[[site]]
hosts = ["*"]
response_filters = ["chaos"]

[[site.route]]
name = "split"
path_prefix = "/split"
split = "chaos"
upstream = "ab"

[[site.route]]
name = "plain"
upstream = "ab"
"#,
        a.addr, b.addr, other.addr
    );
    let generation = must_build(&config);
    let chaos =
        generation.plugins.iter().find(|p| p.name() == "chaos").cloned().unwrap_or_else(|| panic!("chaos not loaded"));
    let mut roles: Vec<_> = chaos.roles().iter().map(|r| r.config_name()).collect();
    roles.sort();
    assert_eq!(roles, vec!["request_filter", "response_filter", "split"], "roles are detected from the exports");
    let proxy = proxy(generation).await;
    let at = proxy.local_addr;

    for _ in 0..4 {
        let r = send(at, "GET", "x", "/split", &[("x-variant", "b")]).await;
        assert_eq!(r.backend.as_deref(), Some("b"), "the split's tag narrows the candidates");
        assert_eq!(
            r.headers.get("x-chaos").and_then(|v| v.to_str().ok()),
            Some("seen 200"),
            "the site's response filter ran"
        );
    }
    assert_eq!(send(at, "GET", "x", "/split", &[("x-upstream", "other")]).await.backend.as_deref(), Some("other"));
    let r = send(at, "GET", "x", "/split", &[("x-variant", "c")]).await;
    assert_eq!(r.status, 503, "no backend carries tag c: {}", r.body);
    // The split only applies to its route.
    let r = send(at, "GET", "x", "/", &[("x-upstream", "other")]).await;
    assert!(matches!(r.backend.as_deref(), Some("a") | Some("b")), "{:?}", r.backend);
    // A response filter that traps fails the response with its policy (closed: 500).
    let r = send(at, "GET", "x", "/", &[("x-misbehave-response", "trap")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(get(at, "x", "/").await.status, 200);
}
