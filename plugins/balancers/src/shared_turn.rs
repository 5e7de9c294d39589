//! Turn counters in the host's shared key-value store: every pooled instance of the plugin
//! advances the same sequence per upstream, so rotations stay exact across instances.

use switchyard_sdk::host;
use switchyard_sdk::testkit::KV_MAX_KEY_BYTES;

use switchyard_sdk::stable_hash;

/// Advances the counter `counter` of `upstream` and returns this call's turn, reduced modulo
/// `modulus` (0 when `modulus` is 0). The first call returns 0.
pub(crate) fn next_turn(counter: &str, upstream: &str, modulus: usize) -> usize {
    let Ok(modulus) = i64::try_from(modulus) else { return 0 };
    if modulus == 0 {
        return 0;
    }
    let turn = host::kv_increment(&counter_key(counter, upstream), 1).wrapping_sub(1);
    // `rem_euclid` keeps the result in range even after the counter wraps past `i64::MAX`.
    turn.rem_euclid(modulus) as usize
}

/// The store key of a counter: `<counter>:<upstream>`, or a hash of the upstream's name when that
/// would be longer than the store accepts (an oversized key is never stored, so every increment
/// would answer 1 and the rotation would freeze on one backend).
fn counter_key(counter: &str, upstream: &str) -> String {
    let key = format!("{counter}:{upstream}");
    if key.len() <= KV_MAX_KEY_BYTES {
        key
    } else {
        format!("{counter}#{:016x}", stable_hash::hash_bytes(upstream.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::reset_test_host;

    #[test]
    fn counters_are_separate_per_name_and_upstream() {
        reset_test_host();
        let turns: Vec<_> = (0..4).map(|_| next_turn("a", "u", 3)).collect();
        assert_eq!(turns, vec![0, 1, 2, 0]);
        assert_eq!(next_turn("b", "u", 3), 0);
        assert_eq!(next_turn("a", "v", 3), 0);
        assert_eq!(next_turn("a", "u", 3), 1);
    }

    #[test]
    fn long_upstream_names_get_a_key_the_store_accepts() {
        reset_test_host();
        let long = "u".repeat(400);
        let key = counter_key("round-robin", &long);
        assert!(key.len() <= KV_MAX_KEY_BYTES, "{key}");
        assert_ne!(key, counter_key("round-robin", &"v".repeat(400)));
        assert_eq!(counter_key("round-robin", "api"), "round-robin:api");
    }

    #[test]
    fn a_zero_modulus_does_not_touch_the_store() {
        reset_test_host();
        assert_eq!(next_turn("a", "u", 0), 0);
        assert!(reset_test_host().kv.is_empty());
    }
}
