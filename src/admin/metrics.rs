//! The process's Prometheus registry, rendered as Prometheus text on the admin listener's
//! `/metrics`: the lifecycle (reloads, the running generation, requests in progress), requests by
//! site, route, upstream and status class ([`super::traffic`]), and — read from the serving
//! generation at each scrape — plugin calls by plugin and role, backend health and connections.

use std::collections::HashMap;

use crate::tls::TlsRuntime;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::traffic::Traffic;
use crate::generation::Generation;
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
        Traffic::global().register(&registry)?;
        registry.register(Box::new(crate::proxy::strict::rejected_metric().clone()))?;
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

    /// Also reports the generation `current` holds at each scrape (plugins, backends) and the
    /// client connections counted in `open_connections`.
    pub fn watch_generation(
        &self,
        current: Arc<ArcSwap<Generation>>,
        open_connections: Arc<AtomicUsize>,
        tls: Arc<TlsRuntime>,
    ) -> prometheus::Result<()> {
        self.registry.register(Box::new(GenerationCollector::new(current, open_connections, tls)?))
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

/// The figures read from the serving generation when scraped.
struct GenerationCollector {
    current: Arc<ArcSwap<Generation>>,
    open_connections: Arc<AtomicUsize>,
    tls: Arc<TlsRuntime>,
    descs: Vec<Desc>,
}

/// (name, help, type, labels) of every family [`GenerationCollector`] reports.
const GENERATION_FAMILIES: [(&str, &str, MetricType, &[&str]); 14] = [
    ("switchyard_plugin_calls_total", "Plugin calls, by plugin and role", MetricType::COUNTER, &["plugin", "role"]),
    (
        "switchyard_plugin_traps_total",
        "Plugin calls that trapped or answered nonsense",
        MetricType::COUNTER,
        &["plugin", "role"],
    ),
    (
        "switchyard_plugin_timeouts_total",
        "Plugin calls cut off at their deadline",
        MetricType::COUNTER,
        &["plugin", "role"],
    ),
    (
        "switchyard_plugin_memory_breaches_total",
        "Plugin calls cut off at their memory cap",
        MetricType::COUNTER,
        &["plugin", "role"],
    ),
    (
        "switchyard_plugin_call_seconds_total",
        "Time spent in plugin calls (estimated from a sample)",
        MetricType::COUNTER,
        &["plugin", "role"],
    ),
    (
        "switchyard_plugin_decisions_reused_total",
        "Calls of a deterministic plugin answered from memory instead of calling it",
        MetricType::COUNTER,
        &["plugin", "role"],
    ),
    (
        "switchyard_backend_healthy",
        "1 when a backend may take requests (healthy, not ejected, not draining)",
        MetricType::GAUGE,
        &["upstream", "backend"],
    ),
    (
        "switchyard_backend_ejected",
        "1 while passive health checks have a backend ejected",
        MetricType::GAUGE,
        &["upstream", "backend"],
    ),
    ("switchyard_backend_draining", "1 for a backend set to drain", MetricType::GAUGE, &["upstream", "backend"]),
    (
        "switchyard_upstream_requests_in_flight",
        "Requests at a backend now (each holds one upstream connection)",
        MetricType::GAUGE,
        &["upstream", "backend"],
    ),
    ("switchyard_client_connections_active", "Client connections open now", MetricType::GAUGE, &[]),
    (
        "switchyard_tls_certificate_expiry_timestamp_seconds",
        "When the certificate a site serves ends (unix seconds)",
        MetricType::GAUGE,
        &["site", "source"],
    ),
    (
        "switchyard_tls_certificate_seconds_left",
        "Seconds until the certificate a site serves ends (negative once expired)",
        MetricType::GAUGE,
        &["site", "source"],
    ),
    (
        "switchyard_acme_failures",
        "Failed ACME orders in a row for a site's certificate (0 after a success)",
        MetricType::GAUGE,
        &["site"],
    ),
];

impl GenerationCollector {
    fn new(
        current: Arc<ArcSwap<Generation>>,
        open_connections: Arc<AtomicUsize>,
        tls: Arc<TlsRuntime>,
    ) -> prometheus::Result<Self> {
        let descs = GENERATION_FAMILIES
            .iter()
            .map(|(name, help, _, labels)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels.iter().map(|l| l.to_string()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(GenerationCollector { current, open_connections, tls, descs })
    }
}

fn sample(labels: &[(&str, &str)], value: f64, kind: MetricType) -> Metric {
    let mut metric = Metric::default();
    let mut labels = labels.to_vec();
    labels.sort_unstable();
    metric.set_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.to_string());
                pair
            })
            .collect(),
    );
    if kind == MetricType::COUNTER {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    metric
}

impl Collector for GenerationCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let generation = self.current.load_full();
        let mut samples: Vec<Vec<Metric>> = vec![Vec::new(); GENERATION_FAMILIES.len()];
        for plugin in &generation.plugins {
            for &role in plugin.roles() {
                let s = plugin.shared().stats.role_snapshot(role);
                let labels = [("plugin", plugin.name()), ("role", role.config_name())];
                let values = [
                    s.calls as f64,
                    s.traps as f64,
                    s.timeouts as f64,
                    s.memory_breaches as f64,
                    s.nanos as f64 / 1e9,
                    s.reused as f64,
                ];
                for (family, value) in values.into_iter().enumerate() {
                    samples[family].push(sample(&labels, value, MetricType::COUNTER));
                }
            }
        }
        let now = crate::upstream::now_ms();
        let mut upstreams: Vec<_> = generation.upstreams.values().collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        for upstream in upstreams {
            for (i, backend) in upstream.backends.iter().enumerate() {
                let labels = [("upstream", upstream.name.as_str()), ("backend", backend.label.as_str())];
                let flag = |b: bool| if b { 1.0 } else { 0.0 };
                samples[6].push(sample(&labels, flag(upstream.available(i, now)), MetricType::GAUGE));
                samples[7].push(sample(&labels, flag(backend.ejected(now)), MetricType::GAUGE));
                samples[8].push(sample(&labels, flag(upstream.draining[i]), MetricType::GAUGE));
                samples[9].push(sample(&labels, f64::from(backend.candidate().in_flight), MetricType::GAUGE));
            }
        }
        samples[10].push(sample(&[], self.open_connections.load(Relaxed) as f64, MetricType::GAUGE));
        let plan = &generation.tls;
        let now = crate::tls::material::unix_now();
        for site in &plan.sites {
            let labels = [("site", site.site.as_str()), ("source", site.source.kind())];
            if let Some(material) = self.tls.material_of(plan, site) {
                samples[11].push(sample(&labels, material.info.not_after as f64, MetricType::GAUGE));
                samples[12].push(sample(&labels, material.info.remaining_s(now) as f64, MetricType::GAUGE));
            }
            if let Some(dir) = TlsRuntime::acme_dir(plan, site).filter(|_| site.source.kind() == "acme") {
                let failures = self.tls.managed(&dir).status.failures;
                samples[13].push(sample(&[("site", site.site.as_str())], f64::from(failures), MetricType::GAUGE));
            }
        }
        GENERATION_FAMILIES
            .iter()
            .zip(samples)
            .filter(|(_, metrics)| !metrics.is_empty())
            .map(|((name, help, kind, _), metrics)| {
                let mut family = MetricFamily::default();
                family.set_name(name.to_string());
                family.set_help(help.to_string());
                family.set_field_type(*kind);
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
