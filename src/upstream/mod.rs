//! Upstreams and their backends, with the live figures balancers see (in-flight requests,
//! smoothed latency, consecutive failures) and the state that decides which backends are
//! candidates at all: active health ([`health`]), outlier ejection, drain.
//!
//! A backend's state lives in its `Arc<Backend>`, which a reload takes over when the backend is
//! unchanged; an upstream's settings ([`UpstreamPolicy`]) and drain marks belong to the
//! generation, so a refused reload cannot change them.

pub mod health;
pub mod policy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use policy::UpstreamPolicy;

use crate::plugin::{BalancerRole, Candidate};

/// Milliseconds on a clock that starts with the process (for ejection deadlines in atomics).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A named group of backends and the balancer that picks among them.
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    /// `draining[i]`: backend `i` gets no new requests.
    pub draining: Vec<bool>,
    pub balancer: Arc<dyn BalancerRole>,
    pub policy: UpstreamPolicy,
    pub retry_budget: RetryBudget,
    /// TLS to the backends (`None`: plain HTTP).
    pub tls: Option<crate::tls::upstream::UpstreamTlsSettings>,
}

impl Upstream {
    /// Whether backend `i` may get a new request at `now` (see [`now_ms`]): not draining, not
    /// failing its health checks (when there are any), not ejected.
    pub fn available(&self, i: usize, now: u64) -> bool {
        let b = &self.backends[i];
        !self.draining[i] && (self.policy.health_check.is_none() || b.healthy()) && !b.ejected(now)
    }

    /// Records a successful answer from backend `i`.
    pub fn record_success(&self, i: usize, latency: Duration) {
        let b = &self.backends[i];
        b.record_success(latency);
        // A backend that served well for a base ejection time since it came back starts over.
        if let Some(o) = &self.policy.outlier
            && b.ejections.load(Relaxed) > 0
            && now_ms() > b.ejected_until_ms.load(Relaxed) + o.base_ejection.as_millis() as u64
        {
            b.ejections.store(0, Relaxed);
        }
    }

    /// Records a failed attempt on backend `i` (connection failure, timeout, 5xx) and ejects it
    /// when that makes `consecutive_failures` in a row, unless the upstream already has its
    /// largest share of backends ejected.
    pub fn record_failure(&self, i: usize) {
        let b = &self.backends[i];
        let failures = b.failures.fetch_add(1, Relaxed) + 1;
        let Some(o) = &self.policy.outlier else { return };
        let now = now_ms();
        if failures < o.consecutive_failures || b.ejected(now) {
            return;
        }
        let total = self.backends.len();
        let ejected = self.backends.iter().filter(|x| x.ejected(now)).count();
        if (ejected + 1) * 100 > o.max_ejected_percent as usize * total {
            tracing::debug!(
                upstream = %self.name,
                backend = %b.label,
                "{failures} failures in a row, but {ejected} of {total} backends are ejected already"
            );
            return;
        }
        let times = b.ejections.fetch_add(1, Relaxed).min(20);
        let length = o.base_ejection.saturating_mul(1 << times).min(o.max_ejection);
        b.ejected_until_ms.store(now + length.as_millis() as u64, Relaxed);
        b.failures.store(0, Relaxed);
        crate::admin::traffic::Traffic::global().ejections.with_label_values(&[&self.name]).inc();
        tracing::warn!(
            upstream = %self.name,
            backend = %b.label,
            "ejected for {} ms after {failures} failures in a row (ejection {})",
            length.as_millis(),
            times + 1
        );
    }
}

/// Retries an upstream may still make: a token bucket that each request adds
/// `budget_percent / 100` of a token to, holding at most [`RetryBudget::RESERVE`] tokens.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a token.
    milli_tokens: AtomicI64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget { milli_tokens: AtomicI64::new(Self::RESERVE * 1000) }
    }
}

impl RetryBudget {
    /// The tokens a quiet upstream has saved up (and starts with).
    pub const RESERVE: i64 = 10;

    /// A request was sent: adds `percent` hundredths of a token.
    pub fn deposit(&self, percent: u32) {
        let cap = Self::RESERVE * 1000;
        let _ = self
            .milli_tokens
            .fetch_update(Relaxed, Relaxed, |t| (t < cap).then(|| (t + i64::from(percent) * 10).min(cap)));
    }

    /// Takes a token for one retry; false when none is left.
    pub fn withdraw(&self) -> bool {
        self.milli_tokens.fetch_update(Relaxed, Relaxed, |t| (t >= 1000).then_some(t - 1000)).is_ok()
    }
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
    /// The active health checks' verdict (true until they say otherwise).
    healthy: AtomicBool,
    /// Probes in a row whose result disagrees with `healthy`.
    probe_streak: AtomicU32,
    /// Ejected until this [`now_ms`] (0: never ejected).
    ejected_until_ms: AtomicU64,
    /// Ejections so far (each one doubles the next one's length).
    ejections: AtomicU32,
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
            healthy: AtomicBool::new(true),
            probe_streak: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    /// The active health checks' verdict.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Whether passive health checks have this backend ejected at `now`.
    pub fn ejected(&self, now: u64) -> bool {
        now < self.ejected_until_ms.load(Relaxed)
    }

