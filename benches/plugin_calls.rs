//! One call per plugin role through the real runtime (pooled instance, epoch deadline, memory
//! cap): the built-in router over a 50-route table, the built-in round-robin balancer over 10
//! backends, and the chaos fixture's request filter, response filter and split (`plugin_call`);
//! then each traffic-policy built-in as the default chain runs it (`builtin`): the header policy's
//! request side (remembered, and for a new client), the A/B split for a new and a returning client and its response side, and every
//! balancer over 10 backends.
//!
//! The router is measured twice: a request whose decision it remembers (it is deterministic, see
//! `src/plugin/memo.rs`), and one with a path not seen before, which calls the component.
//!
//! `cargo bench --bench plugin_calls`; figures are per call, with a request of 10 headers.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::json;
use switchyard::plugin::{
    BalancerRole, Candidate, LoadedPlugin, PluginEngine, PluginSettings, RequestFilterRole, RequestView,
    ResponseFilterRole, RouterRole, SplitRole, WasmPlugin, builtin_plugin,
};

fn settings(name: &str, config: serde_json::Value) -> PluginSettings {
    PluginSettings {
        name: name.to_string(),
        config_json: config.to_string(),
        failure: Default::default(),
        timeout: Duration::from_millis(50),
        memory_limit_bytes: 32 << 20,
        pool_size: 2,
    }
}

fn load(engine: &Arc<PluginEngine>, bytes: &[u8], settings: PluginSettings) -> WasmPlugin {
    WasmPlugin(LoadedPlugin::load(engine, bytes, settings).unwrap_or_else(|e| panic!("load: {e:#}")))
}

/// 5 sites × 10 routes, with a mix of prefixes and matchers.
fn fifty_routes() -> serde_json::Value {
    let sites: Vec<_> = (0..5)
        .map(|s| {
            let routes: Vec<_> = (0..10)
                .map(|r| {
                    let mut route = json!({"name": format!("s{s}r{r}"), "path_prefix": format!("/svc{r}/v{s}"), "upstream": format!("u{r}")});
                    if r % 3 == 0 {
                        route["methods"] = json!(["GET", "POST"]);
                    }
                    if r % 4 == 0 {
                        route["headers"] = json!({"x-tenant": "acme"});
                    }
                    route
                })
                .collect();
            json!({"name": format!("site{s}"), "hosts": [format!("site{s}.example.com"), format!("*.site{s}.example.net")], "routes": routes})
        })
        .collect();
    json!({ "sites": sites })
}

