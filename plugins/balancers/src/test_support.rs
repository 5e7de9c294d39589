//! Candidate lists for the strategies' unit tests.

use switchyard_sdk::Candidate;

/// A backend with a distinct, well-spread key (as the host's address hash would be).
pub(crate) fn backend(id: u64, weight: u32, in_flight: u32) -> Candidate {
    Candidate {
        key: switchyard_sdk::stable_hash::hash_bytes(format!("10.0.0.{id}:8080").as_bytes()),
        weight,
        in_flight,
        latency_us: 0,
        failures: 0,
        tags: Vec::new(),
    }
}

/// `n` idle backends of weight 1.
pub(crate) fn equal_backends(n: usize) -> Vec<Candidate> {
    (0..n as u64).map(|id| backend(id, 1, 0)).collect()
}

/// Idle backends with the given weights.
pub(crate) fn weighted_backends(weights: &[u32]) -> Vec<Candidate> {
    weights.iter().zip(0u64..).map(|(&weight, id)| backend(id, weight, 0)).collect()
}

/// Backends of weight 1 with the given numbers of requests in flight.
pub(crate) fn loaded_backends(in_flight: &[u32]) -> Vec<Candidate> {
    in_flight.iter().zip(0u64..).map(|(&load, id)| backend(id, 1, load)).collect()
}

/// How often each index was picked, failing the test on `None` or an index out of range.
pub(crate) fn tally(len: usize, picks: impl IntoIterator<Item = Option<u32>>) -> Vec<usize> {
    let mut counts = vec![0; len];
    for picked in picks {
        match picked.and_then(|i| counts.get_mut(i as usize)) {
            Some(count) => *count += 1,
            None => panic!("pick out of range: {picked:?} of {len}"),
        }
    }
    counts
}
