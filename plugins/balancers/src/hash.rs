//! The `hash` strategy: consistent hashing by weighted rendezvous (highest random weight) hashing,
//! so requests with the same key (client IP, header, cookie, path or query parameter) keep going
//! to the same backend while the set of backends is unchanged.
//!
//! Each candidate scores `weight / -ln(u)`, where `u` in (0, 1) comes from mixing the request
//! key's hash with the candidate's stable `key`; the highest score wins. Scores depend only on the
//! pair, never on the other candidates or their order, so adding a backend takes from each old one
//! only the keys the newcomer now wins (about 1/n of them), removing one moves only its own keys,
//! and a backend of twice the weight wins about twice the keys. No ring to build or cache.

use switchyard_sdk::{Candidate, RequestHead};

use crate::request_key::RequestKey;
use switchyard_sdk::stable_hash::{hash_bytes, mix64};

/// Rendezvous hashing on one part of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RendezvousHash {
    key: RequestKey,
}

impl RendezvousHash {
    pub(crate) fn new(key: RequestKey) -> Self {
        RendezvousHash { key }
    }

    /// Returns the candidate with the highest score for `req`'s key, or `None` when there are none.
    pub(crate) fn pick(&self, req: &dyn RequestHead, candidates: &[Candidate]) -> Option<u32> {
        pick_for_hash(hash_bytes(self.key.read(req).as_bytes()), candidates)
    }
}

/// The winner for a request key's hash. Ties (vanishingly rare) go to the higher candidate key,
/// so the choice never depends on the order of the candidates.
fn pick_for_hash(request_hash: u64, candidates: &[Candidate]) -> Option<u32> {
    let (winner, _, _) = candidates
        .iter()
        .enumerate()
        .map(|(i, candidate)| (i, score(request_hash, candidate), candidate.key))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))?;
    u32::try_from(winner).ok()
}

/// `weight / -ln(u)` for the pair: with `u` uniform, `-ln(u) / weight` is exponentially
/// distributed with rate `weight`, so the highest score (the smallest of those) belongs to each
/// candidate with probability weight / total weight.
fn score(request_hash: u64, candidate: &Candidate) -> f64 {
    // The candidate key is mixed on its own first so that keys differing in few bits (or small
    // test keys) still give unrelated pairs.
    let pair = mix64(request_hash ^ mix64(candidate.key));
    // The top 53 bits, centred in their interval: strictly inside (0, 1), so ln(u) is finite
    // and negative.
    let unit = ((pair >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(candidate.weight.max(1)) / -unit.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{equal_backends, tally, weighted_backends};
    use switchyard_sdk::testkit::TestRequest;

    fn by_header(backends: &[Candidate], user: &str) -> Option<u32> {
        let req = TestRequest::get("/").with_header("x-user", user);
        RendezvousHash::new(RequestKey::Header("x-user".into())).pick(&req, backends)
    }

    /// The backend key each of 10 000 users lands on.
    fn assignment(backends: &[Candidate]) -> Vec<u64> {
        (0..10_000)
            .map(|user| match by_header(backends, &format!("user-{user}")) {
                Some(i) => backends[i as usize].key,
                None => panic!("no pick for user-{user}"),
            })
            .collect()
    }

    #[test]
    fn the_same_key_always_gets_the_same_backend() {
        let backends = equal_backends(5);
        let first = by_header(&backends, "alice");
        assert!(first.is_some());
        assert!((0..50).all(|_| by_header(&backends, "alice") == first));
        // Order-independent: the same backend when the host lists candidates differently.
        let mut reversed = backends.clone();
        reversed.reverse();
        let moved = by_header(&reversed, "alice").map(|i| reversed[i as usize].key);
        assert_eq!(moved, first.map(|i| backends[i as usize].key));
    }

    #[test]
    fn different_keys_spread_over_all_backends() {
        let backends = equal_backends(4);
        let counts = tally(4, (0..4_000).map(|user| by_header(&backends, &format!("user-{user}"))));
        assert!(counts.iter().all(|&c| (800..1_200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn heavier_backends_win_proportionally_more_keys() {
        let backends = weighted_backends(&[3, 1]);
        let counts = tally(2, (0..10_000).map(|user| by_header(&backends, &format!("user-{user}"))));
        assert!((7_000..8_000).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn adding_a_fifth_backend_moves_about_a_fifth_of_keys_all_to_it() {
        let four = equal_backends(4);
        let five = equal_backends(5);
        let newcomer = five[4].key;
        let (before, after) = (assignment(&four), assignment(&five));
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        assert!((1_000..=3_000).contains(&moved.len()), "{} of 10000 moved", moved.len());
        assert!(moved.iter().all(|(_, to)| **to == newcomer), "a key moved between old backends");
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let four = equal_backends(4);
        let gone = four[1].key;
        let three: Vec<_> = four.iter().filter(|c| c.key != gone).cloned().collect();
        let (before, after) = (assignment(&four), assignment(&three));
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b == &gone {
                moved += 1;
            } else {
                assert_eq!(b, a, "a key not on the removed backend moved");
            }
        }
        assert!(moved > 1_500, "the removed backend held only {moved} keys");
    }

    #[test]
    fn each_key_kind_drives_the_choice() {
        let backends = equal_backends(8);
        let pick = |key: &str, req: &TestRequest| match RequestKey::parse(key) {
            Ok(key) => RendezvousHash::new(key).pick(req, &backends),
            Err(e) => panic!("{e}"),
        };
        let expected = |text: &str| pick_for_hash(hash_bytes(text.as_bytes()), &backends);
        // Clients differ in everything but the key, so only a correctly read key gives these.
        for ip in ["10.1.0.1", "10.1.0.2", "10.1.0.3"] {
            let req = TestRequest::get("/shop/cart?session=s-77&x=1")
                .with_client_ip(ip)
                .with_header("x-tenant", "acme")
                .with_header("cookie", "a=1; sid=c-42");
            assert_eq!(pick("header:x-tenant", &req), expected("acme"));
            assert_eq!(pick("cookie:sid", &req), expected("c-42"));
            assert_eq!(pick("path", &req), expected("/shop/cart"));
            assert_eq!(pick("query:session", &req), expected("s-77"));
            assert_eq!(pick("client_ip", &req), expected(ip));
            assert_eq!(pick("header:x-missing", &req), expected(ip));
        }
    }

    #[test]
    fn no_candidates_means_no_pick() {
        assert_eq!(by_header(&[], "alice"), None);
        assert_eq!(by_header(&equal_backends(1), "alice"), Some(0));
    }
}
