//! `[[tcp]]` routes: an L4 proxy for databases and other non-HTTP services. Each accepted
//! connection goes to one backend of the route's upstream, picked by the upstream's balancer
//! among the available backends (health checks, ejection and drain apply, as for HTTP), and
//! bytes are copied both ways until either side closes.
//!
//! A backend that refuses the connection (or does not accept within the upstream's connect
//! timeout) counts as a failure and the next one is tried. The route's upstream is looked up
//! in the serving generation at each connection, so a reload can point a route elsewhere; the
//! listener itself is opened at start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::protocols::l4::socket::SocketAddr as PingoraSocketAddr;
use pingora::server::ShutdownWatch;
use tokio::net::TcpStream;

use super::RequestCount;
use crate::admin::Metrics;
use crate::generation::{Generation, TcpRoute};
use crate::plugin::RequestView;

/// The application behind one `[[tcp]]` listener.
pub struct TcpProxy {
    pub listen: SocketAddr,
    pub current: Arc<ArcSwap<Generation>>,
    pub metrics: Arc<Metrics>,
    /// Open connections count as requests in progress, so a graceful stop waits for them.
    pub requests: Arc<RequestCount>,
}

impl TcpProxy {
    /// Connects to a backend of `route`'s upstream: the balancer's pick first, then the
    /// others, skipping any that fail.
    async fn connect(
        generation: &Generation,
        route: &TcpRoute,
        client: Option<std::net::IpAddr>,
    ) -> Result<TcpStream, String> {
        let upstream = generation
            .upstreams
            .get(&route.upstream)
            .ok_or_else(|| format!("the upstream `{}` is gone", route.upstream))?;
        let now = crate::upstream::now_ms();
        let mut offered: Vec<usize> = (0..upstream.backends.len()).filter(|&i| upstream.available(i, now)).collect();
        if offered.is_empty() {
            return Err(format!("no backend of upstream `{}` is available", upstream.name));
        }
        if offered.len() > 1 {
            let candidates: Vec<_> = offered.iter().map(|&i| upstream.backends[i].candidate()).collect();
            let mut view = RequestView { client_ip: client, ..RequestView::default() };
            let first = match upstream.balancer.pick(&mut view, &upstream.name, &candidates) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(route = %route.name, "{e}; trying the backends in order");
                    0
                }
            };
            offered.swap(0, first);
        }
        let timeout = upstream.policy.timeouts.connect;
        for i in offered {
            let backend = &upstream.backends[i];
            let started = Instant::now();
            match tokio::time::timeout(timeout, TcpStream::connect(backend.address)).await {
                Ok(Ok(stream)) => {
                    upstream.record_success(i, started.elapsed());
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => tracing::warn!(route = %route.name, backend = %backend.label, "connect: {e}"),
                Err(_) => {
                    tracing::warn!(route = %route.name, backend = %backend.label, "connect: no answer within {timeout:?}")
                }
            }
            upstream.record_failure(i);
        }
        Err(format!("every backend of upstream `{}` failed", upstream.name))
    }
}

#[async_trait::async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(self: &Arc<Self>, mut downstream: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let _counted = self.requests.enter();
        let client = match downstream.get_socket_digest().and_then(|d| d.peer_addr().cloned()) {
            Some(PingoraSocketAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        };
        // The route is looked up at each connection, so a reload can point it elsewhere.
        let generation = self.current.load_full();
        let Some(route) = generation.tcp_routes.iter().find(|r| r.listen == self.listen) else {
            tracing::warn!("no [[tcp]] route listens on {} any more; closing the client connection", self.listen);
            return None;
        };
        let name = route.name.as_str();
        match Self::connect(&generation, route, client).await {
            Ok(mut upstream) => {
                self.metrics.tcp_total.with_label_values(&[name, "proxied"]).inc();
                let active = self.metrics.tcp_active.with_label_values(&[name]);
                active.inc();
                match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
                    Ok((up, down)) => tracing::debug!(route = %name, "closed after {up} bytes up, {down} down"),
                    Err(e) => tracing::debug!(route = %name, "closed: {e}"),
                }
                active.dec();
            }
            Err(e) => {
                self.metrics.tcp_total.with_label_values(&[name, "failed"]).inc();
                tracing::warn!(route = %name, "{e}; closing the client connection");
            }
        }
        None
    }
}
