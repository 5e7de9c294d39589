//! The SDK examples under `examples/` running in the proxy: a platform team's access policy as a
//! request filter placed in a chain, a zone-aware balancer, and a user plugin replacing a built-in
//! by taking its name.

mod common;

use common::*;

fn guarded_config(origin: std::net::SocketAddr, policy: &str) -> String {
    format!(
        r#"
[server]
request_filters = ["tag-first"]

[[plugin]]
name = "tag-first"
builtin = "headers"
config = {{ x_forwarded_for = false, request = {{ set = {{ x-order = "tag-first" }} }} }}

[[plugin]]
name = "guard"
path = "access-policy.wasm"
config = {policy}

[[upstream]]
name = "app"
backends = [{{ address = "{origin}" }}]

[[site]]
hosts = ["*"]
request_filters = ["guard"]
[[site.route]]
upstream = "app"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_policy_refuses_and_allows_by_cidr_and_headers() {
    let o = origin("app").await;
    let deny_loopback = r#"{ deny = ["127.0.0.0/8"], status = 403, message = "not from here" }"#;
    let proxy1 = proxy(must_build(&guarded_config(o.addr, deny_loopback))).await;
    let refused = get(proxy1.local_addr, "x", "/").await;
    assert_eq!((refused.status, refused.body.trim()), (403, "not from here"));
    assert_eq!(refused.backend, None, "nothing was proxied");

    let allow_with_key = r#"{ allow = ["127.0.0.1/32", "::1"], require_headers = { x-api-key = true }, strip_headers = ["x-api-key"], tag_header = "x-access-policy" }"#;
    let proxy2 = proxy(must_build(&guarded_config(o.addr, allow_with_key))).await;
    assert_eq!(get(proxy2.local_addr, "x", "/").await.status, 403, "the key is required");
    let ok = send(proxy2.local_addr, "GET", "x", "/", &[("x-api-key", "k1")]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.echoed_header("x-api-key"), None, "stripped before the upstream");
    assert_eq!(ok.echoed_header("x-access-policy").as_deref(), Some("allowed"));
    // The global filter ran first (before routing), then the default header policy's request
    // side, then the site's guard: the policy runs before a site's or route's own filters.
    assert_eq!(ok.echoed_header("x-order").as_deref(), Some("tag-first"));
    assert_eq!(ok.echoed_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));

    let bad = guarded_config(o.addr, r#"{ allow = ["10.0.0.0/33"] }"#);
    let err = build(&bad).err().unwrap_or_else(|| panic!("a bad CIDR was accepted")).to_string();
    assert!(err.contains("guard") && err.contains("10.0.0.0/33"), "{err}");
}

fn zone_config(
    eu: std::net::SocketAddr,
    us1: std::net::SocketAddr,
    us2: std::net::SocketAddr,
    balancer: &str,
) -> String {
    format!(
        r#"
[[plugin]]
name = "{balancer}"
path = "zone-balancer.wasm"
config = {{ zone_header = "x-zone" }}

[[upstream]]
name = "app"
{}
backends = [
  {{ address = "{eu}", tags = ["zone=eu"] }},
  {{ address = "{us1}", tags = ["zone=us"] }},
  {{ address = "{us2}", tags = ["zone=us"] }},
]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "app"
"#,
        if balancer == "round-robin" { String::new() } else { format!("balancer = \"{balancer}\"") }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_balancer_keeps_requests_in_their_zone() {
    let (eu, us1, us2) = (origin("eu").await, origin("us1").await, origin("us2").await);
    let proxy = proxy(must_build(&zone_config(eu.addr, us1.addr, us2.addr, "zones"))).await;
    let in_us = tally(proxy.local_addr, "x", "/", 300, 4, |_| vec![("x-zone".into(), "us".into())]).await;
    assert_eq!(in_us.get("eu"), None, "{in_us:?}");
    assert!(in_us.get("us1").copied().unwrap_or(0) > 50 && in_us.get("us2").copied().unwrap_or(0) > 50, "{in_us:?}");
    let in_eu = tally(proxy.local_addr, "x", "/", 100, 4, |_| vec![("x-zone".into(), "eu".into())]).await;
    assert_eq!(in_eu.get("eu"), Some(&100), "{in_eu:?}");
    let elsewhere = tally(proxy.local_addr, "x", "/", 300, 4, |_| vec![("x-zone".into(), "ap".into())]).await;
    assert_eq!(elsewhere.len(), 3, "no backend in the zone: all are used: {elsewhere:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_named_after_a_built_in_replaces_it() {
    let (eu, us1, us2) = (origin("eu").await, origin("us1").await, origin("us2").await);
    // No `balancer` key: the upstream gets the default, `round-robin`, which is now the user's.
    let proxy = proxy(must_build(&zone_config(eu.addr, us1.addr, us2.addr, "round-robin"))).await;
    let counts = tally(proxy.local_addr, "x", "/", 200, 4, |_| vec![("x-zone".into(), "eu".into())]).await;
    assert_eq!(counts.get("eu"), Some(&200), "the zone balancer, not round-robin, picked: {counts:?}");
}
