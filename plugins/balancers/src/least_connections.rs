//! The `least-connections` strategy: the candidate with the fewest requests in flight per unit of
//! weight, so a backend of weight 2 is given twice the concurrent requests of one of weight 1.
//!
//! Loads are compared exactly, by cross-multiplying in `u64` (no floats, no rounding). Candidates
//! tied for the least load take turns through a shared counter ([`crate::shared_turn`]): when
//! everything is idle, requests still spread instead of all landing on the first backend.

use std::cmp::Ordering;

use switchyard_sdk::Candidate;

use crate::shared_turn;

/// The name of this strategy's tie-breaking counter in the shared store.
const COUNTER: &str = "least-connections";

/// Compares `a.in_flight / a.weight` with `b.in_flight / b.weight` (weight 0 counts as 1).
/// Also the load measure of the `p2c` strategy.
pub(crate) fn compare_load(a: &Candidate, b: &Candidate) -> Ordering {
    let a_scaled = u64::from(a.in_flight) * u64::from(b.weight.max(1));
    let b_scaled = u64::from(b.in_flight) * u64::from(a.weight.max(1));
    a_scaled.cmp(&b_scaled)
}

/// Returns the least loaded candidate of `upstream`, rotating among ties, or `None` when there
/// are none.
pub(crate) fn pick(upstream: &str, candidates: &[Candidate]) -> Option<u32> {
    let (first, rest) = candidates.split_first()?;
    let mut least = first;
    let mut tied = vec![0];
    for (i, candidate) in rest.iter().enumerate() {
        match compare_load(candidate, least) {
            Ordering::Less => {
                least = candidate;
                tied.clear();
                tied.push(i + 1);
            }
            Ordering::Equal => tied.push(i + 1),
            Ordering::Greater => {}
        }
    }
    let chosen = match tied.as_slice() {
        [only] => *only,
        _ => *tied.get(shared_turn::next_turn(COUNTER, upstream, tied.len()))?,
    };
    u32::try_from(chosen).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{backend, equal_backends, loaded_backends, tally};
    use switchyard_sdk::testkit::reset_test_host;

    #[test]
    fn prefers_the_least_loaded() {
        reset_test_host();
        let backends = loaded_backends(&[5, 2, 9, 3]);
        for _ in 0..10 {
            assert_eq!(pick("u", &backends), Some(1));
        }
    }

    #[test]
    fn load_is_normalized_by_weight() {
        reset_test_host();
        // 6 in flight on weight 4 (1.5 each) beats 2 on weight 1 (2) and 5 on weight 2 (2.5).
        let backends = vec![backend(0, 1, 2), backend(1, 4, 6), backend(2, 2, 5)];
        assert_eq!(pick("u", &backends), Some(1));
        // 9 on weight 4 (2.25) loses to 2 on weight 1.
        let backends = vec![backend(0, 1, 2), backend(1, 4, 9)];
        assert_eq!(pick("u", &backends), Some(0));
    }

    #[test]
    fn comparison_is_exact_for_large_figures() {
        // Loads just above and just below 1, whose cross products overflow u32 but not u64.
        let heavy = backend(0, u32::MAX - 1, u32::MAX);
        let light = backend(1, u32::MAX, u32::MAX - 1);
        assert_eq!(compare_load(&light, &heavy), Ordering::Less);
        assert_eq!(compare_load(&heavy, &light), Ordering::Greater);
        assert_eq!(compare_load(&backend(2, 3, 6), &backend(3, 1, 2)), Ordering::Equal);
        // Weight 0 (never sent by the host) counts as 1 rather than dividing by zero.
        assert_eq!(compare_load(&backend(4, 0, 2), &backend(5, 1, 2)), Ordering::Equal);
    }

    #[test]
    fn ties_take_turns() {
        reset_test_host();
        let idle = equal_backends(3);
        let picks: Vec<_> = (0..6).filter_map(|_| pick("u", &idle)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);

        reset_test_host();
        // Indices 1 and 3 tie at one request in flight; the others are busier.
        let backends = loaded_backends(&[4, 1, 2, 1]);
        let counts = tally(4, (0..100).map(|_| pick("u", &backends)));
        assert_eq!(counts, vec![0, 50, 0, 50]);
    }

    #[test]
    fn a_clear_winner_does_not_advance_the_tie_counter() {
        reset_test_host();
        assert_eq!(pick("u", &loaded_backends(&[3, 0, 3])), Some(1));
        assert!(reset_test_host().kv.is_empty());
    }

    #[test]
    fn no_candidates_means_no_pick() {
        reset_test_host();
        assert_eq!(pick("u", &[]), None);
        assert_eq!(pick("u", &loaded_backends(&[7])), Some(0));
    }
}
