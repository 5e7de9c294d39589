//! Upstreams and their backends, with the live figures balancers see (in-flight requests,
//! smoothed latency, consecutive failures).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use crate::plugin::{BalancerRole, Candidate};

/// A named group of backends and the balancer that picks among them.
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub balancer: Arc<dyn BalancerRole>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("backends", &self.backends).finish_non_exhaustive()
    }
}

/// One backend server.
#[derive(Debug)]
pub struct Backend {
    /// The address as configured (`host:port`), for logs.
    pub label: String,
    /// Where connections go.
    pub address: SocketAddr,
    pub weight: u32,
    pub tags: Arc<[String]>,
    /// A stable hash of `label`, the balancer's key for consistent hashing.
    pub key: u64,
    in_flight: AtomicU32,
    latency_us: AtomicU32,
    failures: AtomicU32,
}

/// FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Backend {
    /// A backend with no traffic yet.
    pub fn new(label: String, address: SocketAddr, weight: u32, tags: Vec<String>) -> Self {
        let key = stable_hash(&label);
        Backend {
            label,
            address,
            weight,
            tags: tags.into(),
            key,
            in_flight: AtomicU32::new(0),
            latency_us: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }

    /// What a balancer is told about this backend.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            key: self.key,
            weight: self.weight,
            in_flight: self.in_flight.load(Relaxed),
            latency_us: self.latency_us.load(Relaxed),
            failures: self.failures.load(Relaxed),
            tags: self.tags.clone(),
        }
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// Records a successful response and its latency (smoothed, weight 1/8 per sample).
    pub fn record_success(&self, latency: Duration) {
        self.failures.store(0, Relaxed);
        let sample = latency.as_micros().min(u128::from(u32::MAX)) as u32;
        let old = self.latency_us.load(Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.latency_us.store(new, Relaxed);
    }

    /// Records a failed attempt (connect error, timeout, 5xx).
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Relaxed);
    }
}

/// A request in flight to a backend; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    /// The backend this request went to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_follows_guards_and_latency_is_smoothed() {
        let b = Arc::new(Backend::new("x:1".into(), ([127, 0, 0, 1], 1).into(), 1, vec![]));
        let g1 = b.start_request();
        let g2 = b.start_request();
        assert_eq!(b.candidate().in_flight, 2);
        drop(g1);
        drop(g2);
        assert_eq!(b.candidate().in_flight, 0);
        b.record_success(Duration::from_micros(800));
        assert_eq!(b.candidate().latency_us, 800);
        b.record_success(Duration::from_micros(0));
        assert_eq!(b.candidate().latency_us, 700);
        b.record_failure();
        b.record_failure();
        assert_eq!(b.candidate().failures, 2);
        assert_eq!(stable_hash("a"), stable_hash("a"));
        assert_ne!(stable_hash("a"), stable_hash("b"));
    }
}
