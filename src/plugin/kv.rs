//! The small key-value store each plugin shares across its instances (WIT `host.kv-*`).
//!
//! Integers written by `kv-increment` are kept as integers, so the round-robin position and
//! similar counters cost an addition, not a parse and a format, per request.

use std::collections::HashMap;
use std::sync::Mutex;

use switchyard_sdk::testkit::{KV_MAX_KEY_BYTES, KV_MAX_KEYS, KV_MAX_VALUE_BYTES};

#[derive(Debug)]
enum KvValue {
    Text(String),
    Integer(i64),
}

/// One plugin's store; see the WIT documentation of `kv-set` for the limits.
#[derive(Debug, Default)]
pub struct KvStore(Mutex<HashMap<String, KvValue>>);

impl KvStore {
    /// The value under `key`, as text.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.0.lock().ok()?.get(key)? {
            KvValue::Text(s) => Some(s.clone()),
            KvValue::Integer(i) => Some(i.to_string()),
        }
    }

    /// Stores `value` under `key`, within the limits.
    pub fn set(&self, key: String, value: String) -> Result<(), String> {
        if key.len() > KV_MAX_KEY_BYTES || value.len() > KV_MAX_VALUE_BYTES {
            return Err(format!(
                "key-value limits: keys ≤ {KV_MAX_KEY_BYTES} bytes, values ≤ {KV_MAX_VALUE_BYTES} bytes"
            ));
        }
        let mut map = self.0.lock().map_err(|_| "key-value store unavailable".to_string())?;
        if map.len() >= KV_MAX_KEYS && !map.contains_key(&key) {
            return Err(format!("key-value store is full ({KV_MAX_KEYS} keys)"));
        }
        map.insert(key, KvValue::Text(value));
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    /// Adds `delta` to the integer under `key` (missing or non-numeric counts as 0) and returns
    /// the new value. Over the limits nothing is stored and `delta` is returned.
    pub fn increment(&self, key: &str, delta: i64) -> i64 {
        let Ok(mut map) = self.0.lock() else { return delta };
        if let Some(slot) = map.get_mut(key) {
            let next = match slot {
                KvValue::Integer(i) => i.wrapping_add(delta),
                KvValue::Text(s) => s.parse::<i64>().unwrap_or(0).wrapping_add(delta),
            };
            *slot = KvValue::Integer(next);
            return next;
        }
        if key.len() > KV_MAX_KEY_BYTES || map.len() >= KV_MAX_KEYS {
            return delta;
        }
        map.insert(key.to_string(), KvValue::Integer(delta));
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_text_share_keys() {
        let kv = KvStore::default();
        assert_eq!(kv.increment("n", 2), 2);
        assert_eq!(kv.increment("n", -5), -3);
        assert_eq!(kv.get("n").as_deref(), Some("-3"));
        assert!(kv.set("n".into(), "40".into()).is_ok());
        assert_eq!(kv.increment("n", 2), 42);
        assert!(kv.set("big".into(), "x".repeat(KV_MAX_VALUE_BYTES + 1)).is_err());
        kv.delete("n");
        assert_eq!(kv.get("n"), None);
    }

    #[test]
    fn the_key_limit_holds() {
        let kv = KvStore::default();
        for i in 0..KV_MAX_KEYS {
            assert!(kv.set(format!("k{i}"), "v".into()).is_ok());
        }
        assert!(kv.set("one-more".into(), "v".into()).is_err());
        assert_eq!(kv.increment("one-more", 1), 1);
        assert_eq!(kv.get("one-more"), None);
    }
}