    /// Counts a probe's result; the new verdict when this one changed it (after `healthy` passing
    /// or `unhealthy` failing probes in a row).
    pub fn record_probe(&self, passed: bool, healthy: u32, unhealthy: u32) -> Option<bool> {
        if passed == self.healthy() {
            self.probe_streak.store(0, Relaxed);
            return None;
        }
        let streak = self.probe_streak.fetch_add(1, Relaxed) + 1;
        if streak < if passed { healthy } else { unhealthy } {
            return None;
        }
        self.probe_streak.store(0, Relaxed);
        self.healthy.store(passed, Relaxed);
        if passed {
            // Back in service with a clean slate for passive checks.
            self.failures.store(0, Relaxed);
            self.ejected_until_ms.store(0, Relaxed);
        }
        Some(passed)
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
}

/// A request in flight to a backend; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

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
        assert_eq!(stable_hash("a"), stable_hash("a"));
        assert_ne!(stable_hash("a"), stable_hash("b"));
    }

    struct FirstBackend;

    impl BalancerRole for FirstBackend {
        fn pick(
            &self,
            _: &mut crate::plugin::RequestView,
            _: &str,
            _: &[Candidate],
        ) -> Result<usize, crate::plugin::PluginError> {
            Ok(0)
        }
    }

    fn upstream(backends: usize, outlier: policy::Outlier) -> Upstream {
        let policy = UpstreamPolicy { outlier: Some(outlier), ..UpstreamPolicy::default() };
        Upstream {
            name: "u".into(),
            backends: (0..backends)
                .map(|i| Arc::new(Backend::new(format!("b{i}:1"), ([127, 0, 0, 1], 1).into(), 1, vec![])))
                .collect(),
            draining: vec![false; backends],
            balancer: Arc::new(FirstBackend),
            policy,
            retry_budget: RetryBudget::default(),
            tls: None,
        }
    }

    fn outlier(base_ms: u64, max_ms: u64, max_percent: u32) -> policy::Outlier {
        policy::Outlier {
            consecutive_failures: 3,
            base_ejection: Duration::from_millis(base_ms),
            max_ejection: Duration::from_millis(max_ms),
            max_ejected_percent: max_percent,
        }
    }

    #[test]
    fn failures_in_a_row_eject_for_longer_each_time_up_to_the_maximum() {
        let u = upstream(4, outlier(1000, 3000, 50));
        u.record_failure(0);
        u.record_failure(0);
        u.record_success(0, Duration::from_micros(10));
        u.record_failure(0);
        u.record_failure(0);
        assert!(u.available(0, now_ms()), "a success in between resets the count");
        u.record_failure(0);
        let now = now_ms();
        assert!(!u.available(0, now));
        let until = u.backends[0].ejected_until_ms.load(Relaxed);
        assert!((now + 900..=now + 1000).contains(&until), "{until} vs {now}");
        // Back (the deadline passed), then failing again: twice as long, then capped at 3 s.
        for expected in [2000, 3000, 3000] {
            u.backends[0].ejected_until_ms.store(0, Relaxed);
            for _ in 0..3 {
                u.record_failure(0);
            }
            let now = now_ms();
            let length = u.backends[0].ejected_until_ms.load(Relaxed) - now;
            assert!((expected - 100..=expected).contains(&length), "{length} ms, expected {expected}");
        }
    }

    #[test]
    fn ejection_stops_at_the_largest_share_of_the_upstream() {
        let u = upstream(4, outlier(60_000, 60_000, 50));
        for i in 0..4 {
            for _ in 0..3 {
                u.record_failure(i);
            }
        }
        let now = now_ms();
        let available = (0..4).filter(|&i| u.available(i, now)).count();
        assert_eq!(available, 2, "half of four may be ejected, no more");
        // A lone backend is never ejected below 100%.
        let alone = upstream(1, outlier(60_000, 60_000, 50));
        for _ in 0..10 {
            alone.record_failure(0);
        }
        assert!(alone.available(0, now_ms()));
    }

    #[test]
    fn probes_flip_the_verdict_only_after_their_thresholds() {
        let b = Backend::new("x:1".into(), ([127, 0, 0, 1], 1).into(), 1, vec![]);
        assert_eq!(b.record_probe(false, 2, 3), None);
        assert_eq!(b.record_probe(false, 2, 3), None);
        assert_eq!(b.record_probe(true, 2, 3), None, "a pass breaks the failing streak");
        assert_eq!(b.record_probe(false, 2, 3), None);
        assert_eq!(b.record_probe(false, 2, 3), None);
        assert_eq!(b.record_probe(false, 2, 3), Some(false));
        assert!(!b.healthy());
        assert_eq!(b.record_probe(true, 2, 3), None);
        assert_eq!(b.record_probe(true, 2, 3), Some(true));
        assert!(b.healthy());
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests_plus_a_reserve() {
        let budget = RetryBudget::default();
        let reserve = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(reserve, RetryBudget::RESERVE as usize);
        for _ in 0..25 {
            budget.deposit(20);
        }
        let earned = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(earned, 5, "25 requests at 20% earn 5 retries");
        for _ in 0..10_000 {
            budget.deposit(20);
        }
        let capped = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(capped, RetryBudget::RESERVE as usize);
    }
}
