//! The `random` strategy: each pick is independent, and a candidate's chance is its weight's share
//! of the total. Randomness comes from the host (`random-u64`), the only source inside wasm.

use switchyard_sdk::{Candidate, host};

/// Returns a candidate drawn with probability proportional to its weight (0 counts as 1), or
/// `None` when there are none.
pub(crate) fn pick(candidates: &[Candidate]) -> Option<u32> {
    let total: u64 = candidates.iter().map(|c| u64::from(c.weight.max(1))).sum();
    if total == 0 {
        return None;
    }
    let mut point = below(host::random_u64(), total);
    for (i, candidate) in candidates.iter().enumerate() {
        let weight = u64::from(candidate.weight.max(1));
        if point < weight {
            return u32::try_from(i).ok();
        }
        point -= weight;
    }
    None
}

/// Maps a uniform 64-bit `random` to a uniform number in `0..bound` by taking the high word of the
/// product: unlike `random % bound` it has no bias towards small results that grows with `bound`,
/// and it costs one multiplication.
pub(crate) fn below(random: u64, bound: u64) -> u64 {
    ((u128::from(random) * u128::from(bound)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{tally, weighted_backends};
    use switchyard_sdk::testkit::reset_test_host;

    #[test]
    fn picks_roughly_follow_weights() {
        reset_test_host();
        let backends = weighted_backends(&[1, 2, 7]);
        let counts = tally(3, (0..10_000).map(|_| pick(&backends)));
        // Expected 1000, 2000, 7000; the test host's generator is deterministic, so this cannot
        // flake, and the tolerance is wide enough to survive a change of its seed.
        for (count, expected) in counts.iter().zip([1_000, 2_000, 7_000]) {
            assert!(count.abs_diff(expected) < expected / 5, "{counts:?}");
        }
    }

    #[test]
    fn equal_weights_reach_everyone() {
        reset_test_host();
        let backends = weighted_backends(&[1, 1, 1, 1]);
        let counts = tally(4, (0..4_000).map(|_| pick(&backends)));
        assert!(counts.iter().all(|&c| (800..1_200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        assert_eq!(below(0, 10), 0);
        assert_eq!(below(u64::MAX, 10), 9);
        assert_eq!(below(u64::MAX / 2 + 1, 10), 5);
        assert_eq!(below(u64::MAX, 1), 0);
    }

    #[test]
    fn no_candidates_means_no_pick() {
        reset_test_host();
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&weighted_backends(&[3])), Some(0));
    }
}
