//! The built-in balancers over real sockets, 10,000 requests each: round-robin, weighted,
//! least-connections, p2c and consistent hashing, chosen per upstream by name or inline table.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const N: usize = 10_000;

/// One upstream `pool` with `backends` (TOML inline tables) and `balancer` (a TOML value), and a
/// site sending everything to it.
fn pool_config(balancer: &str, backends: &[String]) -> String {
    format!(
        r#"
[server]
header_policy = false

[[upstream]]
name = "pool"
balancer = {balancer}
backends = [{}]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "pool"
"#,
        backends.join(", ")
    )
}

fn backend(addr: impl std::fmt::Display) -> String {
    format!("{{ address = \"{addr}\" }}")
}

fn weighted(addr: impl std::fmt::Display, weight: u32) -> String {
    format!("{{ address = \"{addr}\", weight = {weight} }}")
}

fn no_headers(_: usize) -> Vec<(String, String)> {
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact_to_one_request() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let config = pool_config("\"round-robin\"", &[backend(a.addr), backend(b.addr), backend(c.addr)]);
    let proxy = proxy(must_build(&config)).await;
    let counts = tally(proxy.local_addr, "x", "/", N, 8, no_headers).await;
    let values: Vec<usize> = ["a", "b", "c"].iter().map(|k| counts.get(*k).copied().unwrap_or(0)).collect();
    assert_eq!(values.iter().sum::<usize>(), N, "{counts:?}");
    let (min, max) = (values.iter().min().copied(), values.iter().max().copied());
    assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "not exact: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_the_weights_within_two_percent() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let config = pool_config("\"weighted\"", &[weighted(a.addr, 5), weighted(b.addr, 3), weighted(c.addr, 2)]);
    let proxy = proxy(must_build(&config)).await;
    let counts = tally(proxy.local_addr, "x", "/", N, 8, no_headers).await;
    for (name, weight) in [("a", 5.0), ("b", 3.0), ("c", 2.0)] {
        let expected = N as f64 * weight / 10.0;
        let got = counts.get(name).copied().unwrap_or(0) as f64;
        assert!((got - expected).abs() <= expected * 0.02, "{name}: {got} for an expected {expected} ({counts:?})");
    }
}

