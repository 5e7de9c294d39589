//! The crate's 64-bit hash: FNV-1a over the bytes, then the splitmix64 finalizer.
//!
//! Consistent hashing only works if every proxy process, every pooled instance and every future
//! release maps a key to the same number, so the function is written here and pinned by tests.
//! `std`'s `DefaultHasher` is seeded per process and its algorithm may change between Rust
//! releases; a hashing crate would be one more dependency for twenty lines. FNV-1a alone is fixed
//! and tiny but mixes short, similar inputs (IP addresses, user ids) poorly in its high bits, so
//! its result goes through the splitmix64 finalizer, which spreads every input bit over the word.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Feeds bytes through FNV-1a; [`StableHasher::finish`] applies the finalizer.
#[derive(Debug, Clone)]
pub(crate) struct StableHasher(u64);

impl StableHasher {
    pub(crate) fn new() -> Self {
        StableHasher(FNV_OFFSET_BASIS)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// Writes the little-endian bytes, so the result does not depend on the target's endianness.
    pub(crate) fn write_u64(&mut self, value: u64) {
        self.write(&value.to_le_bytes());
    }

    pub(crate) fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// The stable hash of `bytes`.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = StableHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

/// The splitmix64 finalizer: a bijection on `u64` in which every input bit affects every output
/// bit with probability close to one half.
pub(crate) fn mix64(value: u64) -> u64 {
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
}
