//! The Pingora `ProxyHttp` implementation: maps Pingora's phases onto the plugin roles and
//! plugin or upstream failures onto statuses.
//!
//! ```text
//! request_filter:  global request filters → router → site/route request filters → split → rewrite
//! upstream_peer:   balancer over the upstream's candidates (tag-filtered, untried)
//! response_filter: route, site, then global response filters (also run on the proxy's own
//!                  replies: 404s, filter answers)
//! ```
//! The request head is moved into a [`RequestView`] for each group of plugin calls and moved back
//! afterwards, so plugins read and change the live head without copies.

pub mod connection;
pub mod core_answers;
mod hop;
pub mod limits;
pub mod server;
pub mod shutdown;
pub mod strict;
pub mod systemd;
pub mod tcp;
pub mod upgrade;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraSocketAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::admin::traffic::{NONE, Recorder, Traffic};
use crate::generation::{Generation, Link, RouteSettings};
use crate::plugin::{FilterAction, LocalResponse, PluginError, RequestView, SplitChoice};
use crate::tls::TlsRuntime;
use crate::upstream::{InFlight, Upstream};

/// The context key where the split's choice is left for later plugins and the access log.
pub const SPLIT_VARIANT_CONTEXT_KEY: &str = switchyard_sdk::SPLIT_VARIANT_CONTEXT_KEY;

/// The proxy: the current generation, swapped whole on reload.
pub struct SwitchyardProxy {
    current: Arc<ArcSwap<Generation>>,
    requests: Arc<RequestCount>,
    tls: Arc<TlsRuntime>,
}

impl SwitchyardProxy {
    /// A proxy serving whatever generation `current` holds at each request's start, counting
    /// its requests in progress in `requests`.
    pub fn new(current: Arc<ArcSwap<Generation>>, requests: Arc<RequestCount>) -> Self {
        SwitchyardProxy { current, requests, tls: Arc::default() }
    }

    /// The TLS state whose ACME challenges the proxy answers.
    pub fn with_tls_runtime(mut self, tls: Arc<TlsRuntime>) -> Self {
        self.tls = tls;
        self
    }
}

/// The number of requests in progress (WebSockets and other upgraded connections included
/// until they close), which a stopping process waits to reach zero.
#[derive(Debug, Default)]
pub struct RequestCount(AtomicUsize);

impl RequestCount {
    /// Requests in progress now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one request (or connection) in progress until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> RequestGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }
}

