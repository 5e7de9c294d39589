//! Routing stories over real sockets: the built-in router's hosts, prefixes, matchers and
//! prefix stripping; 404 and 502; round-robin; malformed requests; the demo configuration.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn routing_config(a: &str, b: &str, c: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "users"
backends = [{{ address = "{a}" }}]

[[upstream]]
name = "writers"
backends = [{{ address = "{b}" }}]

[[upstream]]
name = "rest"
backends = [{{ address = "{c}" }}]

[[site]]
name = "api"
hosts = ["api.test"]

[[site.route]]
path_prefix = "/users"
strip_prefix = true
upstream = "users"

[[site.route]]
path_prefix = "/users"
methods = ["POST", "PUT"]
upstream = "writers"

[[site.route]]
path_prefix = "/"
headers = {{ x-beta = "1" }}
upstream = "writers"

[[site.route]]
path_prefix = "/"
query = {{ debug = true }}
upstream = "users"

[[site.route]]
name = "api-root"
upstream = "rest"

[[site]]
name = "wild"
hosts = ["*.wild.test"]

[[site.route]]
upstream = "writers"

[[site]]
name = "fallback"
hosts = ["*"]

[[site.route]]
path_prefix = "/only"
upstream = "rest"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_longest_prefix_and_matchers() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let config = routing_config(&a.addr.to_string(), &b.addr.to_string(), &c.addr.to_string());
    let proxy = proxy(must_build(&config)).await;
    let at = proxy.local_addr;

    // Longest prefix, with the prefix stripped and the query kept.
    let r = get(at, "api.test", "/users/42?page=2").await;
    assert_eq!((r.status, r.backend.as_deref()), (200, Some("a")));
    assert_eq!(r.echoed("target").as_deref(), Some("/42?page=2"));
    // Prefixes end at segment boundaries.
    let r = get(at, "api.test", "/usersx").await;
    assert_eq!(r.backend.as_deref(), Some("c"));
    assert_eq!(r.echoed("path").as_deref(), Some("/usersx"));
    // A method matcher takes precedence over the plain route with the same prefix.
    let r = send(at, "POST", "api.test", "/users/42", &[]).await;
    assert_eq!(r.backend.as_deref(), Some("b"));
    assert_eq!(r.echoed("path").as_deref(), Some("/users/42"), "this route does not strip");
    // Header and query matchers.
    assert_eq!(send(at, "GET", "api.test", "/x", &[("x-beta", "1")]).await.backend.as_deref(), Some("b"));
    assert_eq!(send(at, "GET", "api.test", "/x", &[("x-beta", "0")]).await.backend.as_deref(), Some("c"));
    assert_eq!(get(at, "api.test", "/x?debug").await.backend.as_deref(), Some("a"));
    // Host matching is case-insensitive and ignores the port.
    assert_eq!(get(at, "API.test:8080", "/x").await.backend.as_deref(), Some("c"));
    // Wildcards match any depth of subdomain, not the bare domain.
    assert_eq!(get(at, "one.wild.test", "/").await.backend.as_deref(), Some("b"));
    assert_eq!(get(at, "two.one.wild.test", "/").await.backend.as_deref(), Some("b"));
    // The catch-all site takes every other host, and its routes still apply.
    assert_eq!(get(at, "wild.test", "/only/x").await.backend.as_deref(), Some("c"));
    assert_eq!(get(at, "elsewhere.example", "/only").await.backend.as_deref(), Some("c"));
    let r = get(at, "elsewhere.example", "/other").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no route"), "{}", r.body);
}