/// Sends N requests 16 at a time to a fast and a slow backend; returns the slow one's share.
///
/// A load-aware balancer keeps the in-flight counts level, so the slow backend's share is about
/// (its in-flight requests / its latency) / the proxy's throughput: it depends on how fast the
/// proxy runs. 60 ms keeps that share low even for a debug build on a busy 2-core machine (with
/// 20 ms, a loaded CI run once gave it 25%).
async fn slow_backend_share(balancer: &str, fast_backends: usize) -> (f64, HashMap<String, usize>) {
    let slow = slow_origin("slow", Duration::from_millis(60)).await;
    let mut backends = vec![backend(slow)];
    let mut fast = Vec::new();
    for i in 0..fast_backends {
        fast.push(origin(&format!("fast{i}")).await);
    }
    backends.extend(fast.iter().map(|o| backend(o.addr)));
    let proxy = proxy(must_build(&pool_config(balancer, &backends))).await;
    let counts = tally(proxy.local_addr, "x", "/", N, 16, no_headers).await;
    (counts.get("slow").copied().unwrap_or(0) as f64 / N as f64, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_less_to_a_slow_backend() {
    let (share, counts) = slow_backend_share("\"least-connections\"", 1).await;
    // Round-robin would give it half; requests pile up on it while in flight, so it gets few.
    assert!(share < 0.25, "the slow backend got {:.1}% ({counts:?})", share * 100.0);
    assert!(counts.get("slow").copied().unwrap_or(0) > 0, "an idle backend is still used: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_sends_less_to_a_slow_backend() {
    let (share, counts) = slow_backend_share("\"p2c\"", 2).await;
    // Uniform choice would give it a third.
    assert!(share < 0.2, "the slow backend got {:.1}% ({counts:?})", share * 100.0);
}

/// The backend each of `keys` is sent to, keyed by header `x-user`.
async fn placement(addr: std::net::SocketAddr, keys: &[String]) -> Vec<String> {
    let client = client();
    let mut placed = Vec::with_capacity(keys.len());
    for key in keys {
        let resp = client
            .get(format!("http://{addr}/"))
            .header("host", "x")
            .header("x-user", key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 200);
        placed.push(resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("").to_string());
    }
    placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_keeps_keys_in_place_and_a_fifth_backend_moves_few() {
    let mut origins = Vec::new();
    for name in ["h0", "h1", "h2", "h3", "h4"] {
        origins.push(origin(name).await);
    }
    let balancer = r#"{ plugin = "hash", key = "header:x-user" }"#;
    let four: Vec<String> = origins[..4].iter().map(|o| backend(o.addr)).collect();
    let five: Vec<String> = origins.iter().map(|o| backend(o.addr)).collect();
    let proxy = proxy(must_build(&pool_config(balancer, &four))).await;

    let keys: Vec<String> = (0..N).map(|i| format!("user-{i}")).collect();
    let before = placement(proxy.local_addr, &keys).await;
    let mut spread: HashMap<&str, usize> = HashMap::new();
    for b in &before {
        *spread.entry(b.as_str()).or_insert(0) += 1;
    }
    assert_eq!(spread.len(), 4, "keys reach every backend: {spread:?}");
    assert!(spread.values().all(|&n| n > N / 8), "keys spread evenly: {spread:?}");

    // Same key, same backend, every time.
    let again = placement(proxy.local_addr, &keys[..500]).await;
    assert_eq!(again, before[..500].to_vec());

    proxy.swap(must_build(&pool_config(balancer, &five)));
    let after = placement(proxy.local_addr, &keys).await;
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(moved <= N * 30 / 100, "{moved} of {N} keys moved");
    assert!(moved >= N / 10, "the new backend takes its share: only {moved} moved");
    let moved_elsewhere = before.iter().zip(&after).filter(|(b, a)| b != a && a.as_str() != "h4").count();
    assert_eq!(moved_elsewhere, 0, "keys only move to the new backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_reads_cookies_and_query_parameters() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let backends = [backend(a.addr), backend(b.addr), backend(c.addr)];
    for (balancer, header, path) in [
        (r#"{ plugin = "hash", key = "cookie:session" }"#, Some(("cookie", "theme=dark; session=s-")), "/"),
        (r#"{ plugin = "hash", key = "query:cart" }"#, None, "/checkout?x=1&cart="),
    ] {
        let proxy = proxy(must_build(&pool_config(balancer, &backends))).await;
        let mut seen = std::collections::HashSet::new();
        for key in 0..60 {
            let mut placed = std::collections::HashSet::new();
            for _ in 0..3 {
                let headers: Vec<(&str, String)> = header.iter().map(|(n, v)| (*n, format!("{v}{key}"))).collect();
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let path = if header.is_none() { format!("{path}{key}") } else { path.to_string() };
                let r = send(proxy.local_addr, "GET", "x", &path, &headers).await;
                placed.insert(r.backend.unwrap_or_default());
            }
            assert_eq!(placed.len(), 1, "{balancer}: key {key} went to {placed:?}");
            seen.extend(placed);
        }
        assert_eq!(seen.len(), 3, "{balancer}: 60 keys reach all three backends: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_balancer_table_is_refused_with_its_place() {
    let config =
        pool_config(r#"{ plugin = "hash", key = "shoe-size" }"#, &[backend("127.0.0.1:9"), backend("127.0.0.1:10")]);
    let err = build(&config).err().unwrap_or_else(|| panic!("a bad hash key was accepted")).to_string();
    assert!(err.contains("test.toml:7:"), "{err}");
    assert!(err.contains("hash@upstream:pool"), "{err}");
    assert!(err.contains("shoe-size"), "{err}");

    // A table without `plugin` is round-robin, which has no `key`: the error says what to add.
    let config = pool_config(r#"{ key = "header:x-user" }"#, &[backend("127.0.0.1:9")]);
    let err = build(&config).err().unwrap_or_else(|| panic!("a key on round-robin was accepted")).to_string();
    assert!(err.contains("test.toml:7:") && err.contains("round-robin@upstream:pool"), "{err}");
    assert!(err.contains(r#"`key` is a key of the hash balancer, not of "round-robin": add plugin = "hash""#), "{err}");

    let config = pool_config(r#"{ plugin = "no-such-balancer" }"#, &[backend("127.0.0.1:9")]);
    let err = build(&config).err().unwrap_or_else(|| panic!("an unknown balancer was accepted")).to_string();
    assert!(err.contains("unknown balancer `no-such-balancer`"), "{err}");
}
