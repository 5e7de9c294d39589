//! The `p2c` strategy (power of two choices): draw two distinct candidates uniformly at random and
//! keep the less loaded one (fewer requests in flight per unit of weight, then lower latency).
//!
//! Two random draws avoid both the herd effect of always choosing the global minimum from stale
//! figures and the blindness of a single random draw; the most loaded candidate can never win,
//! since any pair that contains it also contains a less loaded one.

use std::cmp::Ordering;

use switchyard_sdk::{Candidate, host};

use crate::least_connections::compare_load;
use crate::random::below;

/// Returns the better of two distinct random candidates, or `None` when there are none.
pub(crate) fn pick(candidates: &[Candidate]) -> Option<u32> {
    let len = candidates.len() as u64;
    if len < 2 {
        return (len == 1).then_some(0);
    }
    let first = below(host::random_u64(), len);
    // A draw from the other len - 1, shifted past `first`: distinct and still uniform.
    let mut second = below(host::random_u64(), len - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (candidates.get(first as usize)?, candidates.get(second as usize)?);
    let chosen = match compare_load(a, b).then(a.latency_us.cmp(&b.latency_us)) {
        Ordering::Greater => second,
        // On a full tie either will do; the first draw is as random as the second.
        Ordering::Less | Ordering::Equal => first,
    };
    u32::try_from(chosen).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{backend, equal_backends, loaded_backends, tally};
    use switchyard_sdk::testkit::reset_test_host;

    #[test]
    fn the_most_loaded_of_three_is_never_picked() {
        reset_test_host();
        // Every pair of distinct draws holds index 0 or 1, both less loaded than index 2, so
        // index 2 cannot win whatever the generator returns.
        let backends = loaded_backends(&[0, 0, 100]);
        let counts = tally(3, (0..10_000).map(|_| pick(&backends)));
        assert_eq!(counts[2], 0, "{counts:?}");
        // And the two idle ones share the work (each wins every pair it is in with index 2,
        // plus half of the ties between them).
        assert!(counts[0] > 4_000 && counts[1] > 4_000, "{counts:?}");
    }

    #[test]
    fn with_two_candidates_the_lighter_always_wins() {
        reset_test_host();
        // With two candidates both are always drawn, so the outcome is fixed.
        let backends = loaded_backends(&[7, 3]);
        assert!((0..100).all(|_| pick(&backends) == Some(1)));
        // Weight-normalized: 10 on weight 10 (1 each) beats 2 on weight 1.
        let backends = vec![backend(0, 10, 10), backend(1, 1, 2)];
        assert!((0..100).all(|_| pick(&backends) == Some(0)));
    }

    #[test]
    fn equal_loads_are_decided_by_latency() {
        reset_test_host();
        let mut backends = loaded_backends(&[4, 4]);
        backends[0].latency_us = 900;
        backends[1].latency_us = 250;
        assert!((0..100).all(|_| pick(&backends) == Some(1)));
    }

    #[test]
    fn full_ties_spread_over_everyone() {
        reset_test_host();
        let counts = tally(4, (0..4_000).map(|_| pick(&equal_backends(4))));
        assert!(counts.iter().all(|&c| (800..1_200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn fewer_than_two_candidates() {
        reset_test_host();
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&equal_backends(1)), Some(0));
    }
}