/// Counts one request in progress until dropped with its context.
pub struct RequestGuard(Arc<RequestCount>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-request state.
pub struct RequestCtx {
    generation: Arc<Generation>,
    /// Holds a placeholder head except while plugins run.
    view: RequestView,
    route: Option<String>,
    upstream: Option<Arc<Upstream>>,
    tag: Option<String>,
    /// Indices of backends already tried for this request.
    tried: Vec<usize>,
    in_flight: Option<InFlight>,
    upstream_started: Option<Instant>,
    started: Instant,
    /// Request body bytes read so far, against the route's `max_body_bytes`.
    body_read: u64,
    max_body_bytes: Option<u64>,
    /// Time spent running plugins for this request (router, filters, split, balancer).
    plugin_time: std::time::Duration,
    _counted: RequestGuard,
}

impl RequestCtx {
    /// Indices of `upstream`'s backends this request may still go to: available (healthy, not
    /// ejected, not draining), carrying the split's tag, if any, and not tried yet.
    fn untried_candidates<'a>(&'a self, upstream: &'a Upstream) -> impl Iterator<Item = usize> + 'a {
        let now = crate::upstream::now_ms();
        upstream.backends.iter().enumerate().filter_map(move |(i, b)| {
            let eligible = !self.tried.contains(&i)
                && self.tag.as_ref().is_none_or(|t| b.tags.contains(t))
                && upstream.available(i, now);
            eligible.then_some(i)
        })
    }

    /// When the upstream's `total_ms` runs out.
    fn deadline(&self) -> Option<Instant> {
        self.upstream.as_ref()?.policy.timeouts.total.map(|t| self.started + t)
    }

    /// The route's settings, or the fallback's before a route is known.
    fn route_settings(&self) -> &RouteSettings {
        self.route.as_ref().and_then(|r| self.generation.routes.get(r)).unwrap_or(&self.generation.fallback_route)
    }

    /// Ends the attempt in flight: its upstream and backend index, if one was in flight.
    fn end_attempt(&mut self) -> Option<(&Upstream, usize)> {
        self.in_flight.take()?;
        Some((self.upstream.as_deref()?, *self.tried.last()?))
    }

    /// Ends the current attempt as failed, counting it against its backend.
    fn attempt_failed(&mut self) {
        if let Some((upstream, i)) = self.end_attempt() {
            upstream.record_failure(i);
        }
    }

    /// Whether a failed attempt may be tried again: another candidate is left, the upstream's
    /// `max_retries` is not used up, and its retry budget has a token (which this takes).
    fn may_retry(&self) -> bool {
        let Some(upstream) = &self.upstream else { return false };
        let retry = self.tried.len() <= upstream.policy.retries.max_retries as usize
            && self.deadline().is_none_or(|d| Instant::now() < d)
            && self.untried_candidates(upstream).next().is_some()
            && upstream.retry_budget.withdraw();
        if retry {
            Traffic::global().retries.with_label_values(&[&upstream.name]).inc();
        }
        retry
    }

    /// The recorder of this request's site, route and upstream.
    fn recorder(&self) -> Arc<Recorder> {
        let settings = self.route_settings();
        let upstream = self.upstream.as_ref().map_or(NONE, |u| u.name.as_str());
        let route = self.route.as_deref().unwrap_or(NONE);
        if settings.recorder.upstream == upstream && settings.recorder.route == route {
            return settings.recorder.clone();
        }
        // A split's other upstream, or a route a custom router named that the file does not have.
        Traffic::global().recorder(&settings.site, route, upstream)
    }
}

/// Why no backend of `upstream` can take a new request, for the 503's body.
fn none_available(upstream: &Upstream, tag: Option<&str>) -> String {
    let now = crate::upstream::now_ms();
    let in_variant: Vec<usize> = (0..upstream.backends.len())
        .filter(|&i| tag.is_none_or(|t| upstream.backends[i].tags.iter().any(|x| x == t)))
        .collect();
    let count = |f: &dyn Fn(usize) -> bool| in_variant.iter().filter(|&&i| f(i)).count();
    let draining = count(&|i| upstream.draining[i]);
    let unhealthy = count(&|i| upstream.policy.health_check.is_some() && !upstream.backends[i].healthy());
    let ejected = count(&|i| upstream.backends[i].ejected(now));
    let variant = tag.map(|t| format!(" tagged `{t}`")).unwrap_or_default();
    format!(
        "no healthy backend in upstream `{}`{variant}: {} backend(s), {unhealthy} failing health checks, {ejected} ejected after failures, {draining} draining",
        upstream.name,
        in_variant.len()
    )
}

/// Shows a value, or `-` for none, without formatting it into a string of its own first.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// What the request phase decided.
enum Verdict {
    Proxy,
    Reply(LocalResponse),
}

fn text_reply(status: u16, message: &str) -> LocalResponse {
    LocalResponse {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: format!("{message}\n").into_bytes(),
    }
}

/// What a failed plugin means for the request: `None` to skip it (policy `open`), or the reply.
fn on_plugin_failure(error: &PluginError, closed_status: u16) -> Option<LocalResponse> {
    tracing::warn!(plugin = %error.plugin, policy = ?error.policy, "{error}");
    match error.policy {
        crate::plugin::FailurePolicy::Open => None,
        crate::plugin::FailurePolicy::Closed => {
            Some(text_reply(closed_status, &format!("plugin {} failed", error.plugin)))
        }
    }
}

fn swap_head(session: &mut Session, ctx: &mut RequestCtx) {
    std::mem::swap(session.req_header_mut(), &mut *ctx.view.head);
}

/// Records the split's choice for later plugins and the log, unless the split named its variant
/// itself.
fn note_variant(view: &mut RequestView, choice: &str) {
    if view.context(SPLIT_VARIANT_CONTEXT_KEY).is_none() {
        view.set_context(SPLIT_VARIANT_CONTEXT_KEY, choice);
    }
}

fn run_request_filters(
    chain: &[Link<dyn crate::plugin::RequestFilterRole>],
    view: &mut RequestView,
) -> Option<LocalResponse> {
    for link in chain {
        match link.role.on_request(view) {
            Ok(FilterAction::Continue) => {}
            Ok(FilterAction::Respond(reply)) => return Some(reply),
            Err(e) => {
                if let Some(reply) = on_plugin_failure(&e, 500) {
                    return Some(reply);
                }
            }
        }
    }
    None
}

impl SwitchyardProxy {
    /// The request phase's plugin calls, with the head in `ctx.view`.
    fn decide(&self, ctx: &mut RequestCtx) -> Verdict {
        let generation = ctx.generation.clone();
        if let Some(reply) = run_request_filters(&generation.request_filters, &mut ctx.view) {
            return Verdict::Reply(reply);
        }
        let decision = match generation.router.role.route(&mut ctx.view) {
            Ok(Some(decision)) => decision,
            Ok(None) => return Verdict::Reply(text_reply(404, "no route matches this request")),
            Err(e) => {
                return Verdict::Reply(
                    on_plugin_failure(&e, 500).unwrap_or_else(|| text_reply(404, "no route matches this request")),
                );
            }
        };
        let Some(upstream) = generation.upstreams.get(&decision.upstream) else {
            tracing::warn!(route = %decision.name, upstream = %decision.upstream, "the router chose an unknown upstream");
            return Verdict::Reply(text_reply(502, "the route's upstream is not configured"));
        };
        ctx.upstream = Some(upstream.clone());
        let settings: &RouteSettings = generation.routes.get(&decision.name).unwrap_or(&generation.fallback_route);
        ctx.route = Some(decision.name);
        {
            if let Some(reply) = run_request_filters(&settings.request_filters, &mut ctx.view) {
                return Verdict::Reply(reply);
            }
            if let Some(split) = &settings.split {
                match split.role.choose(&mut ctx.view, &upstream.name) {
                    Ok(Some(SplitChoice::Tag(tag))) => {
                        note_variant(&mut ctx.view, &tag);
                        ctx.tag = Some(tag);
                    }
                    Ok(Some(SplitChoice::Upstream(name))) => match generation.upstreams.get(&name) {
                        Some(other) => {
                            note_variant(&mut ctx.view, &name);
                            ctx.upstream = Some(other.clone());
                        }
                        None => {
                            tracing::warn!(plugin = %split.name, upstream = %name, "the split chose an unknown upstream");
                            return Verdict::Reply(text_reply(502, "the split's upstream is not configured"));
                        }
                    },
                    Ok(None) => {}
                    Err(e) => {
                        if let Some(reply) = on_plugin_failure(&e, 500) {
                            return Verdict::Reply(reply);
                        }
                    }
                }
            }
        }
        if let Some(rewrite) = decision.rewrite
            && let Err(e) = ctx.view.set_path_and_query(&rewrite)
        {
            tracing::warn!(route = ?ctx.route, "invalid rewrite from the router: {e}");
            return Verdict::Reply(text_reply(500, "the route's rewrite is invalid"));
        }
        Verdict::Proxy
    }
}

/// The response head of a reply the proxy makes itself.
fn local_reply_head(reply: &LocalResponse) -> Result<ResponseHeader> {
    let mut head = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
    for (name, value) in &reply.headers {
        match crate::plugin::checked_response_header(name, value) {
            Ok((name, value)) => head.append_header(name, value).map(|_| ())?,
            Err(e) => tracing::warn!("dropping a header from a local reply: {e}"),
        }
    }
    head.insert_header(http::header::CONTENT_LENGTH, reply.body.len())?;
    Ok(head)
}

/// How much of an unread request body is read and dropped around an early answer, and for how
/// long.
const DRAIN_LIMIT: usize = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// The request's `Content-Length`, if it declares a valid one.
fn declared_length(request: &RequestHeader) -> Option<u64> {
    request.headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads and drops up to [`DRAIN_LIMIT`] bytes of the request body, for at most [`DRAIN_TIME`].
async fn drain_body(session: &mut Session) {
    let mut drained = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while drained < DRAIN_LIMIT {
            match session.read_request_body().await {
                Ok(Some(chunk)) => drained += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
    })
    .await;
}

/// Sends a reply the proxy makes itself (a filter's answer, 404, 413, a redirect). A request
/// body that was not read would be taken for the next request on a kept-alive connection, so
/// before answering, a bounded body is read and dropped: when all of it was, the connection
/// stays open. Otherwise (a body over [`DRAIN_LIMIT`], a slow one, or a client waiting for
/// `100 Continue`) the connection closes after the answer; before closing, some more is read
/// and dropped, because closing a socket with unread data resets the connection, and the reset
/// can destroy the answer before the client reads it.
async fn write_local_reply(session: &mut Session, head: ResponseHeader, body: Vec<u8>) -> Result<()> {
    let mut unread_body = !session.is_body_empty() && !session.is_body_done();
    if unread_body {
        let request = session.req_header();
        let expects_continue = request
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let declared =
            request.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if !expects_continue && declared.is_none_or(|length| length <= DRAIN_LIMIT as u64) {
            drain_body(session).await;
            unread_body = !session.is_body_done();
        }
    }
    if unread_body {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(head), false).await?;
    session.write_response_body(Some(Bytes::from(body)), true).await?;
    if unread_body {
        drain_body(session).await;
    }
    Ok(())
}

/// Sends an error reply, bypassing the response filters.
async fn send_local_reply(session: &mut Session, reply: LocalResponse) -> Result<()> {
    let head = local_reply_head(&reply)?;
    write_local_reply(session, head, reply.body).await
}

/// Runs the response chain of the request's route (route, site, global filters and the header
/// policy), or the fallback chain before a route is known, on `response`. `Err` when a plugin
/// failed under the `closed` policy.
fn filter_response(session: &mut Session, ctx: &mut RequestCtx, response: &mut ResponseHeader) -> Result<(), ()> {
    let generation = ctx.generation.clone();
    let chain = match ctx.route.as_ref().and_then(|r| generation.routes.get(r)) {
        Some(settings) => &settings.response_filters,
        None => &generation.fallback_route.response_filters,
    };
    if chain.is_empty() {
        return Ok(());
    }
    swap_head(session, ctx);
    let plugins_started = Instant::now();
    let mut outcome = Ok(());
    for link in chain {
        if let Err(e) = link.role.on_response(&mut ctx.view, response)
            && on_plugin_failure(&e, 500).is_some()
        {
            outcome = Err(());
            break;
        }
    }
    ctx.plugin_time += plugins_started.elapsed();
    swap_head(session, ctx);
    outcome
}

fn status_error(status: u16, context: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(status), context)
}

#[async_trait]
impl ProxyHttp for SwitchyardProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            generation: self.current.load_full(),
            view: RequestView::default(),
            route: None,
            upstream: None,
            tag: None,
            tried: Vec::new(),
            in_flight: None,
            upstream_started: None,
            started: Instant::now(),
            body_read: 0,
            max_body_bytes: None,
            plugin_time: std::time::Duration::ZERO,
            _counted: self.requests.enter(),
        }
    }

    /// The head is in: the connection's head deadline is met. A head over the client limits is
    /// answered 431 (and the connection closed).
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        connection::head_received();
        if let Some(problem) = ctx.generation.limits.head_problem(session.req_header()) {
            return Err(Error::explain(ErrorType::HTTPStatus(431), problem));
        }
        Ok(())
    }

    /// Runs the global filters, the router, the route's filters and split. Returns `Ok(true)`
    /// when a reply was sent (404, a filter's answer, a plugin failure).
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.view.client_ip = match session.client_addr() {
            Some(PingoraSocketAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        };
        ctx.view.server_port = match session.server_addr() {
            Some(PingoraSocketAddr::Inet(addr)) => addr.port(),
            _ => 0,
        };
        ctx.view.https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if let Some(reply) = core_answers::answer(&ctx.generation.tls, &self.tls, session.req_header(), ctx.view.https)
        {
            send_local_reply(session, reply).await?;
            return Ok(true);
        }
        swap_head(session, ctx);
        for name in hop::connection_nominated(&ctx.view.head.headers) {
            ctx.view.head.remove_header(&name);
        }
        let plugins_started = Instant::now();
        let verdict = self.decide(ctx);
        ctx.plugin_time += plugins_started.elapsed();
        swap_head(session, ctx);
        match verdict {
            Verdict::Proxy => {
                ctx.max_body_bytes = ctx.route_settings().max_body_bytes;
                if let (Some(limit), Some(length)) = (ctx.max_body_bytes, declared_length(session.req_header()))
                    && length > limit
                {
                    // The body is not read: the connection closes after the answer.
                    let reply = text_reply(
                        413,
                        &format!("the request body of {length} bytes is over this route's limit of {limit}"),
                    );
                    send_local_reply(session, reply).await?;
                    return Ok(true);
                }
                Ok(false)
            }
            Verdict::Reply(reply) => {
                // The proxy's own answers (404, a filter's reply) get the same response policy as
                // proxied ones: security headers, response edits.
                let mut head = local_reply_head(&reply)?;
                if filter_response(session, ctx, &mut head).is_err() {
                    // A filter failed on a reply the proxy made: send the reply as it was made.
                    head = local_reply_head(&reply)?;
                }
                write_local_reply(session, head, reply.body).await?;
                Ok(true)
            }
        }
    }

    /// Pingora removes the fields the client's `Connection` header names, `Content-Length`
    /// included, and would then send the body chunked. A declared length (which the strict
    /// parser has checked, and which no plugin can change) is put back, so a `Connection` header
    /// never changes how the body is framed.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let downstream = session.req_header();
        if !upstream_request.headers.contains_key(http::header::CONTENT_LENGTH)
            && !downstream.headers.contains_key(http::header::TRANSFER_ENCODING)
            && let Some(length) = downstream.headers.get(http::header::CONTENT_LENGTH)
        {
            upstream_request.insert_header(http::header::CONTENT_LENGTH, length.clone())?;
        }
        Ok(())
    }

    /// Asks the balancer for one of the upstream's candidates not tried yet for this request.
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let Some(upstream) = ctx.upstream.clone() else {
            return Err(status_error(500, "no upstream chosen"));
        };
        let deadline = ctx.deadline();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(status_error(504, "the upstream's total_ms ran out"));
        }
        let offered: Vec<usize> = ctx.untried_candidates(&upstream).collect();
        if offered.is_empty() {
            return Err(if ctx.tried.is_empty() {
                Error::explain(ErrorType::HTTPStatus(503), none_available(&upstream, ctx.tag.as_deref()))
            } else {
                status_error(502, "every backend tried failed")
            });
        }
        if ctx.tried.is_empty() {
            upstream.retry_budget.deposit(upstream.policy.retries.budget_percent);
        }
        let picked = if offered.len() == 1 {
            // One candidate: nothing to choose, so no call (as the balancer contract says).
            Ok(0)
        } else {
            let candidates: Vec<_> = offered.iter().map(|&i| upstream.backends[i].candidate()).collect();
            swap_head(session, ctx);
            let plugins_started = Instant::now();
            let picked = upstream.balancer.pick(&mut ctx.view, &upstream.name, &candidates);
            ctx.plugin_time += plugins_started.elapsed();
            swap_head(session, ctx);
            picked
        };
        let choice = match picked {
            Ok(i) => offered[i],
            Err(e) => match e.policy {
                crate::plugin::FailurePolicy::Open => {
                    tracing::warn!(plugin = %e.plugin, "{e}; using the least busy backend");
                    offered
                        .iter()
                        .copied()
                        .min_by_key(|&i| upstream.backends[i].candidate().in_flight)
                        .unwrap_or(offered[0])
                }
                crate::plugin::FailurePolicy::Closed => {
                    tracing::warn!(plugin = %e.plugin, "{e}");
                    return Err(status_error(503, "balancer plugin failed"));
                }
            },
        };
        let backend = &upstream.backends[choice];
        ctx.tried.push(choice);
        ctx.in_flight = Some(backend.start_request());
        let now = Instant::now();
        ctx.upstream_started = Some(now);
        let timeouts = &upstream.policy.timeouts;
        // No single wait outlasts the whole request's deadline.
        let capped = |t: std::time::Duration| Some(deadline.map_or(t, |d| t.min(d.saturating_duration_since(now))));
        let mut peer = match &upstream.tls {
            None => HttpPeer::new(backend.address, false, String::new()),
            Some(tls) => tls.peer(backend.address, &backend.label),
        };
        peer.options.connection_timeout = capped(timeouts.connect);
        peer.options.read_timeout = capped(timeouts.read);
        peer.options.write_timeout = capped(timeouts.write);
        peer.options.idle_timeout = Some(timeouts.idle);
        Ok(Box::new(peer))
    }

    /// A failed connection counts against the backend and is retried on another one (a
    /// connection that never opened carried nothing, so any method is safe to retry) within the
    /// upstream's retry limits.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.attempt_failed();
        e.set_retry(ctx.may_retry());
        e
    }

    /// A failure after connecting counts against the backend, unless the client caused it
    /// (hung up, broke its request), which ends the attempt uncounted. It is retried on another one
    /// only before any of the response reached the client, for an idempotent method whose body
    /// can be sent again, and only when the failure is one the backend cannot have acted on (a
    /// pooled connection that turned out closed), or `retries.idempotent` is set.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("backend {}", peer._address));
        if *e.esource() == ErrorSource::Downstream {
            // The client hung up or broke its side: nothing to hold against the backend (the
            // attempt ends uncounted in `logging`), and nobody to retry for.
            e.set_retry(false);
            return e;
        }
        ctx.attempt_failed();
        e.retry.decide_reuse(client_reused);
        let unseen_by_backend = e.retry();
        let retry_any = ctx.upstream.as_ref().is_some_and(|u| u.policy.retries.idempotent);
        let replayable = session.response_written().is_none()
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        e.set_retry(replayable && (unseen_by_backend || retry_any) && ctx.may_retry());
        e
    }

    /// Counts the request body against the route's `max_body_bytes` (for bodies without a
    /// Content-Length, or longer than it said): over the limit, the request ends with 413 if no
    /// response has started.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(limit), Some(chunk)) = (ctx.max_body_bytes, body.as_ref()) {
            ctx.body_read += chunk.len() as u64;
            if ctx.body_read > limit {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    format!("the request body is over this route's limit of {limit} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// Enforces the upstream's `total_ms` while the response body streams.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.deadline().is_some_and(|d| Instant::now() >= d) {
            return Err(Error::explain(ErrorType::ReadTimedout, "the upstream's total_ms ran out during the response"));
        }
        Ok(None)
    }

    /// Runs the response filters: the route's, the site's, then the global ones.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for name in hop::connection_nominated(&upstream_response.headers) {
            upstream_response.remove_header(&name);
        }
        if filter_response(session, ctx, upstream_response).is_err() {
            return Err(status_error(500, "response filter plugin failed"));
        }
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // What the client sends from now on is the tunnel's, not requests.
            connection::upgraded();
        }
        Ok(())
    }

    /// Writes a short plain-text reply for a failure before the response started.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut RequestCtx) -> FailToProxy {
        let framing = strict::body_violation(e.root_cause());
        let code = match e.etype() {
            _ if framing.is_some() => framing.map_or(400, |v| v.status),
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => match e.esource() {
                ErrorSource::Upstream => 504,
                _ => 408,
            },
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            // The connection closes after this answer: say so, so no client sends another
            // request on it.
            session.set_keepalive(None);
            let message = match (framing, e.context.as_ref()) {
                (Some(violation), _) => violation.detail.to_string(),
                (None, Some(context)) => context.as_str().to_string(),
                (None, None) => e.etype().as_str().to_string(),
            };
            if let Err(write_error) = send_local_reply(session, text_reply(code, &message)).await {
                tracing::debug!("could not send the error reply: {write_error}");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// Records the backend's outcome and writes the access log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        connection::request_done();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let upstream_started = ctx.upstream_started;
        if let Some((upstream, i)) = ctx.end_attempt() {
            // A client that hung up (or broke its request) tells nothing about the backend:
            // counting it as a failure let a load generator's closing connections eject every
            // backend of a variant.
            let client_side = e.is_some_and(|e| *e.esource() == ErrorSource::Downstream);
            if status >= 500 || (e.is_some() && !client_side) {
                upstream.record_failure(i);
            } else if !client_side && let Some(started) = upstream_started {
                upstream.record_success(i, started.elapsed());
            }
        }
        let total = ctx.started.elapsed();
        let upstream_time = upstream_started.map(|s| s.elapsed());
        let recorder = ctx.recorder();
        recorder.record(status, total, upstream_time);
        let head = session.req_header();
        let backend = match (&ctx.upstream, ctx.tried.last()) {
            (Some(u), Some(&i)) => u.backends.get(i).map_or("-", |b| b.label.as_str()),
            _ => "-",
        };
        tracing::info!(
            target: "switchyard::access",
            client = %OrDash(session.client_addr()),
            method = %head.method,
            host = head.uri.host().or_else(|| head.headers.get(http::header::HOST).and_then(|h| h.to_str().ok())).unwrap_or("-"),
            path = %head.uri.path(),
            site = &*recorder.site,
            route = &*recorder.route,
            upstream = &*recorder.upstream,
            backend,
            variant = ctx.view.context(SPLIT_VARIANT_CONTEXT_KEY).unwrap_or("-"),
            status,
            attempts = ctx.tried.len(),
            duration_us = total.as_micros() as u64,
            upstream_us = upstream_time.map_or(0, |t| t.as_micros() as u64),
            plugin_us = ctx.plugin_time.as_micros() as u64,
            bytes_in = session.as_ref().body_bytes_read(),
            bytes_out = session.as_ref().body_bytes_sent(),
            error = e.map(|e| e.to_string()).unwrap_or_default(),
        );
    }
}
