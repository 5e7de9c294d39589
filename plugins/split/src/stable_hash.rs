//! The stable hash that buckets sticky keys (a header value, a client IP) into variants.
//!
//! It must give the same answer on every instance, every host and every release, because a
//! client's variant is nothing but `hash(salt, key) mod total weight`: changing the algorithm
//! would move clients between variants. So it is written out here rather than taken from
//! `std::hash` (whose `DefaultHasher` is explicitly allowed to change between Rust releases).
//!
//! The algorithm, fixed from now on:
//! 1. FNV-1a, 64-bit (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`), over the salt's
//!    UTF-8 bytes, then one `0xff` byte, then the key's UTF-8 bytes. `0xff` never occurs in UTF-8,
//!    so `("ab", "c")` and `("a", "bc")` hash differently.
//! 2. The splitmix64 finalizer over the FNV result. FNV-1a alone spreads its low bits poorly for
//!    short, similar keys (`user-1`, `user-2`, ...), and `mod total weight` reads mostly the low
//!    bits; the finalizer makes every output bit depend on every input bit.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Separates the salt from the key; a byte no UTF-8 text contains.
const SALT_SEPARATOR: u8 = 0xff;

/// The stable 64-bit hash of `key` under `salt` (see the module documentation).
pub fn stable_hash(salt: &str, key: &str) -> u64 {
    let mut state = fnv1a(FNV_OFFSET_BASIS, salt.as_bytes());
    state = fnv1a(state, &[SALT_SEPARATOR]);
    state = fnv1a(state, key.as_bytes());
    splitmix64_finalize(state)
}

fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        state ^= u64::from(byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

fn splitmix64_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix64_finalizer_matches_the_reference_generator() {
        // The first output of splitmix64 seeded with 0 is the finalizer of the golden gamma.
        assert_eq!(splitmix64_finalize(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn the_hash_is_pinned_so_clients_never_move_between_releases() {
        // Computed independently (in Python) from the algorithm as documented above; if this
        // changes, every sticky client of every split moves.
        assert_eq!(stable_hash("switchyard_split", "user-1"), 0x58ce_eb14_101f_8385);
        assert_eq!(stable_hash("", ""), 0x4f2d_b50f_1240_40cd);
    }

    #[test]
    fn salt_and_key_do_not_run_into_each_other() {
        assert_ne!(stable_hash("ab", "c"), stable_hash("a", "bc"));
        assert_ne!(stable_hash("split-1", "user-1"), stable_hash("split-2", "user-1"));
    }
}
