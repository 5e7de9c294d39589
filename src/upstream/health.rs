//! Active health checks: every backend of an upstream with a `health_check` is probed on its
//! interval, healthy or not, so an unhealthy one is seen coming back. The verdict lives in the
//! backend ([`Backend::record_probe`]) and carries over reloads that keep the backend.
//!
//! HTTP probes go through Pingora's own connector, so they connect as the proxy does.
//! (`pingora-load-balancing` has health checks too, but they judge the status only, not the
//! body, and they keep their verdicts in its own backend set, which does not survive our
//! generation swaps.)

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use super::policy::{HealthCheck, Probe};
use super::{Backend, Upstream};
use crate::generation::Generation;
use crate::tls::upstream::UpstreamTlsSettings;

/// The shortest wait between two looks for probes that are due.
const TICK: Duration = Duration::from_millis(20);

/// The longest wait between two looks: how soon a reload that adds health checks is seen. (The
/// prober sleeps until the next probe is due, so a process without health checks wakes once a
/// second, not fifty times: every wake-up preempts a busy worker.)
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// The most of a probe's response body that is read for `expect_body`.
const MAX_BODY: usize = 64 << 10;

/// Runs probes for whatever generation `current` holds, forever (spawn it on a runtime).
pub async fn run_prober(current: Arc<ArcSwap<Generation>>) {
    let connector = Arc::new(Connector::new(None));
    // Keyed by the backend's allocation: a reload that keeps a backend keeps its schedule.
    let mut due: HashMap<usize, Instant> = HashMap::new();
    let mut probing: HashMap<usize, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut wake = Instant::now();
    loop {
        tokio::time::sleep_until(wake.into()).await;
        let generation = current.load_full();
        let now = Instant::now();
        let mut next_look = now + IDLE_LOOK;
        probing.retain(|_, task| !task.is_finished());
        let mut seen = HashSet::new();
        for upstream in generation.upstreams.values() {
            let Some(check) = &upstream.policy.health_check else { continue };
            for backend in &upstream.backends {
                let key = Arc::as_ptr(backend) as usize;
                seen.insert(key);
                let next = due.entry(key).or_insert(now);
                if *next > now || probing.contains_key(&key) {
                    next_look = next_look.min(*next);
                    continue;
                }
                *next = now + check.interval;
                next_look = next_look.min(*next);
                let (backend, check, connector) = (backend.clone(), check.clone(), connector.clone());
                let (upstream_name, tls) = (upstream.name.clone(), upstream.tls.clone());
                probing.insert(
                    key,
                    tokio::spawn(async move {
                        probe_and_record(&connector, &upstream_name, tls.as_ref(), &backend, &check).await
                    }),
                );
            }
        }
        due.retain(|key, _| seen.contains(key));
        // A probe still running past its next due time is looked at again a tick later.
        wake = next_look.max(now + TICK);
    }
}

async fn probe_and_record(
    connector: &Connector,
    upstream: &str,
    tls: Option<&UpstreamTlsSettings>,
    backend: &Backend,
    check: &HealthCheck,
) {
    let mut address = backend.address;
    if let Some(port) = check.port {
        address.set_port(port);
    }
    let result = match tokio::time::timeout(check.timeout, probe(connector, tls, address, &backend.label, check)).await
    {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", check.timeout.as_millis())),
    };
    let passed = result.is_ok();
    match backend.record_probe(passed, check.healthy_threshold, check.unhealthy_threshold) {
        Some(true) => {
            tracing::warn!(upstream, backend = %backend.label, "healthy again: {} probes passed", check.healthy_threshold)
        }
        Some(false) => tracing::warn!(
            upstream,
            backend = %backend.label,
            "unhealthy after {} failed probes; the last: {}",
            check.unhealthy_threshold,
            result.err().unwrap_or_default()
        ),
        None => {
            if let Err(e) = result {
                tracing::debug!(upstream, backend = %backend.label, "probe failed: {e}");
            }
        }
    }
}

