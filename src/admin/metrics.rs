//! The process's Prometheus registry and the metrics of the lifecycle: reloads, the running
//! generation, requests in progress. Rendered as Prometheus text on the admin listener's
//! `/metrics`.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::proxy::RequestCount;

/// The registry and the metrics Switchyard updates.
pub struct Metrics {
    registry: Registry,
    /// `switchyard_reloads_total{result="success"|"failure"}`.
    pub reloads: IntCounterVec,
    /// Time from a reload's trigger to its generation serving (or its refusal).
    pub reload_seconds: Histogram,
    /// The number of the generation serving requests (1 at start, +1 per applied reload).
    pub generation: IntGauge,
    /// Unix time of the last applied reload (or of the start).
    pub last_reload_success: IntGauge,
    requests_in_progress: IntGauge,
    requests: Arc<RequestCount>,
    /// `switchyard_tcp_connections_active{route}`: `[[tcp]]` connections open now.
    pub tcp_active: IntGaugeVec,
    /// `switchyard_tcp_connections_total{route,result}`: `[[tcp]]` connections accepted, by
    /// whether a backend took them (`proxied`) or none could (`failed`).
    pub tcp_total: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every metric registered; `requests` is read at each scrape.
    pub fn new(requests: Arc<RequestCount>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reloads = IntCounterVec::new(
            Opts::new("switchyard_reloads_total", "Reloads by result (a failed reload leaves the running generation)"),
            &["result"],
        )?;
        // Both series exist from the start, so a rate over them is defined before the first one.
        reloads.with_label_values(&["success"]);
        reloads.with_label_values(&["failure"]);
        let reload_seconds = Histogram::with_opts(
            HistogramOpts::new("switchyard_reload_duration_seconds", "Time from a reload's trigger to its outcome")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let generation = IntGauge::new("switchyard_generation", "The number of the generation serving requests")?;
        let last_reload_success = IntGauge::new(
            "switchyard_last_reload_success_timestamp_seconds",
            "Unix time the serving generation was applied",
        )?;
        let requests_in_progress =
            IntGauge::new("switchyard_requests_in_progress", "Requests being served, upgraded connections included")?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(reload_seconds.clone()))?;
        registry.register(Box::new(generation.clone()))?;
        registry.register(Box::new(last_reload_success.clone()))?;
        registry.register(Box::new(requests_in_progress.clone()))?;
        let tcp_active = IntGaugeVec::new(
            Opts::new("switchyard_tcp_connections_active", "Connections open on each [[tcp]] route"),
            &["route"],
        )?;
        let tcp_total = IntCounterVec::new(
            Opts::new("switchyard_tcp_connections_total", "Connections accepted on each [[tcp]] route, by result"),
            &["route", "result"],
        )?;
        registry.register(Box::new(tcp_active.clone()))?;
        registry.register(Box::new(tcp_total.clone()))?;
        Ok(Metrics {
            registry,
            reloads,
            reload_seconds,
            generation,
            last_reload_success,
            requests_in_progress,
            requests,
            tcp_active,
            tcp_total,
        })
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.requests_in_progress.set(i64::try_from(self.requests.get()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
