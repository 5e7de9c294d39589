//! Request figures by site, route and upstream: Prometheus counters and histograms for scraping,
//! and a one-minute window (per-second slots) for `GET /api/v1/stats` (requests per second,
//! error rate, latency percentiles now, not since the start).
//!
//! A route's recorder is looked up when a generation is built, so a request only touches atomics;
//! recorders outlive generations, so figures carry across reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Seconds the window covers.
pub const WINDOW_SECONDS: u64 = 60;

/// Latency slots of the window: slot `i` holds latencies up to `BASE_MICROS · 2^(i/2)`, so a
/// percentile is known within a factor of √2 (50 µs to ~37 s; the last slot takes the rest).
const LATENCY_SLOTS: usize = 40;
const BASE_MICROS: f64 = 50.0;

/// The label value for "none" (a request that never got a route or upstream).
pub const NONE: &str = "-";

/// Status class labels; index 0 is "no response" (the client went away first).
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// One second of one key's requests.
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_SLOTS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            second: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn latency_slot(micros: u64) -> usize {
    if micros as f64 <= BASE_MICROS {
        return 0;
    }
    let index = (2.0 * (micros as f64 / BASE_MICROS).log2()).ceil() as usize;
    index.min(LATENCY_SLOTS - 1)
}

fn slot_upper_ms(index: usize) -> f64 {
    BASE_MICROS * 2f64.powf(index as f64 / 2.0) / 1000.0
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The figures of one (site, route, upstream).
pub struct Recorder {
    pub site: String,
    pub route: String,
    pub upstream: String,
    by_class: [IntCounter; CLASSES.len()],
    duration: Histogram,
    upstream_duration: Histogram,
    window: Box<[Slot]>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder({}/{}/{})", self.site, self.route, self.upstream)
    }
}

impl Recorder {
    /// Records one finished request: its status (0 when no response was sent), its whole time
    /// and, when it reached a backend, the time from that attempt's start to the end.
    pub fn record(&self, status: u16, total: Duration, upstream: Option<Duration>) {
        let class = if (100..600).contains(&status) { usize::from(status / 100) } else { 0 };
        self.by_class[class].inc();
        self.duration.observe(total.as_secs_f64());
        if let Some(u) = upstream {
            self.upstream_duration.observe(u.as_secs_f64());
        }
        let now = unix_seconds();
        let slot = &self.window[(now % WINDOW_SECONDS) as usize];
        let seen = slot.second.load(Relaxed);
        if seen != now && slot.second.compare_exchange(seen, now, Relaxed, Relaxed).is_ok() {
            // This slot last held a second a minute (or more) ago: start it over. A request
            // recorded by another thread in between may be lost; the window is an estimate.
            slot.requests.store(0, Relaxed);
            slot.errors.store(0, Relaxed);
            for l in &slot.latency {
                l.store(0, Relaxed);
            }
        }
        slot.requests.fetch_add(1, Relaxed);
        if status >= 500 || status == 0 {
            slot.errors.fetch_add(1, Relaxed);
        }
        slot.latency[latency_slot(total.as_micros() as u64)].fetch_add(1, Relaxed);
    }

    /// The last `seconds` seconds (at most [`WINDOW_SECONDS`]), the current one included.
    pub fn window(&self, seconds: u64) -> WindowFigures {
        let seconds = seconds.clamp(1, WINDOW_SECONDS);
        let now = unix_seconds();
        let mut figures = WindowFigures::empty(seconds);
        let mut latency = [0u64; LATENCY_SLOTS];
        for slot in self.window.iter() {
            let second = slot.second.load(Relaxed);
            if second + seconds <= now || second > now {
                continue;
            }
            figures.requests += slot.requests.load(Relaxed);
            figures.errors += slot.errors.load(Relaxed);
            for (sum, l) in latency.iter_mut().zip(&slot.latency) {
                *sum += l.load(Relaxed);
            }
        }
        figures.latency = latency;
        figures
    }
}

/// Requests in a window.
#[derive(Debug, Clone)]
pub struct WindowFigures {
    pub seconds: u64,
    pub requests: u64,
    /// 5xx answers and requests that got no answer.
    pub errors: u64,
    latency: [u64; LATENCY_SLOTS],
}

impl WindowFigures {
    /// No requests in a window of `seconds`.
    pub fn empty(seconds: u64) -> Self {
        WindowFigures { seconds, requests: 0, errors: 0, latency: [0; LATENCY_SLOTS] }
    }

    /// Adds another key's figures (for totals).
    pub fn add(&mut self, other: &WindowFigures) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// The latency (ms) below which `quantile` of the requests finished: the upper bound of the
    /// slot the quantile falls in. `None` without requests.
    pub fn percentile_ms(&self, quantile: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((quantile * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some((slot_upper_ms(i) * 1000.0).round() / 1000.0);
            }
        }
        None
    }

    /// The JSON `GET /api/v1/stats` shows.
    pub fn to_json(&self) -> serde_json::Value {
        let rate = |n: u64| ((n as f64 / self.seconds as f64) * 100.0).round() / 100.0;
        serde_json::json!({
            "requests": self.requests,
            "requests_per_second": rate(self.requests),
            "errors": self.errors,
            "error_rate": if self.requests == 0 { 0.0 } else { ((self.errors as f64 / self.requests as f64) * 10_000.0).round() / 10_000.0 },
            "latency_ms": {
                "p50": self.percentile_ms(0.5),
                "p90": self.percentile_ms(0.9),
                "p99": self.percentile_ms(0.99),
            },
        })
    }
}

