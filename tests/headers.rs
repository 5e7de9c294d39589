//! Header policy over real sockets: X-Forwarded-* (appended to an incoming chain), RFC 7239
//! `Forwarded` with a quoted IPv6 client, global → site → route merging with the most specific
//! winning, response edits, the security preset, and framing/hop-by-hop safety.

mod common;

use common::*;

fn site_config(origin: std::net::SocketAddr, server_policy: &str, site_policy: &str, extra_route: &str) -> String {
    format!(
        r#"
[server]
{server_policy}

[[upstream]]
name = "app"
backends = [{{ address = "{origin}" }}]

[[site]]
name = "shop"
hosts = ["shop.test"]
{site_policy}

[[site.route]]
name = "plain"
path_prefix = "/"
upstream = "app"

{extra_route}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_headers_are_set_and_the_incoming_chain_is_extended() {
    let o = origin("app").await;
    let proxy = proxy(must_build(&site_config(o.addr, "", "", ""))).await;
    let port = proxy.local_addr.port().to_string();

    let fresh = get(proxy.local_addr, "shop.test:8443", "/").await;
    assert_eq!(fresh.echoed_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(fresh.echoed_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(fresh.echoed_header("x-forwarded-host").as_deref(), Some("shop.test:8443"));
    assert_eq!(fresh.echoed_header("x-forwarded-port").as_deref(), Some(port.as_str()));
    assert_eq!(fresh.echoed_header("forwarded"), None, "Forwarded is off by default");

    let chained =
        send(proxy.local_addr, "GET", "shop.test", "/", &[("x-forwarded-for", "203.0.113.7, 10.0.0.1")]).await;
    assert_eq!(chained.echoed_header("x-forwarded-for").as_deref(), Some("203.0.113.7, 10.0.0.1, 127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_incoming_forwarding_headers_are_replaced() {
    let o = origin("app").await;
    let policy = "[server.header_policy]\ntrust_incoming = false\nforwarded = true";
    let proxy = proxy(must_build(&site_config(o.addr, policy, "", ""))).await;
    let spoofed = [("x-forwarded-for", "1.1.1.1"), ("x-forwarded-proto", "https"), ("forwarded", "for=1.1.1.1")];
    let r = send(proxy.local_addr, "GET", "shop.test", "/", &spoofed).await;
    assert_eq!(r.echoed_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.echoed_header("x-forwarded-proto").as_deref(), Some("http"));
    let forwarded = r.echoed_header("forwarded").unwrap_or_default();
    assert!(forwarded.starts_with("for=127.0.0.1"), "{forwarded}");
    assert!(!forwarded.contains("1.1.1.1"), "{forwarded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_quotes_an_ipv6_client_and_appends_to_an_incoming_element() {
    let o = origin("app").await;
    let policy = "[server.header_policy]\nforwarded = true\nforwarded_by = \"_edge1\"";
    let generation = must_build(&site_config(o.addr, policy, "", ""));
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap_or_else(|e| panic!("bind ::1: {e}"));
    let proxy = switchyard::proxy::server::EmbeddedProxy::start(listener, generation).unwrap_or_else(|e| panic!("{e}"));
    let r = send(proxy.local_addr, "GET", "shop.test", "/", &[("forwarded", "for=192.0.2.60;proto=https")]).await;
    let forwarded = r.echoed_header("forwarded").unwrap_or_default();
    assert!(forwarded.starts_with("for=192.0.2.60;proto=https, "), "the incoming element stays first: {forwarded}");
    let ours = forwarded.rsplit(", ").next().unwrap_or_default();
    assert!(ours.contains("for=\"[::1]\""), "IPv6 is quoted and bracketed: {forwarded}");
    assert!(ours.contains("by=_edge1"), "{forwarded}");
    assert!(ours.contains("proto=http"), "{forwarded}");
    assert_eq!(r.echoed_header("x-forwarded-for").as_deref(), Some("::1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_specific_policy_wins_key_by_key() {
    let o = origin("app").await;
    let server = "[server.header_policy]\nrequest = { set = { x-env = \"prod\", x-level = \"server\" } }";
    let site = "[site.header_policy]\nrequest = { set = { x-level = \"site\" } }\nresponse = { set = { x-served-by = \"shop\" } }";
    let route = r#"
[[site.route]]
name = "checkout"
path_prefix = "/checkout"
upstream = "app"
header_policy = { request = { set = { x-level = "route" } }, x_forwarded_for = false, response = { remove = ["x-backend"] } }

[[site.route]]
name = "raw"
path_prefix = "/raw"
upstream = "app"
header_policy = false
"#;
    let proxy = proxy(must_build(&site_config(o.addr, server, site, route))).await;

    let plain = get(proxy.local_addr, "shop.test", "/").await;
    assert_eq!(plain.echoed_header("x-level").as_deref(), Some("site"));
    assert_eq!(plain.echoed_header("x-env").as_deref(), Some("prod"), "server keys reach the site");
    assert_eq!(plain.headers.get("x-served-by").and_then(|v| v.to_str().ok()), Some("shop"));
    assert_eq!(plain.backend.as_deref(), Some("app"));

    let checkout = get(proxy.local_addr, "shop.test", "/checkout/pay").await;
    assert_eq!(checkout.echoed_header("x-level").as_deref(), Some("route"), "the route overrides the site");
    assert_eq!(checkout.echoed_header("x-env").as_deref(), Some("prod"));
    assert_eq!(checkout.echoed_header("x-forwarded-for"), None, "switched off for this route");
    assert_eq!(checkout.echoed_header("x-forwarded-proto").as_deref(), Some("http"), "the rest stays on");
    assert_eq!(checkout.backend, None, "the route removes x-backend from responses");
    assert_eq!(
        checkout.headers.get("x-served-by").and_then(|v| v.to_str().ok()),
        Some("shop"),
        "site response keys stay"
    );

    let raw = get(proxy.local_addr, "shop.test", "/raw").await;
    assert_eq!(raw.echoed_header("x-level"), None, "false switches the policy off");
    assert_eq!(raw.echoed_header("x-forwarded-for"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_edits_and_the_security_preset() {
    let o = origin("app").await;
    let policy = r#"[server.header_policy]
security_headers = true
request = { add = { x-tag = ["one", "two"] }, remove = ["x-debug"], rename = { x-old = "x-new" } }
response = { rename = { x-backend = "x-upstream-name" }, add = { cache-control = "no-store" } }"#;
    let proxy = proxy(must_build(&site_config(o.addr, policy, "", ""))).await;
    let r = send(proxy.local_addr, "GET", "shop.test", "/", &[("x-debug", "1"), ("x-old", "v")]).await;
    assert_eq!(r.echoed_header("x-debug"), None);
    assert_eq!(r.echoed_header("x-old"), None);
    assert_eq!(r.echoed_header("x-new").as_deref(), Some("v"));
    // The echo lists each header line received; both added values arrive.
    assert!(r.body.contains(r#""x-tag": "one""#) && r.body.contains(r#""x-tag": "two""#), "{}", r.body);
    let header = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("x-upstream-name").as_deref(), Some("app"));
    assert_eq!(header("x-backend"), None);
    assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert!(header("x-frame-options").is_some() && header("referrer-policy").is_some());
    assert_eq!(header("strict-transport-security"), None, "HSTS only over HTTPS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_and_hop_by_hop_headers_stay_safe() {
    let o = origin("app").await;
    for (bad, key) in [
        ("request = { set = { content-length = \"0\" } }", "content-length"),
        ("response = { set = { transfer-encoding = \"chunked\" } }", "transfer-encoding"),
        ("request = { remove = [\"host\"] }", "host"),
        ("request = { rename = { connection = \"x-c\" } }", "connection"),
    ] {
        let policy = format!("[server.header_policy]\n{bad}");
        let err = build(&site_config(o.addr, &policy, "", "")).err().unwrap_or_else(|| panic!("accepted: {bad}"));
        let text = err.to_string();
        assert!(text.contains("headers") && text.contains(key), "{bad}: {text}");
    }

    // Headers the client names in Connection are hop-by-hop: they never reach the upstream.
    let proxy = proxy(must_build(&site_config(o.addr, "", "", ""))).await;
    let r = send(proxy.local_addr, "GET", "shop.test", "/", &[("connection", "x-hop"), ("x-hop", "secret")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("x-hop"), None, "{}", r.body);
}

#[test]
fn policy_instances_are_named_after_the_level_that_configures_them() {
    let route = r#"
[[site.route]]
name = "checkout"
path_prefix = "/checkout"
upstream = "app"
header_policy = { request = { set = { x-level = "route" } } }
"#;
    let server = "[server.header_policy]\nrequest = { set = { x-level = \"server\" } }";
    let site = "[site.header_policy]\nrequest = { set = { x-level = \"site\" } }";
    let origin = closed_port();
    let names = |config: &str| -> Vec<String> {
        let generation = must_build(config);
        let mut names: Vec<_> =
            generation.plugins.iter().map(|p| p.name().to_string()).filter(|n| n.starts_with("headers")).collect();
        names.sort();
        names
    };
    // `headers` is the server level's, which the fallback route (and any route no site or route
    // policy touches) uses.
    let all = ["headers", "headers@route:checkout", "headers@site:shop"];
    assert_eq!(names(&site_config(origin, server, site, route)), all);
    assert_eq!(names(&site_config(origin, server, "", "")), ["headers"]);

    // Errors name the instance the same way.
    for (server, site, route, expected) in [
        ("[server.header_policy]\nbogus = 1", "", "", "plugin `headers`:"),
        ("", "[site.header_policy]\nbogus = 1", "", "plugin `headers@site:shop`:"),
        ("", "", &route.replace("x-level = \"route\"", "x-level = 1"), "plugin `headers@route:checkout`:"),
    ] {
        let err = build(&site_config(origin, server, site, route)).err().unwrap_or_else(|| panic!("accepted"));
        let text = err.to_string();
        assert!(text.contains(expected), "{text}");
        assert!(!text.contains("headers@headers"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_replies_get_the_response_policy_too() {
    let o = origin("app").await;
    let policy = r#"[server.header_policy]
security_headers = true
response = { set = { x-served-by = "switchyard" } }"#;
    let guarded_route = r#"
[[plugin]]
name = "guard"
path = "access-policy.wasm"
config = { require_headers = { x-api-key = true } }

[[site]]
name = "admin"
hosts = ["admin.test"]
request_filters = ["guard"]
header_policy = { response = { set = { x-served-by = "admin" } } }
[[site.route]]
upstream = "app"
"#;
    let proxy = proxy(must_build(&site_config(o.addr, policy, "", guarded_route))).await;
    let header = |r: &Answer, n: &str| r.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);

    // No route: the server-level policy answers for the 404.
    let missing = get(proxy.local_addr, "nowhere.test", "/").await;
    assert_eq!(missing.status, 404);
    assert_eq!(header(&missing, "x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header(&missing, "x-served-by").as_deref(), Some("switchyard"));

    // A site filter's refusal: the route's merged policy, as a proxied response would get.
    let refused = get(proxy.local_addr, "admin.test", "/").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.backend, None, "a refused request never reaches the upstream");
    assert_eq!(header(&refused, "x-served-by").as_deref(), Some("admin"));
    assert_eq!(header(&refused, "x-frame-options").as_deref(), Some("SAMEORIGIN"));
    let allowed = send(proxy.local_addr, "GET", "admin.test", "/", &[("x-api-key", "k")]).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(header(&allowed, "x-served-by").as_deref(), Some("admin"));
}

/// The header policy is deterministic, so its changes are remembered with what it read and made
/// again without a call for requests and responses that read the same. Every request here still
/// gets the changes its own headers call for, in any order and however often it repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_header_changes_follow_each_requests_own_headers() {
    let o = origin("app").await;
    let policy = r#"[server.header_policy]
security_headers = true
request = { remove = ["x-debug"], rename = { x-old = "x-new" } }
response = { rename = { x-backend = "x-upstream-name" } }"#;
    let generation = must_build(&site_config(o.addr, policy, "", ""));
    let headers = generation.plugins.iter().find(|p| p.name() == "headers").cloned();
    let headers = headers.unwrap_or_else(|| panic!("no header policy"));
    use switchyard::plugin::Role;
    assert!(headers.remembers(Role::RequestFilter) && headers.remembers(Role::ResponseFilter));
    let proxy = proxy(generation).await;

    // (Host, request headers, expected X-Forwarded-For, X-Forwarded-Host, x-new, x-debug kept)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str, Option<&'a str>);
    let cases: [Case; 6] = [
        ("shop.test", &[], "127.0.0.1", "shop.test", None),
        ("shop.test", &[("x-forwarded-for", "203.0.113.7")], "203.0.113.7, 127.0.0.1", "shop.test", None),
        ("shop.test", &[("x-forwarded-for", "198.51.100.1")], "198.51.100.1, 127.0.0.1", "shop.test", None),
        ("shop.test:8080", &[("x-old", "a"), ("x-debug", "1")], "127.0.0.1", "shop.test:8080", Some("a")),
        ("shop.test", &[("x-old", "b")], "127.0.0.1", "shop.test", Some("b")),
        ("SHOP.test", &[("x-debug", "2")], "127.0.0.1", "SHOP.test", None),
    ];
    for round in 0..3 {
        for (host, sent, forwarded_for, forwarded_host, renamed) in cases {
            let r = send(proxy.local_addr, "GET", host, "/", sent).await;
            let context = format!("round {round}: {host} {sent:?}");
            assert_eq!(r.status, 200, "{context}");
            assert_eq!(r.echoed_header("x-forwarded-for").as_deref(), Some(forwarded_for), "{context}");
            assert_eq!(r.echoed_header("x-forwarded-host").as_deref(), Some(forwarded_host), "{context}");
            assert_eq!(r.echoed_header("x-new").as_deref(), renamed, "{context}");
            assert_eq!(r.echoed_header("x-old"), None, "{context}");
            assert_eq!(r.echoed_header("x-debug"), None, "{context}");
            let header = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            assert_eq!(header("x-upstream-name").as_deref(), Some("app"), "{context}");
            assert_eq!(header("x-backend"), None, "{context}");
            assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{context}");
        }
    }
    let request_side = headers.shared().stats.role_snapshot(Role::RequestFilter);
    let response_side = headers.shared().stats.role_snapshot(Role::ResponseFilter);
    // Each distinct request was called for once; every repeat was answered from memory.
    assert_eq!((request_side.calls, request_side.reused), (6, 12), "{request_side:?}");
    assert_eq!(response_side.calls + response_side.reused, 18, "{response_side:?}");
    assert!(response_side.reused >= 12, "{response_side:?}");
}
