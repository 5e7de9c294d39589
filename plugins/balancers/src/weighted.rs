//! The `weighted` strategy: smooth weighted round-robin, the interleaving nginx uses, so weights
//! 5, 1, 1 give `a a b a c a a` (the heavy backend's turns are spread out, not sent in a burst).
//!
//! A candidate set's whole cycle (its schedule) is computed once and cached in the instance; the
//! position in it comes from the host's shared store ([`crate::shared_turn`]), so all pooled
//! instances walk one sequence and over any whole number of cycles each candidate's share is
//! exactly its weight's share. The cycle is kept short: weights are divided by their greatest
//! common divisor and, past [`MAX_CYCLE`], scaled down (each keeping at least one turn).

use std::cell::RefCell;
use std::collections::HashMap;

use switchyard_sdk::Candidate;

use crate::shared_turn;
use switchyard_sdk::stable_hash::StableHasher;

/// The name of this strategy's turn counter in the shared store (distinct from round-robin's).
const COUNTER: &str = "weighted";

/// The longest cycle kept before weights are scaled down: bounds the memory of one schedule and
/// the one-off cost of computing it, which grows with cycle length times candidate count.
const MAX_CYCLE: u64 = 10_000;

/// How many candidate sets keep a cached schedule; the cache is emptied when one more arrives.
/// Sets change on scaling, health changes and retries, so old ones must not accumulate.
const MAX_CACHED_SETS: usize = 64;

/// Smooth weighted round-robin with a per-instance cache of schedules.
#[derive(Debug, Default)]
pub(crate) struct SmoothWeighted {
    schedules: RefCell<HashMap<u64, Schedule>>,
}

/// The cycle of one candidate set.
#[derive(Debug)]
struct Schedule {
    /// The `(key, weight)` of each candidate it was built for, in order: compared on every use so
    /// a fingerprint collision can never hand out another set's indices.
    members: Vec<(u64, u32)>,
    /// Candidate indices in the order they take their turns.
    order: Vec<u32>,
}

impl SmoothWeighted {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Returns the candidate whose turn it is for `upstream`, or `None` when there are none.
    pub(crate) fn pick(&self, upstream: &str, candidates: &[Candidate]) -> Option<u32> {
        if candidates.is_empty() {
            return None;
        }
        let fingerprint = fingerprint(candidates);
        let mut schedules = self.schedules.borrow_mut();
        if !schedules.get(&fingerprint).is_some_and(|s| s.is_for(candidates)) {
            if schedules.len() >= MAX_CACHED_SETS && !schedules.contains_key(&fingerprint) {
                schedules.clear();
            }
            schedules.insert(fingerprint, Schedule::new(candidates));
        }
        let order = &schedules.get(&fingerprint)?.order;
        order.get(shared_turn::next_turn(COUNTER, upstream, order.len())).copied()
    }
}

impl Schedule {
    fn new(candidates: &[Candidate]) -> Self {
        Schedule {
            members: candidates.iter().map(|c| (c.key, c.weight)).collect(),
            order: smooth_order(&cycle_weights(candidates)),
        }
    }

    fn is_for(&self, candidates: &[Candidate]) -> bool {
        self.members.len() == candidates.len()
            && self.members.iter().zip(candidates).all(|(&(key, weight), c)| key == c.key && weight == c.weight)
    }
}

/// Identifies a candidate set by the `(key, weight)` of its members, in order (the schedule
/// holds indices, so order matters).
fn fingerprint(candidates: &[Candidate]) -> u64 {
    let mut hasher = StableHasher::new();
    hasher.write_u64(candidates.len() as u64);
    for candidate in candidates {
        hasher.write_u64(candidate.key);
        hasher.write_u64(u64::from(candidate.weight));
    }
    hasher.finish()
}

/// Each candidate's number of turns per cycle: the weights (0 counts as 1) divided by their
/// greatest common divisor, scaled down proportionally when the cycle would exceed [`MAX_CYCLE`].
fn cycle_weights(candidates: &[Candidate]) -> Vec<u64> {
    let weights: Vec<u64> = candidates.iter().map(|c| u64::from(c.weight.max(1))).collect();
    let weights = divide_by_gcd(weights);
    let total: u64 = weights.iter().sum();
    if total <= MAX_CYCLE {
        return weights;
    }
    // weight <= u32::MAX, so weight * MAX_CYCLE fits in u64 with room to spare.
    divide_by_gcd(weights.iter().map(|&w| (w * MAX_CYCLE / total).max(1)).collect())
}