/// The process's request figures.
pub struct Traffic {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_duration: HistogramVec,
    /// `switchyard_retries_total{upstream}`.
    pub retries: IntCounterVec,
    /// `switchyard_ejections_total{upstream}`.
    pub ejections: IntCounterVec,
    recorders: RwLock<HashMap<(String, String, String), Arc<Recorder>>>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic").finish_non_exhaustive()
    }
}

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Traffic {
    /// The process's figures (shared by every generation and the metrics registry).
    pub fn global() -> &'static Traffic {
        static TRAFFIC: OnceLock<Traffic> = OnceLock::new();
        TRAFFIC.get_or_init(|| Traffic::new().unwrap_or_else(|e| panic!("the request metrics are malformed: {e}")))
    }

    fn new() -> prometheus::Result<Traffic> {
        let labels = ["site", "route", "upstream"];
        Ok(Traffic {
            requests: IntCounterVec::new(
                Opts::new("switchyard_requests_total", "Requests answered, by site, route, upstream and status class"),
                &["site", "route", "upstream", "code"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("switchyard_request_duration_seconds", "Time from a request's arrival to its end")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &labels,
            )?,
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_upstream_duration_seconds",
                    "Time from the last attempt's start at a backend to the request's end",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &labels,
            )?,
            retries: IntCounterVec::new(
                Opts::new("switchyard_retries_total", "Attempts tried again on another backend"),
                &["upstream"],
            )?,
            ejections: IntCounterVec::new(
                Opts::new("switchyard_ejections_total", "Backends ejected by passive health checks"),
                &["upstream"],
            )?,
            recorders: RwLock::new(HashMap::new()),
        })
    }

    /// Registers the metrics with `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.upstream_duration.clone()))?;
        registry.register(Box::new(self.retries.clone()))?;
        registry.register(Box::new(self.ejections.clone()))
    }

    /// The recorder of (site, route, upstream), made on first use.
    pub fn recorder(&self, site: &str, route: &str, upstream: &str) -> Arc<Recorder> {
        let key = (site.to_string(), route.to_string(), upstream.to_string());
        if let Some(r) = self.recorders.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return r.clone();
        }
        let mut recorders = self.recorders.write().unwrap_or_else(|p| p.into_inner());
        recorders
            .entry(key)
            .or_insert_with(|| {
                let labels = [site, route, upstream];
                Arc::new(Recorder {
                    site: site.to_string(),
                    route: route.to_string(),
                    upstream: upstream.to_string(),
                    by_class: CLASSES.map(|c| self.requests.with_label_values(&[site, route, upstream, c])),
                    duration: self.duration.with_label_values(&labels),
                    upstream_duration: self.upstream_duration.with_label_values(&labels),
                    window: (0..WINDOW_SECONDS).map(|_| Slot::default()).collect(),
                })
            })
            .clone()
    }

    /// Every recorder made so far.
    pub fn recorders(&self) -> Vec<Arc<Recorder>> {
        let mut all: Vec<_> = self.recorders.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| (&a.site, &a.route, &a.upstream).cmp(&(&b.site, &b.route, &b.upstream)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_slots_grow_by_root_two() {
        assert_eq!(latency_slot(10), 0);
        assert_eq!(latency_slot(50), 0);
        assert_eq!(latency_slot(51), 1);
        assert_eq!(latency_slot(100), 2);
        assert_eq!(latency_slot(1_000), 9);
        assert_eq!(latency_slot(u64::MAX / 2), LATENCY_SLOTS - 1);
    }

    #[test]
    fn the_window_counts_requests_errors_and_percentiles() {
        let traffic = Traffic::new().unwrap();
        let r = traffic.recorder("s", "r", "u");
        for _ in 0..90 {
            r.record(200, Duration::from_micros(900), Some(Duration::from_micros(800)));
        }
        for _ in 0..10 {
            r.record(503, Duration::from_millis(20), None);
        }
        let w = r.window(60);
        assert_eq!((w.requests, w.errors), (100, 10));
        // 900 µs lies in the slot up to 1.131 ms; 20 ms in the one up to 25.6 ms.
        assert_eq!(w.percentile_ms(0.5), Some(1.131));
        assert_eq!(w.percentile_ms(0.9), Some(1.131));
        assert_eq!(w.percentile_ms(0.99), Some(25.6));
        assert!(Arc::ptr_eq(&r, &traffic.recorder("s", "r", "u")));
        let registry = Registry::new();
        traffic.register(&registry).unwrap();
        let families = registry.gather();
        let requests = families.iter().find(|f| f.name() == "switchyard_requests_total").unwrap();
        let count = |code: &str| {
            requests
                .get_metric()
                .iter()
                .find(|m| m.get_label().iter().any(|l| l.name() == "code" && l.value() == code))
                .map(|m| m.get_counter().get_value())
        };
        assert_eq!((count("2xx"), count("5xx"), count("4xx")), (Some(90.0), Some(10.0), Some(0.0)));
    }
}
