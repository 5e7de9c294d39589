//! A/B splits over real sockets: weights over many clients, sticky cookies, the override, a
//! tampered cookie, tag switches flipped by a reload, and variants by upstream.

mod common;

use common::*;
use switchyard::demo::EchoOrigin;

const N: usize = 10_000;

/// Backends `a1`, `a2` (tag a) and `b1`, `b2` (tag b) in one upstream, and a route using `split`
/// (a TOML inline table).
async fn tagged(split: &str) -> (String, Vec<EchoOrigin>) {
    let mut origins = Vec::new();
    for name in ["a1", "a2", "b1", "b2"] {
        origins.push(origin(name).await);
    }
    let config = format!(
        r#"
[server]
header_policy = false

[[upstream]]
name = "app"
backends = [
  {{ address = "{}", tags = ["a"] }},
  {{ address = "{}", tags = ["a"] }},
  {{ address = "{}", tags = ["b"] }},
  {{ address = "{}", tags = ["b"] }},
]

[[site]]
hosts = ["*"]
[[site.route]]
name = "app"
upstream = "app"
split = {split}
"#,
        origins[0].addr, origins[1].addr, origins[2].addr, origins[3].addr
    );
    (config, origins)
}

fn variant_of(backend: &str) -> &str {
    &backend[..1]
}