fn request() -> RequestView {
    let mut head =
        RequestHeader::build("GET", b"/svc7/v3/users/42/orders?page=2", None).unwrap_or_else(|e| panic!("{e}"));
    for (n, v) in [
        ("host", "site3.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("cookie", "session=abcdef0123456789; theme=dark"),
        ("x-request-id", "7f1c2b3a-0d4e-4f5a-8b6c-9d0e1f2a3b4c"),
        ("x-forwarded-for", "203.0.113.7"),
        ("referer", "https://site3.example.com/"),
        ("cache-control", "no-cache"),
    ] {
        let _ = head.append_header(n, v);
    }
    RequestView {
        head: Box::new(head),
        client_ip: Some([127, 0, 0, 1].into()),
        server_port: 8080,
        https: false,
        context: Vec::new(),
    }
}

fn bench_roles(c: &mut Criterion) {
    let engine = PluginEngine::new().unwrap_or_else(|e| panic!("engine: {e:#}"));
    let router_bytes = builtin_plugin("router").unwrap_or_else(|| panic!("no built-in router")).bytes;
    let rr = builtin_plugin("round-robin").unwrap_or_else(|| panic!("no built-in round-robin"));
    let rr_bytes = rr.bytes;
    let chaos_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dist/chaos.wasm");
    let chaos_bytes = std::fs::read(chaos_path).unwrap_or_else(|e| panic!("{chaos_path}: {e}"));

    let router = load(&engine, router_bytes, settings("router", fifty_routes()));
    let rr_config: serde_json::Value = serde_json::from_str(rr.config).unwrap_or_else(|e| panic!("{e}"));
    let balancer = load(&engine, rr_bytes, settings("round-robin", rr_config));
    let chaos = load(&engine, &chaos_bytes, settings("chaos", json!({})));
    let candidates: Vec<Candidate> = (0..10)
        .map(|i| Candidate { key: i, weight: 1, in_flight: 0, latency_us: 0, failures: 0, tags: Vec::new().into() })
        .collect();
    let mut view = request();
    let mut response = ResponseHeader::build(200, None).unwrap_or_else(|e| panic!("{e}"));

    // Sanity: the bench measures real work, not an error path.
    let decision = router.route(&mut view).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decision.map(|d| d.name).as_deref(), Some("s3r7"));

    let mut group = c.benchmark_group("plugin_call");
    // The built-in router is deterministic: the same request again gets its remembered decision.
    group.bench_function(BenchmarkId::new("router", "50 routes, decision remembered"), |b| {
        b.iter(|| router.route(&mut view))
    });
    // A path not seen before: a call into the component, and its decision remembered.
    let mut paths = (0u64..).map(|i| format!("/svc7/v3/users/{i}"));
    let mut fresh = request();
    group.bench_function(BenchmarkId::new("router", "50 routes, new path (called)"), |b| {
        b.iter_batched(
            || paths.next().unwrap_or_default().parse::<http::Uri>().unwrap_or_else(|e| panic!("{e}")),
            |uri| {
                fresh.head.set_uri(uri);
                router.route(&mut fresh)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function(BenchmarkId::new("balancer", "round-robin, 10 backends"), |b| {
        b.iter(|| balancer.pick(&mut view, "u7", &candidates))
    });
    group.bench_function(BenchmarkId::new("request_filter", "continue"), |b| b.iter(|| chaos.on_request(&mut view)));
    group.bench_function(BenchmarkId::new("response_filter", "set a header"), |b| {
        b.iter(|| chaos.on_response(&mut view, &mut response))
    });
    group.bench_function(BenchmarkId::new("split", "no variant"), |b| b.iter(|| chaos.choose(&mut view, "u7")));
    group.finish();
}

/// A built-in with its starting configuration and `extra` keys merged over it.
fn builtin(engine: &Arc<PluginEngine>, name: &str, extra: serde_json::Value) -> WasmPlugin {
    let b = builtin_plugin(name).unwrap_or_else(|| panic!("no built-in {name}"));
    let mut config: serde_json::Value = serde_json::from_str(b.config).unwrap_or_else(|e| panic!("{e}"));
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    load(engine, b.bytes, settings(name, config))
}

fn bench_builtins(c: &mut Criterion) {
    let engine = PluginEngine::new().unwrap_or_else(|e| panic!("engine: {e:#}"));
    let headers = builtin(&engine, "headers", json!({}));
    let split =
        builtin(&engine, "split", json!({"variants": [{"tag": "a", "weight": 90}, {"tag": "b", "weight": 10}]}));

    // A returning client's cookie: what the split's response side hands a new client.
    let mut first = request();
    let mut response = ResponseHeader::build(200, None).unwrap_or_else(|e| panic!("{e}"));
    split.choose(&mut first, "u7").unwrap_or_else(|e| panic!("{e}"));
    split.on_response(&mut first, &mut response).unwrap_or_else(|e| panic!("{e}"));
    let set_cookie = response.headers.get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_string();
    assert!(cookie.starts_with("switchyard_split"), "the split set no sticky cookie: {set_cookie:?}");
    let returning = || {
        let mut view = request();
        let _ = view.head.append_header("cookie", cookie.as_str());
        view
    };

    let mut group = c.benchmark_group("builtin");
    // The header policy is deterministic: a client seen before gets its remembered changes.
    group.bench_function(BenchmarkId::new("headers", "request, defaults, remembered"), |b| {
        b.iter_batched(request, |mut view| headers.on_request(&mut view), BatchSize::SmallInput)
    });
    // Each request from a new client address: a call (remembered until the memo fills up while
    // missing, then plain calls while it rests).
    let clients = std::cell::Cell::new(0u32);
    let new_client = || {
        let mut view = request();
        clients.set(clients.get().wrapping_add(1));
        view.client_ip = Some(std::net::IpAddr::V4(clients.get().into()));
        view
    };
    group.bench_function(BenchmarkId::new("headers", "request, defaults, new client (called)"), |b| {
        b.iter_batched(new_client, |mut view| headers.on_request(&mut view), BatchSize::SmallInput)
    });
    group.bench_function(BenchmarkId::new("split", "choose, new client"), |b| {
        b.iter_batched(request, |mut view| split.choose(&mut view, "u7"), BatchSize::SmallInput)
    });
    group.bench_function(BenchmarkId::new("split", "choose, returning client"), |b| {
        b.iter_batched(returning, |mut view| split.choose(&mut view, "u7"), BatchSize::SmallInput)
    });
    group.bench_function(BenchmarkId::new("split", "response, new client"), |b| {
        b.iter_batched(
            || {
                let mut view = request();
                let _ = split.choose(&mut view, "u7");
                (view, ResponseHeader::build(200, None).unwrap_or_else(|e| panic!("{e}")))
            },
            |(mut view, mut response)| split.on_response(&mut view, &mut response),
            BatchSize::SmallInput,
        )
    });
    group.bench_function(BenchmarkId::new("split", "response, returning client"), |b| {
        b.iter_batched(
            || {
                let mut view = returning();
                let _ = split.choose(&mut view, "u7");
                (view, ResponseHeader::build(200, None).unwrap_or_else(|e| panic!("{e}")))
            },
            |(mut view, mut response)| split.on_response(&mut view, &mut response),
            BatchSize::SmallInput,
        )
    });

    let candidates: Vec<Candidate> = (0..10)
        .map(|i| Candidate {
            key: i * 0x9E37_79B9,
            weight: 1 + (i as u32 % 3),
            in_flight: i as u32 % 4,
            latency_us: 500,
            failures: 0,
            tags: Vec::new().into(),
        })
        .collect();
    let mut view = request();
    for (name, extra) in [
        ("round-robin", json!({})),
        ("weighted", json!({})),
        ("least-connections", json!({})),
        ("random", json!({})),
        ("p2c", json!({})),
        ("hash", json!({"key": "header:user-agent"})),
    ] {
        let balancer = builtin(&engine, name, extra);
        group.bench_function(BenchmarkId::new("balancer", format!("{name}, 10 backends")), |b| {
            b.iter(|| balancer.pick(&mut view, "u7", &candidates))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_roles, bench_builtins
}
criterion_main!(benches);
