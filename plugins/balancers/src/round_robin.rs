//! The `round-robin` strategy: an upstream's requests go to its candidates in turn, ignoring
//! weights and load.
//!
//! The position lives in the host's shared store ([`crate::shared_turn`]), so all pooled
//! instances share one rotation and it is exact: over `n` consecutive picks from an unchanged
//! set of `n` candidates, each is chosen once.

use switchyard_sdk::Candidate;

use crate::shared_turn;

/// The name of this strategy's turn counter in the shared store.
const COUNTER: &str = "round-robin";

/// Returns the next candidate in the rotation of `upstream`, or `None` when there are none.
pub(crate) fn pick(upstream: &str, candidates: &[Candidate]) -> Option<u32> {
    if candidates.is_empty() {
        return None;
    }
    u32::try_from(shared_turn::next_turn(COUNTER, upstream, candidates.len())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::equal_backends;
    use switchyard_sdk::testkit::reset_test_host;

    #[test]
    fn rotates_exactly_through_every_candidate() {
        reset_test_host();
        let three = equal_backends(3);
        let picks: Vec<_> = (0..7).filter_map(|_| pick("a", &three)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
        // Another upstream has its own rotation.
        assert_eq!(pick("b", &three), Some(0));
        assert_eq!(pick("a", &three), Some(1));
    }

    #[test]
    fn a_changing_pool_stays_in_range() {
        reset_test_host();
        for n in [5, 2, 1, 4, 3] {
            let picked = pick("u", &equal_backends(n));
            assert!(picked.is_some_and(|i| (i as usize) < n), "{picked:?} for {n}");
        }
        assert_eq!(pick("u", &[]), None);
    }
}
