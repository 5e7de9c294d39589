//! The services the proxy offers plugins: log, metrics, clocks, randomness and a small shared
//! key-value store.
//!
//! Inside the proxy (wasm32) these call the WIT `host` imports; natively they are served by the
//! current thread's [`crate::testkit::TestHost`], so tests can inspect and script them.

use crate::LogLevel;

#[cfg(target_arch = "wasm32")]
use crate::bindings::host as imports;

#[cfg(not(target_arch = "wasm32"))]
use crate::testkit::with_test_host;

/// Writes a line to the proxy's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    imports::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| h.logs.push((level, message.to_string())));
}

/// Adds `delta` to the plugin's counter `name`.
pub fn counter_add(name: &str, delta: u64) {
    #[cfg(target_arch = "wasm32")]
    imports::counter_add(name, delta);
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| *h.counters.entry(name.to_string()).or_default() += delta);
}

/// Records one observation in the plugin's histogram `name`.
pub fn histogram_record(name: &str, value: f64) {
    #[cfg(target_arch = "wasm32")]
    imports::histogram_record(name, value);
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| h.histograms.entry(name.to_string()).or_default().push(value));
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return imports::now_unix_ms();
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| h.now_unix_ms)
}

/// A monotonic clock in nanoseconds, for durations.
pub fn monotonic_ns() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return imports::monotonic_ns();
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| h.monotonic_ns)
}

/// A random 64-bit number (fast, not cryptographic).
pub fn random_u64() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return imports::random_u64();
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| h.next_random())
}

/// Reads `key` from the plugin's shared key-value store.
pub fn kv_get(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return imports::kv_get(key);
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| h.kv.get(key).cloned())
}

/// Stores `value` under `key`; errors past the store's limits (see the WIT `host.kv-set`).
pub fn kv_set(key: &str, value: &str) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    return imports::kv_set(key, value);
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| {
        use crate::testkit::{KV_MAX_KEY_BYTES, KV_MAX_KEYS, KV_MAX_VALUE_BYTES};
        if key.len() > KV_MAX_KEY_BYTES || value.len() > KV_MAX_VALUE_BYTES {
            return Err("key-value limits exceeded".to_string());
        }
        if h.kv.len() >= KV_MAX_KEYS && !h.kv.contains_key(key) {
            return Err("key-value store is full".to_string());
        }
        h.kv.insert(key.to_string(), value.to_string());
        Ok(())
    })
}

/// Removes `key` from the store.
pub fn kv_delete(key: &str) {
    #[cfg(target_arch = "wasm32")]
    imports::kv_delete(key);
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| {
        h.kv.remove(key);
    })
}

/// Atomically adds `delta` to the integer `key` (missing counts as 0) and returns the new value.
pub fn kv_increment(key: &str, delta: i64) -> i64 {
    #[cfg(target_arch = "wasm32")]
    return imports::kv_increment(key, delta);
    #[cfg(not(target_arch = "wasm32"))]
    with_test_host(|h| {
        let entry = h.kv.entry(key.to_string()).or_insert_with(|| "0".to_string());
        let next = entry.parse::<i64>().unwrap_or(0).wrapping_add(delta);
        *entry = next.to_string();
        next
    })
}