/// What `POST /api/v1/backends/{id}/health` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    /// `http` or `tcp` (a connection opened): the upstream's check, or `tcp` without one.
    pub kind: &'static str,
    pub passed: bool,
    /// Why it failed.
    pub detail: Option<String>,
    pub took_ms: f64,
    /// The backend's verdict after this probe (it counts towards the thresholds like any other).
    pub healthy: bool,
}

/// Probes backend `i` of `upstream` now with its health check (a TCP connect within 2 s when it
/// has none). With a health check, the result counts like a scheduled probe's.
pub async fn probe_now(upstream: &Upstream, i: usize) -> ProbeReport {
    let backend = &upstream.backends[i];
    let started = Instant::now();
    let (kind, result) = match &upstream.policy.health_check {
        Some(check) => {
            let connector = Connector::new(None);
            let mut address = backend.address;
            if let Some(port) = check.port {
                address.set_port(port);
            }
            let kind = if matches!(check.probe, Probe::Http { .. }) { "http" } else { "tcp" };
            let result = match tokio::time::timeout(
                check.timeout,
                probe(&connector, upstream.tls.as_ref(), address, &backend.label, check),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {} ms", check.timeout.as_millis())),
            };
            backend.record_probe(result.is_ok(), check.healthy_threshold, check.unhealthy_threshold);
            (kind, result)
        }
        None => {
            let connect = tokio::net::TcpStream::connect(backend.address);
            let result = match tokio::time::timeout(Duration::from_secs(2), connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect: {e}")),
                Err(_) => Err("connect: no answer within 2000 ms".to_string()),
            };
            ("tcp", result)
        }
    };
    let took_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    let healthy = upstream.available(i, super::now_ms());
    ProbeReport { kind, passed: result.is_ok(), detail: result.err(), took_ms, healthy }
}

/// One probe: `Ok` when it passed, else why not.
async fn probe(
    connector: &Connector,
    tls: Option<&UpstreamTlsSettings>,
    address: SocketAddr,
    label: &str,
    check: &HealthCheck,
) -> Result<(), String> {
    let Probe::Http { method, path, host, status, body } = &check.probe else {
        return tokio::net::TcpStream::connect(address).await.map(drop).map_err(|e| format!("connect: {e}"));
    };
    let mut peer = match tls {
        Some(tls) => tls.peer(address, label),
        None => HttpPeer::new(address, false, String::new()),
    };
    peer.options.connection_timeout = Some(check.timeout);
    peer.options.read_timeout = Some(check.timeout);
    peer.options.write_timeout = Some(check.timeout);
    let (mut session, _reused) = connector.get_http_session(&peer).await.map_err(|e| format!("connect: {e}"))?;
    let mut request = RequestHeader::build(method.as_str(), path.as_bytes(), Some(3)).map_err(|e| e.to_string())?;
    let host = host.as_deref().unwrap_or(label);
    request.insert_header("host", host).map_err(|e| e.to_string())?;
    request.insert_header("user-agent", "switchyard-health-check").map_err(|e| e.to_string())?;
    request.insert_header("connection", "close").map_err(|e| e.to_string())?;
    session.write_request_header(Box::new(request)).await.map_err(|e| format!("send: {e}"))?;
    session.finish_request_body().await.map_err(|e| format!("send: {e}"))?;
    session.read_response_header().await.map_err(|e| format!("response: {e}"))?;
    let code = session.response_header().map_or(0, |r| r.status.as_u16());
    if !(status.0..=status.1).contains(&code) {
        return Err(format!("status {code}, expected {}-{}", status.0, status.1));
    }
    let Some(expected) = body else { return Ok(()) };
    let mut read = Vec::new();
    while read.len() < MAX_BODY {
        match session.read_response_body().await.map_err(|e| format!("body: {e}"))? {
            Some(chunk) => read.extend_from_slice(&chunk),
            None => break,
        }
    }
    let text = String::from_utf8_lossy(&read[..read.len().min(MAX_BODY)]);
    if text.contains(expected.as_str()) { Ok(()) } else { Err(format!("the body does not contain {expected:?}")) }
}