/// The name of a `name=value` cookie pair. The sticky cookie's default name is
/// `switchyard_split_` and a hash of the variants, so tests read it from the answers.
fn cookie_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_ten_over_ten_thousand_clients() {
    let (config, _origins) = tagged(r#"{ variants = [{ tag = "a", weight = 90 }, { tag = "b", weight = 10 }] }"#).await;
    let proxy = proxy(must_build(&config)).await;
    // No cookie: every request is a new client.
    let counts = tally(proxy.local_addr, "x", "/", N, 8, |_| Vec::new()).await;
    let b: usize = counts.iter().filter(|(k, _)| variant_of(k) == "b").map(|(_, v)| v).sum();
    let share = b as f64 / N as f64;
    assert!((share - 0.10).abs() <= 0.02, "variant b got {:.2}% ({counts:?})", share * 100.0);
    // Within a variant the balancer still spreads over the tagged backends.
    assert!(counts.get("b1").copied().unwrap_or(0) > 0 && counts.get("b2").copied().unwrap_or(0) > 0);
}

/// Sends requests without a cookie until one lands in variant `want`; returns its cookie.
async fn client_in(addr: std::net::SocketAddr, want: &str) -> String {
    for _ in 0..500 {
        let r = get(addr, "x", "/").await;
        let backend = r.backend.clone().unwrap_or_default();
        if variant_of(&backend) == want {
            return set_cookie(&r).unwrap_or_else(|| panic!("no Set-Cookie on an assignment: {:?}", r.headers));
        }
    }
    panic!("no client landed in {want}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_keeps_its_variant_and_a_tampered_one_is_ignored() {
    let (config, _origins) = tagged(
        r#"{ variants = [{ tag = "a", weight = 90 }, { tag = "b", weight = 10 }], response_header = "x-variant" }"#,
    )
    .await;
    let proxy = proxy(must_build(&config)).await;
    let cookie = client_in(proxy.local_addr, "b").await;
    let name = cookie_name(&cookie);
    assert!(name.starts_with("switchyard_split_") && cookie.starts_with(&format!("{name}=b.")), "{cookie}");
    for i in 0..100 {
        let r = send(proxy.local_addr, "GET", "x", "/", &[("cookie", &cookie)]).await;
        assert_eq!(variant_of(&r.backend.clone().unwrap_or_default()), "b", "request {i} left the variant");
        assert_eq!(set_cookie(&r), None, "a valid cookie is not reissued");
        assert_eq!(r.headers.get("x-variant").and_then(|v| v.to_str().ok()), Some("b"));
    }

    // The same signature on another variant, a changed signature, garbage: all ignored, and the
    // client is assigned afresh (a new cookie), mostly to a.
    let mac = cookie.split_once('.').map(|(_, m)| m.to_string()).unwrap_or_default();
    let flipped_mac: String = mac.chars().rev().collect();
    for tampered in
        [format!("{name}=a.{mac}"), format!("{name}=b.{flipped_mac}"), format!("{name}=b"), format!("{name}=%%%")]
    {
        let mut variants = std::collections::HashMap::new();
        for _ in 0..40 {
            let r = send(proxy.local_addr, "GET", "x", "/", &[("cookie", &tampered)]).await;
            let fresh = set_cookie(&r).unwrap_or_else(|| panic!("{tampered}: not reassigned"));
            assert_ne!(fresh, tampered);
            *variants.entry(variant_of(&r.backend.unwrap_or_default()).to_string()).or_insert(0) += 1;
        }
        assert!(variants.get("a").copied().unwrap_or(0) > 20, "{tampered}: {variants:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_forces_a_variant_even_at_weight_zero() {
    let (config, _origins) = tagged(r#"{ variants = [{ tag = "a", weight = 100 }, { tag = "b", weight = 0 }] }"#).await;
    let proxy = proxy(must_build(&config)).await;
    let counts = tally(proxy.local_addr, "x", "/", 200, 4, |_| Vec::new()).await;
    assert!(counts.keys().all(|k| variant_of(k) == "a"), "100/0 sends everything to a: {counts:?}");
    let forced =
        tally(proxy.local_addr, "x", "/", 200, 4, |_| vec![("x-switchyard-variant".to_string(), "b".to_string())])
            .await;
    assert!(forced.keys().all(|k| variant_of(k) == "b"), "the override header forces b: {forced:?}");
    let by_cookie = send(proxy.local_addr, "GET", "x", "/", &[("cookie", "switchyard_variant=b")]).await;
    assert_eq!(variant_of(&by_cookie.backend.unwrap_or_default()), "b", "the override cookie forces b");
    let unknown = send(proxy.local_addr, "GET", "x", "/", &[("x-switchyard-variant", "zzz")]).await;
    assert_eq!(variant_of(&unknown.backend.unwrap_or_default()), "a", "an unknown variant is not forced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_a_tag_switch_moves_everyone_including_sticky_clients() {
    let (config, _origins) = tagged(r#"{ variants = [{ tag = "a", weight = 100 }, { tag = "b", weight = 0 }] }"#).await;
    let proxy = proxy(must_build(&config)).await;
    let cookie = client_in(proxy.local_addr, "a").await;
    proxy.swap(must_build(
        &config.replace("weight = 100 }, { tag = \"b\", weight = 0", "weight = 0 }, { tag = \"b\", weight = 100"),
    ));
    let counts = tally(proxy.local_addr, "x", "/", 300, 4, |_| Vec::new()).await;
    assert!(counts.keys().all(|k| variant_of(k) == "b"), "after the flip: {counts:?}");
    let sticky = send(proxy.local_addr, "GET", "x", "/", &[("cookie", &cookie)]).await;
    assert_eq!(variant_of(&sticky.backend.clone().unwrap_or_default()), "b", "the a cookie is reassigned");
    // The weights changed, the variants did not: the same cookie, now naming b.
    let reissued = set_cookie(&sticky).unwrap_or_default();
    assert!(reissued.starts_with(&format!("{}=b.", cookie_name(&cookie))), "{reissued} after {cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_stickiness_and_variants_by_upstream() {
    let (stable, canary) = (origin("stable").await, origin("canary").await);
    let config = format!(
        r#"
[server]
header_policy = false

[[upstream]]
name = "stable"
backends = [{{ address = "{}" }}]

[[upstream]]
name = "canary"
backends = [{{ address = "{}" }}]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "stable"
split = {{ sticky = "header", sticky_header = "x-user", variants = [{{ upstream = "stable", weight = 80 }}, {{ upstream = "canary", weight = 20 }}] }}
"#,
        stable.addr, canary.addr
    );
    let proxy = proxy(must_build(&config)).await;
    let counts = tally(proxy.local_addr, "x", "/", 2000, 8, |i| vec![("x-user".to_string(), format!("u{i}"))]).await;
    let canary_share = counts.get("canary").copied().unwrap_or(0) as f64 / 2000.0;
    assert!((canary_share - 0.2).abs() < 0.04, "canary got {:.1}%", canary_share * 100.0);
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        let first = send(proxy.local_addr, "GET", "x", "/", &[("x-user", user)]).await.backend;
        for _ in 0..10 {
            assert_eq!(send(proxy.local_addr, "GET", "x", "/", &[("x-user", user)]).await.backend, first, "{user}");
        }
    }
}

#[test]
fn a_built_in_split_naming_unknown_upstreams_is_refused_at_load() {
    let config = |split: &str, plugins: &str| {
        format!(
            r#"
[[upstream]]
name = "stable"
backends = [{{ address = "127.0.0.1:9" }}]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "stable"
split = {split}
{plugins}
"#
        )
    };
    let split = r#"{ variants = [{ upstream = "stable", weight = 80 }, { upstream = "v2", weight = 10 }, { name = "c", upstream = "v3" }] }"#;
    let err = build(&config(split, "")).err().unwrap_or_else(|| panic!("unknown upstreams were accepted")).to_string();
    // Both unknown upstreams, each at the split (line 10, after `split = `).
    assert!(err.contains("test.toml:10:9: split variants[1]: unknown upstream `v2`"), "{err}");
    assert!(err.contains("test.toml:10:9: split variants[2]: unknown upstream `v3`"), "{err}");
    assert!(!err.contains("`stable`"), "{err}");

    // The built-in's code under another name is checked the same way.
    let declared = "[[plugin]]\nname = \"ab\"\nbuiltin = \"split\"\nconfig = { variants = [{ upstream = \"v4\" }] }";
    let err = build(&config("\"ab\"", declared)).err().unwrap_or_else(|| panic!("accepted v4")).to_string();
    assert!(err.contains("test.toml:10:9: split variants[0]: unknown upstream `v4`"), "{err}");

    // A component replacing the built-in has its own format: the host cannot check it.
    let chaos = format!("[[plugin]]\nname = \"split\"\npath = {:?}", fixture("chaos").display().to_string());
    let replaced = build(&config(split, &chaos));
    assert!(replaced.as_ref().err().is_none_or(|e| !e.to_string().contains("unknown upstream")), "{replaced:?}");
}

#[test]
fn the_built_in_split_by_name_alone_says_to_list_the_variants() {
    let config = r#"
[[upstream]]
name = "app"
backends = [{ address = "127.0.0.1:9" }]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "app"
split = "split"
"#;
    let err = build(config).err().unwrap_or_else(|| panic!("a split without variants was accepted")).to_string();
    assert!(err.contains("test.toml:10:9: plugin `split`"), "{err}");
    assert!(err.contains("`variants` is missing") && err.contains("split = { variants = [{ tag = "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_with_other_variants_on_two_routes_keep_separate_cookies() {
    let (config, _origins) = tagged(r#"{ variants = [{ tag = "a" }, { tag = "b" }] }"#).await;
    // A second route splitting the same backends under other variant names.
    let config = config.replace(
        "[[site.route]]\nname = \"app\"",
        "[[site.route]]\nname = \"search\"\npath_prefix = \"/search\"\nupstream = \"app\"\n\
         split = { variants = [{ name = \"old\", tag = \"a\" }, { name = \"new\", tag = \"b\" }] }\n\n\
         [[site.route]]\nname = \"app\"",
    );
    let proxy = proxy(must_build(&config)).await;
    let app_cookie = client_in(proxy.local_addr, "b").await;
    let search = get(proxy.local_addr, "x", "/search").await;
    let search_cookie = set_cookie(&search).unwrap_or_else(|| panic!("no cookie from /search"));
    let search_variant = variant_of(&search.backend.unwrap_or_default()).to_string();
    // Were the names equal, the browser would keep only the last cookie and each route would
    // reassign the client on every visit after the other.
    assert_ne!(cookie_name(&app_cookie), cookie_name(&search_cookie));
    let both = format!("{app_cookie}; {search_cookie}");
    for _ in 0..20 {
        let app = send(proxy.local_addr, "GET", "x", "/", &[("cookie", &both)]).await;
        assert_eq!((variant_of(&app.backend.clone().unwrap_or_default()), set_cookie(&app)), ("b", None));
        let search = send(proxy.local_addr, "GET", "x", "/search", &[("cookie", &both)]).await;
        let kept = variant_of(&search.backend.clone().unwrap_or_default()).to_string();
        assert_eq!((kept, set_cookie(&search)), (search_variant.clone(), None));
    }
}

/// The split's response side is declared deterministic, so the proxy adds a new client's cookie
/// and the variant header from memory once it has seen the same context values. Every new client
/// must still be handed the cookie of the variant it was put in, and returning clients none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_cookies_name_each_clients_own_variant() {
    let (config, _origins) = tagged(
        r#"{ variants = [{ tag = "a", weight = 50 }, { tag = "b", weight = 50 }], response_header = "x-variant" }"#,
    )
    .await;
    let generation = must_build(&config);
    use switchyard::plugin::Role;
    let split = generation.plugins.iter().find(|p| p.roles().contains(&Role::Split)).cloned();
    let split = split.unwrap_or_else(|| panic!("no split among {:?}", generation.plugins));
    assert!(split.remembers(Role::ResponseFilter) && !split.remembers(Role::Split));
    let proxy = proxy(generation).await;

    let mut cookies = std::collections::HashMap::new();
    for i in 0..200 {
        let r = get(proxy.local_addr, "x", "/").await;
        let variant = variant_of(&r.backend.clone().unwrap_or_default()).to_string();
        let cookie = set_cookie(&r).unwrap_or_else(|| panic!("request {i}: no Set-Cookie: {:?}", r.headers));
        let value = cookie.split_once('=').map(|(_, v)| v).unwrap_or_default();
        assert!(value.starts_with(&format!("{variant}.")), "request {i} went to {variant} but got {cookie}");
        assert_eq!(r.headers.get("x-variant").and_then(|v| v.to_str().ok()), Some(variant.as_str()), "request {i}");
        cookies.insert(variant, cookie);
    }
    assert_eq!(cookies.len(), 2, "both variants got clients: {cookies:?}");
    for (variant, cookie) in &cookies {
        for _ in 0..20 {
            let r = send(proxy.local_addr, "GET", "x", "/", &[("cookie", cookie)]).await;
            assert_eq!(variant_of(&r.backend.clone().unwrap_or_default()), variant);
            assert_eq!(set_cookie(&r), None, "a returning client of {variant} is not sent the cookie again");
            assert_eq!(r.headers.get("x-variant").and_then(|v| v.to_str().ok()), Some(variant.as_str()));
        }
    }
    let choose = split.shared().stats.role_snapshot(Role::Split);
    let response = split.shared().stats.role_snapshot(Role::ResponseFilter);
    assert_eq!((choose.calls, choose.reused), (240, 0), "every choice is a call: {choose:?}");
    assert_eq!(response.calls + response.reused, 240, "{response:?}");
    // Four distinct contexts (a new client of a or b, a returning client of a or b).
    assert!(response.calls <= 8 && response.reused >= 232, "{response:?}");
}