fn divide_by_gcd(weights: Vec<u64>) -> Vec<u64> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    weights.into_iter().map(|w| w / divisor).collect()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One full cycle of smooth weighted round-robin over `weights` (each at least 1): every step adds
/// each weight to its candidate's current value, picks the largest (the first on a tie) and
/// subtracts the total from it. After `total` steps every current value is back to 0, so the
/// cycle repeats and candidate `i` appears exactly `weights[i]` times in it.
fn smooth_order(weights: &[u64]) -> Vec<u32> {
    if weights.iter().all(|&w| w == 1) {
        // What the loop below produces for equal weights, without its quadratic cost.
        return (0..weights.len() as u32).collect();
    }
    let total: u64 = weights.iter().sum();
    // The cycle is bounded by MAX_CYCLE plus one turn per candidate, far inside i64.
    let total_signed = total as i64;
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        // (index, value) of the largest current value so far; `>` keeps the first on a tie.
        let mut best = (0, i64::MIN);
        for (i, (value, &weight)) in current.iter_mut().zip(weights).enumerate() {
            *value += weight as i64;
            if *value > best.1 {
                best = (i, *value);
            }
        }
        current[best.0] -= total_signed;
        order.push(best.0 as u32);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{tally, weighted_backends};
    use switchyard_sdk::testkit::reset_test_host;

    #[test]
    fn five_one_one_is_interleaved_like_nginx() {
        reset_test_host();
        let balancer = SmoothWeighted::new();
        let backends = weighted_backends(&[5, 1, 1]);
        let picks: Vec<_> = (0..14).filter_map(|_| balancer.pick("u", &backends)).collect();
        // a a b a c a a, twice.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_are_exactly_proportional_over_whole_cycles() {
        for (weights, expected_per_cycle) in [(vec![3, 2, 1], vec![3, 2, 1]), (vec![100, 1], vec![100, 1])] {
            reset_test_host();
            let balancer = SmoothWeighted::new();
            let backends = weighted_backends(&weights);
            let cycle: usize = expected_per_cycle.iter().sum();
            let cycles = 37;
            let counts = tally(backends.len(), (0..cycle * cycles).map(|_| balancer.pick("u", &backends)));
            let expected: Vec<usize> = expected_per_cycle.iter().map(|w| w * cycles).collect();
            assert_eq!(counts, expected, "weights {weights:?}");
        }
    }

    #[test]
    fn three_two_one_is_interleaved() {
        reset_test_host();
        let balancer = SmoothWeighted::new();
        let backends = weighted_backends(&[3, 2, 1]);
        let picks: Vec<_> = (0..6).filter_map(|_| balancer.pick("u", &backends)).collect();
        assert_eq!(picks, vec![0, 1, 0, 2, 1, 0]);
    }

    #[test]
    fn common_factors_shorten_the_cycle() {
        assert_eq!(cycle_weights(&weighted_backends(&[300, 200, 100])), vec![3, 2, 1]);
        assert_eq!(cycle_weights(&weighted_backends(&[7, 7, 7])), vec![1, 1, 1]);
        assert_eq!(smooth_order(&[1, 1, 1]), vec![0, 1, 2]);
    }

    #[test]
    fn huge_weights_are_scaled_down_and_every_backend_keeps_a_turn() {
        let weights = cycle_weights(&weighted_backends(&[1_000_000, 3, 500_000]));
        let total: u64 = weights.iter().sum();
        assert!(total <= MAX_CYCLE + 3, "{weights:?}");
        assert_eq!(weights[1], 1, "{weights:?}");
        // Proportions survive the scaling: the first is still twice the third (to the rounding).
        assert!(weights[0].abs_diff(2 * weights[2]) <= 2, "{weights:?}");

        reset_test_host();
        let balancer = SmoothWeighted::new();
        let backends = weighted_backends(&[1_000_000, 3, 500_000]);
        let counts = tally(3, (0..total).map(|_| balancer.pick("u", &backends)));
        assert_eq!(counts.iter().map(|&c| c as u64).collect::<Vec<_>>(), weights);
    }

    #[test]
    fn the_sequence_is_shared_by_instances_and_separate_per_upstream() {
        reset_test_host();
        let (first, second) = (SmoothWeighted::new(), SmoothWeighted::new());
        let backends = weighted_backends(&[2, 1]);
        let picks: Vec<_> =
            (0..6).filter_map(|i| if i % 2 == 0 { &first } else { &second }.pick("u", &backends)).collect();
        assert_eq!(picks, vec![0, 1, 0, 0, 1, 0]);
        assert_eq!(first.pick("other", &backends), Some(0));
    }

    #[test]
    fn a_changed_set_gets_its_own_schedule() {
        reset_test_host();
        let balancer = SmoothWeighted::new();
        let before = weighted_backends(&[1, 1]);
        let after = weighted_backends(&[1, 3]);
        assert_eq!(balancer.pick("u", &before), Some(0));
        // The shared position (1) now indexes the 1, 3 cycle `b a b b`.
        let picks: Vec<_> = (0..4).filter_map(|_| balancer.pick("u", &after)).collect();
        assert_eq!(tally(2, picks.iter().map(|&p| Some(p))), vec![1, 3]);
        assert_eq!(balancer.schedules.borrow().len(), 2);
    }

    #[test]
    fn the_cache_is_bounded() {
        reset_test_host();
        let balancer = SmoothWeighted::new();
        for extra in 1..=(MAX_CACHED_SETS as u32 + 10) {
            let backends = weighted_backends(&[extra, 1]);
            assert!(balancer.pick("u", &backends).is_some_and(|i| i < 2));
            assert!(balancer.schedules.borrow().len() <= MAX_CACHED_SETS);
        }
        assert_eq!(balancer.pick("u", &[]), None);
    }
}
