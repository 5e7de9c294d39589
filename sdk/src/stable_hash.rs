//! A 64-bit hash that never changes: FNV-1a over the bytes, then the splitmix64 finalizer.
//!
//! Whatever maps keys to backends or variants (consistent hashing, sticky A/B buckets) must give
//! the same answer in every proxy process, every pooled instance and every release, or clients
//! move on upgrade. `std`'s `DefaultHasher` is seeded per process and may change between Rust
//! releases, so the function is written out here and pinned by tests. FNV-1a alone mixes short,
//! similar inputs (IP addresses, user ids) poorly; the splitmix64 finalizer makes every output bit
//! depend on every input bit. The algorithm, fixed from now on:
//! FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`), then splitmix64's
//! finalizer.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Feeds bytes through FNV-1a; [`StableHasher::finish`] applies the finalizer.
#[derive(Debug, Clone)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher::new()
    }
}

impl StableHasher {
    /// A hasher with nothing written yet.
    pub fn new() -> Self {
        StableHasher(FNV_OFFSET_BASIS)
    }

    /// Feeds `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// Writes the little-endian bytes, so the result does not depend on the target's endianness.
    pub fn write_u64(&mut self, value: u64) {
        self.write(&value.to_le_bytes());
    }

    /// The hash of everything written so far.
    pub fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// Separates a salt from the key in [`stable_hash`]; a byte no UTF-8 text contains, so
/// `("ab", "c")` and `("a", "bc")` hash differently.
const SALT_SEPARATOR: u8 = 0xff;

/// The stable hash of `key` under `salt`: the salt's UTF-8 bytes, one `0xff` byte, then the key's,
/// hashed as [`hash_bytes`] does. Two users of one key (two splits) bucket it independently by
/// salting it differently.
pub fn stable_hash(salt: &str, key: &str) -> u64 {
    let mut hasher = StableHasher::new();
    hasher.write(salt.as_bytes());
    hasher.write(&[SALT_SEPARATOR]);
    hasher.write(key.as_bytes());
    hasher.finish()
}

/// The stable hash of `bytes`.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = StableHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

/// The splitmix64 finalizer: a bijection on `u64` in which every input bit affects every output
/// bit with probability close to one half.
pub fn mix64(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // Published FNV-1a 64 test vectors, checked before the finalizer.
        let raw = |bytes: &[u8]| {
            let mut hasher = StableHasher::new();
            hasher.write(bytes);
            hasher.0
        };
        assert_eq!(raw(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(raw(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(raw(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn outputs_are_pinned() {
        // Changing these values remaps every client of every hash-balanced upstream on upgrade.
        assert_eq!(hash_bytes(b"10.0.0.1"), PINNED_IP);
        assert_eq!(hash_bytes(b""), mix64(FNV_OFFSET_BASIS));
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), PINNED_MIX_ONE);
    }

    #[test]
    fn similar_inputs_differ_in_the_high_bits() {
        // The rendezvous score uses the top 53 bits; neighbours must not share them.
        let a = hash_bytes(b"10.0.0.1") >> 11;
        let b = hash_bytes(b"10.0.0.2") >> 11;
        assert!((a ^ b).count_ones() > 10, "{a:x} vs {b:x}");
    }

    // Computed independently (a few lines of Python), not copied from this code's output.
    const PINNED_IP: u64 = 0x7fb1_b600_f0f5_c6d3;
    const PINNED_MIX_ONE: u64 = 0x5692_161d_100b_05e5;
    #[test]
    fn splitmix64_finalizer_matches_the_reference_generator() {
        // The first output of splitmix64 seeded with 0 is the finalizer of the golden gamma.
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
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