/// The built-in router is deterministic, so its decisions are remembered with what it read
/// (method, headers, query) and given again only to requests that read the same: requests to
/// the same host and path that differ in any matcher's input still get their own routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_route_decisions_still_follow_every_matcher() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let generation = must_build(&routing_config(&a.addr.to_string(), &b.addr.to_string(), &c.addr.to_string()));
    let router = generation.plugins.iter().find(|p| p.name() == "router").cloned();
    let router = router.unwrap_or_else(|| panic!("no built-in router"));
    assert!(router.remembers(switchyard::plugin::Role::Router), "the built-in router declares itself deterministic");
    let proxy = proxy(generation).await;
    let at = proxy.local_addr;

    // (method, host, target, headers, expected backend, expected path at the backend)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 8] = [
        ("GET", "api.test", "/users/7", &[], "a", "/7"),
        ("POST", "api.test", "/users/7", &[], "b", "/users/7"),
        ("GET", "api.test", "/x", &[("x-beta", "1")], "b", "/x"),
        ("GET", "api.test", "/x", &[("x-beta", "2")], "c", "/x"),
        ("GET", "api.test", "/x", &[], "c", "/x"),
        ("GET", "api.test", "/x?debug", &[], "a", "/x"),
        ("GET", "API.test", "/x", &[("X-Beta", "1")], "b", "/x"),
        ("GET", "one.wild.test", "/x", &[("x-beta", "1")], "b", "/x"),
    ];
    for round in 0..3 {
        for (method, host, target, headers, backend, path) in cases {
            let r = send(at, method, host, target, headers).await;
            assert_eq!(r.backend.as_deref(), Some(backend), "round {round}: {method} {host}{target} {headers:?}");
            assert_eq!(r.echoed("path").as_deref(), Some(path), "round {round}: {method} {host}{target}");
        }
    }
    let stats = router.shared().stats.role_snapshot(switchyard::plugin::Role::Router);
    assert_eq!(stats.calls + stats.reused, 3 * cases.len() as u64, "{stats:?}");
    assert!(stats.reused >= 2 * cases.len() as u64 - 1, "later rounds are remembered: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_site_for_the_host_is_404_and_a_dead_backend_is_502() {
    let dead = closed_port();
    let config = format!(
        r#"
[[upstream]]
name = "dead"
backends = [{{ address = "{dead}" }}]

[[site]]
hosts = ["only.test"]
[[site.route]]
upstream = "dead"
"#
    );
    let proxy = proxy(must_build(&config)).await;
    let r = get(proxy.local_addr, "other.test", "/").await;
    assert_eq!(r.status, 404);
    let r = get(proxy.local_addr, "only.test", "/").await;
    assert_eq!(r.status, 502, "{}", r.body);
    // The proxy keeps serving after the failure.
    assert_eq!(get(proxy.local_addr, "other.test", "/").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_retried_on_another_backend() {
    let live = origin("live").await;
    let dead = closed_port();
    let config = format!(
        r#"
[[upstream]]
name = "pool"
backends = [{{ address = "{dead}" }}, {{ address = "{}" }}]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "pool"
"#,
        live.addr
    );
    let proxy = proxy(must_build(&config)).await;
    for _ in 0..6 {
        let r = get(proxy.local_addr, "x.test", "/").await;
        assert_eq!((r.status, r.backend.as_deref()), (200, Some("live")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_exactly() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let config = format!(
        r#"
[[upstream]]
name = "pool"
balancer = "round-robin"
backends = [{{ address = "{}" }}, {{ address = "{}" }}, {{ address = "{}" }}]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "pool"
"#,
        a.addr, b.addr, c.addr
    );
    let proxy = proxy(must_build(&config)).await;
    let mut counts = std::collections::HashMap::new();
    for _ in 0..300 {
        let r = get(proxy.local_addr, "x", "/").await;
        *counts.entry(r.backend.unwrap_or_default()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&100));
    assert_eq!(counts.get("b"), Some(&100));
    assert_eq!(counts.get("c"), Some(&100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_proxy_lives_on() {
    let a = origin("a").await;
    let config = format!(
        "[[upstream]]\nname = \"u\"\nbackends = [{{ address = \"{}\" }}]\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"u\"\n",
        a.addr
    );
    let proxy = proxy(must_build(&config)).await;
    for garbage in
        [&b"GARBAGE\r\n\r\n"[..], b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"]
    {
        let mut tcp = tokio::net::TcpStream::connect(proxy.local_addr).await.unwrap_or_else(|e| panic!("{e}"));
        tcp.write_all(garbage).await.unwrap_or_else(|e| panic!("{e}"));
        let mut reply = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
        assert!(read.is_ok(), "the proxy must answer or close, not hang");
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 4"),
            "unexpected reply to {:?}: {text}",
            String::from_utf8_lossy(garbage)
        );
    }
    assert_eq!(get(proxy.local_addr, "x", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_configuration_serves_both_backends() {
    let (a, b) = (origin("backend-a").await, origin("backend-b").await);
    let listen = closed_port();
    let text = switchyard::demo::demo_config(listen, a.addr, b.addr);
    let proxy = proxy(must_build(&text)).await;
    let first = get(proxy.local_addr, "localhost", "/").await.backend;
    let second = get(proxy.local_addr, "localhost", "/").await.backend;
    let mut seen = vec![first, second];
    seen.sort();
    assert_eq!(seen, vec![Some("backend-a".to_string()), Some("backend-b".to_string())]);
    let api = get(proxy.local_addr, "localhost", "/api/users").await;
    assert_eq!((api.backend.as_deref(), api.echoed("path").as_deref()), (Some("backend-b"), Some("/users")));
    assert_eq!(api.echoed_header("x-forwarded-for").as_deref(), Some("127.0.0.1"), "the default header policy");

    // /ab: a sticky A/B split over the same two backends, naming its variant.
    let first = get(proxy.local_addr, "localhost", "/ab").await;
    let variant = first.headers.get("x-variant").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert!(matches!(variant.as_deref(), Some("a" | "b")), "{:?}", first.headers);
    assert_eq!(first.backend.as_deref(), variant.as_deref().map(|v| if v == "a" { "backend-a" } else { "backend-b" }));
    let cookie = first.headers.get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    for _ in 0..10 {
        let again = send(proxy.local_addr, "GET", "localhost", "/ab", &[("cookie", &cookie)]).await;
        assert_eq!(again.backend, first.backend, "the sticky cookie keeps the variant");
    }
}
