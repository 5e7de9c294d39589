//! The built-in round-robin balancer: each upstream's requests go to its healthy backends in
//! turn.
//!
//! The position is kept in the host's shared key-value store (`kv-increment`), not in the
//! instance, so all pooled instances share one sequence and the rotation is exact.

use switchyard_sdk::{Balancer, Candidate, RequestHead, export_plugin, host};

/// Stateless apart from the shared counter; takes no configuration.
#[derive(Debug)]
pub struct RoundRobin;

impl Balancer for RoundRobin {
    fn configure(config: &str) -> Result<Self, String> {
        let _: serde::de::IgnoredAny = switchyard_sdk::parse_config(config)?;
        Ok(RoundRobin)
    }

    fn pick(&self, _req: &dyn RequestHead, upstream: &str, candidates: &[Candidate]) -> Option<u32> {
        let len = candidates.len() as i64;
        if len == 0 {
            return None;
        }
        let turn = host::kv_increment(upstream, 1).wrapping_sub(1);
        Some(turn.rem_euclid(len) as u32)
    }
}

export_plugin!(RoundRobin: balancer);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::{TestRequest, reset_test_host};

    fn candidates(n: u64) -> Vec<Candidate> {
        (0..n).map(|key| Candidate { key, weight: 1, in_flight: 0, latency_us: 0, failures: 0 }).collect()
    }

    #[test]
    fn rotates_through_every_candidate_per_upstream() {
        reset_test_host();
        let rr = RoundRobin::configure("{}").unwrap_or_else(|e| panic!("{e}"));
        let req = TestRequest::get("/");
        let three = candidates(3);
        let picks: Vec<_> = (0..7).filter_map(|_| rr.pick(&req, "a", &three)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
        // Another upstream has its own sequence.
        assert_eq!(rr.pick(&req, "b", &three), Some(0));
    }

    #[test]
    fn a_shrinking_pool_stays_in_range() {
        reset_test_host();
        let rr = RoundRobin::configure("{}").unwrap_or_else(|e| panic!("{e}"));
        let req = TestRequest::get("/");
        for n in [5, 2, 1, 4] {
            let pick = rr.pick(&req, "u", &candidates(n));
            assert!(pick.is_some_and(|i| (i as u64) < n));
        }
    }
}
