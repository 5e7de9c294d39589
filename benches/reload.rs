//! Reload latency: from the trigger to the new generation serving, through the same
//! `Reloader::reload` that SIGHUP, the admin API and the file watcher call (read the file,
//! parse, validate, build, swap). Four cases, each alternating between two configurations so
//! every reload really changes something:
//!
//! - `unchanged`: the same file again; every plugin is taken over.
//! - `routes_changed`: two route tables; the router is reconfigured (its compiled code reused).
//! - `plugin_changed/compiled`: two versions of a user plugin, nothing cached on disk (and the
//!   in-memory cache only keeps the serving generation's code): Cranelift compiles each time.
//! - `plugin_changed/disk_cache`: the same with the on-disk compiled cache warm.
//!
//! `cargo bench --bench reload`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use switchyard::admin::{Metrics, Reloader};
use switchyard::plugin::PluginEngine;
use switchyard::proxy::RequestCount;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dist").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config(prefix: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:1"]
response_filters = ["tagger"]
[[upstream]]
name = "u"
backends = [{{ address = "127.0.0.1:2" }}, {{ address = "127.0.0.1:3" }}]
[[upstream]]
name = "hashed"
backends = [{{ address = "127.0.0.1:4" }}]
balancer = {{ plugin = "hash", key = "header:x-user" }}
[[site]]
hosts = ["example.test", "*.example.test"]
[[site.route]]
path_prefix = "{prefix}"
upstream = "u"
[[site.route]]
path_prefix = "/ab"
upstream = "u"
split = {{ variants = [{{ name = "a", upstream = "u", weight = 50 }}, {{ name = "b", upstream = "hashed", weight = 50 }}] }}
[[plugin]]
name = "tagger"
path = "tagger.wasm"
"#
    )
}

/// A reloader over `dir/switchyard.toml`, serving its first generation.
fn reloader(dir: &Path, engine: Arc<PluginEngine>) -> Reloader {
    let path = dir.join("switchyard.toml");
    let first = switchyard::generation::load(&path, &engine).unwrap_or_else(|d| panic!("{d}"));
    let metrics = Arc::new(Metrics::new(Arc::new(RequestCount::default())).unwrap_or_else(|e| panic!("{e}")));
    Reloader::new(&path, engine, Arc::new(ArcSwap::from_pointee(first)), metrics)
}

/// Benches reloads that alternate between the two (config, plugin) versions `versions`.
fn bench_alternating(c: &mut Criterion, name: &str, engine: Arc<PluginEngine>, versions: [(String, Vec<u8>); 2]) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let write = |(text, plugin): &(String, Vec<u8>)| {
        std::fs::write(dir.path().join("tagger.wasm"), plugin).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("switchyard.toml"), text).unwrap_or_else(|e| panic!("{e}"));
    };
    write(&versions[0]);
    let reloader = reloader(dir.path(), engine);
    let mut next = 1;
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                write(&versions[next]);
                next = 1 - next;
            },
            |()| reloader.reload("bench").unwrap_or_else(|e| panic!("{e}")),
            BatchSize::PerIteration,
        )
    });
}

fn reloads(c: &mut Criterion) {
    let (v1, v2) = (fixture("tagger-v1"), fixture("tagger-v2"));
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cached = PluginEngine::with_cache_dir(Some(cache.path().to_path_buf())).unwrap_or_else(|e| panic!("{e}"));
    let uncached = PluginEngine::with_cache_dir(None).unwrap_or_else(|e| panic!("{e}"));

    let same = [(config("/"), v1.clone()), (config("/"), v1.clone())];
    bench_alternating(c, "reload/unchanged", cached.clone(), same);
    let routes = [(config("/"), v1.clone()), (config("/api"), v1.clone())];
    bench_alternating(c, "reload/routes_changed", cached.clone(), routes);

    let mut group_config = Criterion::default().sample_size(10);
    let plugins = [(config("/"), v1.clone()), (config("/"), v2.clone())];
    bench_alternating(&mut group_config, "reload/plugin_changed/compiled", uncached, plugins.clone());
    bench_alternating(&mut group_config, "reload/plugin_changed/disk_cache", cached, plugins);
}

criterion_group!(benches, reloads);
criterion_main!(benches);
