//! Client connections, around Pingora's HTTP application: how many may be open at once, how
//! long one may take to deliver a request head or sit idle between requests, and the late
//! clean-up at shutdown.
//!
//! Pingora reads a request head with a timeout per read, so a client sending one byte every
//! second would hold its connection for as long as it likes (slowloris). Here each request's
//! whole head has a deadline: [`ClientLimits::head_timeout`] on a new connection, plus
//! [`ClientLimits::idle_timeout`] on a kept-alive one (whose wait for the next request counts
//! too). The proxy says when a head is read ([`head_received`]) and when a request is done
//! ([`request_done`]); a connection whose head is not in by its deadline is closed.
//!
//! Each HTTP/1 connection's bytes go through the strict parser ([`super::strict`]) unless it
//! came through a lenient listener; the proxy tells it when requests end and when one became a
//! tunnel ([`request_done`], [`upgraded`]).
//!
//! At shutdown Pingora closes every connection still waiting for a request head the moment it
//! stops accepting, including one accepted a moment earlier whose request is on its way: that
//! client would get a reset (seen in the upgrade test, about one request in a few hundred). The
//! clean-up is delayed by [`HEAD_WAIT`] so such connections deliver their request and are served
//! (with `Connection: close`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::apps::ServerApp;
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;

use super::limits::ClientLimits;
use super::strict::{self, ConnectionProgress, StrictStream};
use crate::generation::Generation;
use crate::upstream::now_ms;

/// How long connections accepted before the listener closed may take to send a request head.
pub const HEAD_WAIT: Duration = Duration::from_secs(1);

tokio::task_local! {
    static HEAD: Arc<HeadState>;
}

/// Where a connection is: reading a request head since some time, or serving a request.
#[derive(Debug)]
struct HeadState {
    /// [`now_ms`] + 1 when the connection started waiting for a head; 0 while a request is served.
    waiting_since: AtomicU64,
    /// Whether a request was served on this connection (the next head may take the idle time too).
    reused: AtomicBool,
    /// What the strict parser learns about the requests it handed on.
    progress: Arc<ConnectionProgress>,
}

impl HeadState {
    /// When the head being waited for is late, or `None` while a request is served.
    fn deadline_ms(&self, limits: &ClientLimits) -> Option<u64> {
        let since = self.waiting_since.load(Ordering::Relaxed).checked_sub(1)?;
        let mut allowed = limits.head_timeout;
        if self.reused.load(Ordering::Relaxed) {
            allowed += limits.idle_timeout;
        }
        Some(since + allowed.as_millis() as u64)
    }
}

/// Called by the proxy once a request head is parsed: the head deadline is met.
pub fn head_received() {
    let _ = HEAD.try_with(|state| state.waiting_since.store(0, Ordering::Relaxed));
}

/// Called by the proxy when a request ends: a kept-alive connection now waits for the next head.
pub fn request_done() {
    let _ = HEAD.try_with(|state| {
        state.reused.store(true, Ordering::Relaxed);
        state.waiting_since.store(now_ms() + 1, Ordering::Relaxed);
        state.progress.request_done();
    });
}

/// Called by the proxy when the response to an upgrade request is a 101: the connection is a
/// tunnel from now on.
pub fn upgraded() {
    let _ = HEAD.try_with(|state| state.progress.upgraded());
}

/// Pingora's HTTP application `A` with connection limits and a late shutdown clean-up.
pub struct ConnectionGuard<A> {
    inner: Arc<A>,
    current: Arc<ArcSwap<Generation>>,
    /// Connections being served now.
    open: Arc<AtomicUsize>,
}

/// Counts one open connection until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<A> ConnectionGuard<A> {
    /// Guards `inner` with the limits of whatever generation `current` holds, counting its open
    /// connections in `open`.
    pub fn new(inner: Arc<A>, current: Arc<ArcSwap<Generation>>, open: Arc<AtomicUsize>) -> Self {
        ConnectionGuard { inner, current, open }
    }
}

#[async_trait::async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionGuard<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // One call per connection: Pingora serves a kept-alive connection's requests inside it.
        let max_connections = self.current.load().limits.max_connections;
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        let _counted = OpenConnection(self.open.clone());
        if open >= max_connections {
            tracing::warn!("{open} client connections are open, the most allowed; closing a new one");
            return None;
        }
        let generation = self.current.load();
        let progress = Arc::new(ConnectionProgress::default());
        let local = stream.get_socket_digest().and_then(|d| d.local_addr().and_then(|a| a.as_inet().copied()));
        let http2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let stream: Stream = if http2 || strict::is_lenient(&generation.lenient_listeners, local) {
            stream
        } else {
            Box::new(StrictStream::new(stream, generation.limits.max_header_bytes, progress.clone()))
        };
        drop(generation);
        let state = Arc::new(HeadState {
            waiting_since: AtomicU64::new(now_ms() + 1),
            reused: AtomicBool::new(false),
            progress,
        });
        let request = HEAD.scope(state.clone(), self.inner.process_new(stream, shutdown));
        tokio::pin!(request);
        // Pingora serves every request of a kept-alive connection inside this one call, so the
        // deadline is looked at again whenever it could have passed.
        loop {
            let limits = self.current.load().limits.clone();
            let now = now_ms();
            let wait = match state.deadline_ms(&limits) {
                Some(deadline) if deadline <= now => {
                    tracing::info!("closing a client connection whose request head did not arrive in time");
                    return None;
                }
                Some(deadline) => Duration::from_millis(deadline - now),
                None => limits.head_timeout,
            };
            tokio::select! {
                // The request is what usually wakes this task: look at it first.
                biased;
                next = &mut request => return next,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn cleanup(&self) {
        tokio::time::sleep(HEAD_WAIT).await;
        self.inner.cleanup().await;
    }
}
