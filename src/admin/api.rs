//! The management listener: a JSON API under `/api/v1` and Prometheus `/metrics`. The full
//! description is the OpenAPI document `docs/openapi.json`, also served at
//! `/api/v1/openapi.json`.
//!
//! It runs as its own Pingora service, so a graceful upgrade hands its socket over with the
//! proxy's. Every request passes the Host allow-list and, when a token is set, bearer
//! authentication ([`super::auth`]). Changes (domains, backends, switches, drains) are edits of
//! the configuration file, built and validated like a reload, written atomically and only then
//! swapped in ([`super::reload::Reloader::apply_edit`]); each is logged on the audit target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::{Value as Json, json};

use super::certs;
use super::edit::{self, BackendId, EditError, SwitchRequest};
use super::logs::{AUDIT_TARGET, LogFeed};
use super::metrics::Metrics;
use super::reload::{EditFailure, ReloadOutcome, ReloadRefused, Reloader, etag};
use super::traffic::{Traffic, WINDOW_SECONDS, WindowFigures};
use super::views;
use crate::generation::Generation;
use crate::proxy::RequestCount;
use crate::proxy::upgrade::Upgrader;

/// The largest request body the API reads (anything longer is refused).
const MAX_BODY: usize = 64 << 10;

/// How often an idle log stream gets a comment line, so proxies and clients keep it open.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// The admin HTTP application.
pub struct AdminApi {
    /// `None` for a process without a configuration file (the demo): nothing to reload or edit.
    pub reloader: Option<Arc<Reloader>>,
    /// `None` likewise: the demo cannot start itself again.
    pub upgrader: Option<Arc<Upgrader>>,
    pub metrics: Arc<Metrics>,
    pub requests: Arc<RequestCount>,
    pub current: Arc<ArcSwap<Generation>>,
    /// Where this listener is bound (its address is an allowed Host).
    pub listen: SocketAddr,
    /// Certificates and their ACME state.
    pub tls: Arc<crate::tls::TlsRuntime>,
}

/// A finished answer, or the log stream.
enum Answer {
    Full(Response<Vec<u8>>),
    LogStream { filter: Option<String>, recent: bool },
}

fn json_response(status: StatusCode, body: Json) -> Response<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", text.len())
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .body(text)
        .unwrap_or_default()
}

fn with_etag(mut response: Response<Vec<u8>>, tag: &str) -> Response<Vec<u8>> {
    if let Ok(value) = http::HeaderValue::from_str(tag) {
        response.headers_mut().insert(http::header::ETAG, value);
    }
    response
}

fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json_response(status, json!({ "status": "error", "message": message }))
}

/// Reads the request body, up to [`MAX_BODY`]; `None` if it is longer or broken.
async fn read_body(session: &mut ServerSession) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return None;
                }
            }
            Ok(None) => return Some(body),
            Err(_) => return None,
        }
    }
}

/// The methods a path answers to; `None` for no such path. `segments` follow `/api/v1`.
fn allowed_methods(segments: &[&str]) -> Option<&'static [&'static str]> {
    const GET: &[&str] = &["GET", "HEAD"];
    const POST: &[&str] = &["POST"];
    Some(match segments {
        [] | ["health"] | ["config"] | ["plugins"] | ["stats"] | ["openapi.json"] | ["logs", "stream"] => GET,
        ["reload"] | ["upgrade"] | ["domains", _, "switch"] | ["backends", _, "drain"] | ["backends", _, "health"] => {
            POST
        }
        ["domains"] | ["backends"] => &["GET", "HEAD", "POST"],
        ["domains", _] | ["backends", _] => &["GET", "HEAD", "PUT", "DELETE"],
        ["domains", _, "backends"] | ["certs"] | ["certs", _] => GET,
        ["certs", _, "renew"] => POST,
        _ => return None,
    })
}

/// What a refused reload or change reports: every problem with its place.
fn refused_json(refused: &ReloadRefused, what: &str) -> Json {
    let problems: Vec<_> = refused
        .0
        .0
        .iter()
        .map(|d| json!({ "file": d.file.display().to_string(), "line": d.line, "column": d.column, "message": d.message }))
        .collect();
    json!({
        "status": "refused",
        "message": format!("{what} refused, the running configuration keeps serving:\n{refused}"),
        "problems": problems,
    })
}

impl AdminApi {
    async fn reload(&self) -> Response<Vec<u8>> {
        let Some(reloader) = self.reloader.clone() else {
            return error(StatusCode::CONFLICT, "this process runs without a configuration file; nothing to reload");
        };
        // Compiling plugins takes a while: keep it off the listener's threads.
        match tokio::task::spawn_blocking(move || reloader.reload("admin API")).await {
            Ok(Ok(outcome)) => json_response(StatusCode::OK, json!({ "status": "reloaded", "reload": outcome })),
            Ok(Err(refused)) => json_response(StatusCode::UNPROCESSABLE_ENTITY, refused_json(&refused, "reload")),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the reload task failed: {e}")),
        }
    }

    async fn upgrade(&self) -> Response<Vec<u8>> {
        let Some(upgrader) = self.upgrader.clone() else {
            return error(
                StatusCode::CONFLICT,
                "this process runs without a configuration file; it cannot be upgraded",
            );
        };
        // The new process loads its configuration (and compiles plugins) before it is ready.
        match tokio::task::spawn_blocking(move || upgrader.upgrade("admin API")).await {
            Ok(Ok(started)) => json_response(
                StatusCode::OK,
                json!({ "status": "upgrading", "old_pid": started.old_pid, "new_pid": started.new_pid }),
            ),
            Ok(Err(message)) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("upgrade failed, this process keeps serving: {message}"),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the upgrade task failed: {e}")),
        }
    }

    /// Makes a change through the reloader; the answer on success is `ok` with what it returns.
    async fn change<T: Send + 'static>(
        &self,
        call: &Call,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<T, EditError> + Send + 'static,
        ok: impl FnOnce(T, ReloadOutcome) -> (StatusCode, Json),
    ) -> Response<Vec<u8>> {
        let Some(reloader) = self.reloader.clone() else {
            return error(
                StatusCode::CONFLICT,
                "this process runs without a configuration file (the demo); there is no file to change",
            );
        };
        let if_match = call.if_match.clone();
        let result =
            tokio::task::spawn_blocking(move || reloader.apply_edit("admin API", if_match.as_deref(), edit)).await;
        let (response, outcome) = match result {
            Err(e) => (error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the change task failed: {e}")), "failed"),
            Ok(Ok((value, reload))) => {
                let generation = reload.generation;
                let (status, body) = ok(value, reload);
                let tag = etag(&self.current.load().source_text);
                tracing::info!(
                    target: AUDIT_TARGET,
                    peer = %call.peer,
                    method = %call.method,
                    path = %call.path,
                    generation,
                    "admin change applied"
                );
                return with_etag(json_response(status, body), &tag);
            }
            Ok(Err(EditFailure::Stale(current))) => (
                with_etag(
                    error(
                        StatusCode::PRECONDITION_FAILED,
                        &format!("If-Match does not name the running configuration (now {current}); read it again"),
                    ),
                    &current,
                ),
                "stale",
            ),
            Ok(Err(EditFailure::FileChanged)) => (
                error(
                    StatusCode::CONFLICT,
                    "the configuration file was changed since it was loaded; reload it (POST /api/v1/reload) before changing it here, so neither change is lost",
                ),
                "conflict",
            ),
            Ok(Err(EditFailure::Edit(e))) => {
                let status = match e {
                    EditError::NotFound(_) => StatusCode::NOT_FOUND,
                    EditError::Conflict(_) => StatusCode::CONFLICT,
                    EditError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                };
                (error(status, &e.to_string()), "refused")
            }
            Ok(Err(EditFailure::Refused(refused))) => {
                (json_response(StatusCode::UNPROCESSABLE_ENTITY, refused_json(&refused, "the change was")), "invalid")
            }
            Ok(Err(EditFailure::Write(message))) => (error(StatusCode::INTERNAL_SERVER_ERROR, &message), "failed"),
        };
        tracing::warn!(
            target: AUDIT_TARGET,
            peer = %call.peer,
            method = %call.method,
            path = %call.path,
            outcome,
            status = response.status().as_u16(),
            "admin change not applied"
        );
        response
    }

    async fn dispatch(&self, call: &Call, segments: &[&str], body: Json) -> Answer {
        let generation = self.current.load_full();
        let tag = etag(&generation.source_text);
        let get = |value: Json| Answer::Full(with_etag(json_response(StatusCode::OK, value), &tag));
        let method = if call.method == "HEAD" { "GET" } else { call.method.as_str() };
        Answer::Full(match (method, segments) {
            ("GET", []) => {
                return get(json!({
                    "endpoints": views::ENDPOINTS,
                    "openapi": "/api/v1/openapi.json",
                    "metrics": "/metrics",
                }));
            }
            ("GET", ["health"]) => json_response(
                StatusCode::OK,
                json!({
                    "status": "ok",
                    "generation": self.reloader.as_ref().map_or(1, |r| r.generation_number()),
                    "requests_in_progress": self.requests.get(),
                }),
            ),
            ("GET", ["openapi.json"]) => {
                let text = OPENAPI.as_bytes().to_vec();
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .header("content-length", text.len())
                    .body(text)
                    .unwrap_or_default()
            }
            ("GET", ["config"]) => return get(views::config(&generation)),
            ("GET", ["plugins"]) => return get(views::plugins(&generation)),
            ("GET", ["stats"]) => json_response(StatusCode::OK, stats(call.query_value("window"))),
            ("GET", ["logs", "stream"]) => {
                return Answer::LogStream {
                    filter: call.query_value("filter").filter(|f| !f.is_empty()),
                    recent: call.query_value("recent").as_deref() != Some("false"),
                };
            }
            ("GET", ["domains"]) => return get(json!({ "domains": views::domains(&generation) })),
            ("GET", ["domains", host]) => match views::domain(&generation, host) {
                Some(domain) => return get(domain),
                None => error(StatusCode::NOT_FOUND, &format!("no site serves {host}")),
            },
            ("GET", ["domains", host, "backends"]) => match views::domain_backends(&generation, host) {
                Some(backends) => return get(backends),
                None => error(StatusCode::NOT_FOUND, &format!("no site serves {host}")),
            },
            ("GET", ["backends"]) => return get(json!({ "backends": views::backends(&generation) })),
            ("GET", ["backends", id]) => match views::backend(&generation, id) {
                Some(backend) => return get(backend),
                None => error(StatusCode::NOT_FOUND, &format!("no backend {id} (ids are <upstream>@<address>)")),
            },
            ("GET", ["certs"]) => return get(json!({ "certificates": certs::certificates(&generation, &self.tls) })),
            ("GET", ["certs", host]) => match certs::certificate(&generation, &self.tls, host) {
                Some(certificate) => return get(certificate),
                None => error(StatusCode::NOT_FOUND, &format!("no site serves {host}")),
            },
            ("POST", ["certs", host, "renew"]) => {
                let (status, answer) = certs::renew(&generation, &self.tls, host);
                tracing::info!(
                    target: AUDIT_TARGET,
                    peer = %call.peer,
                    method = "POST",
                    path = %format!("/api/v1/certs/{host}/renew"),
                    outcome = status.as_u16(),
                    "certificate renewal"
                );
                json_response(status, answer)
            }
            ("POST", ["reload"]) => self.reload().await,
            ("POST", ["upgrade"]) => self.upgrade().await,
            ("POST", ["domains"]) => {
                self.change(
                    call,
                    move |doc| edit::create_site(doc, &body),
                    |hosts, reload| {
                        (StatusCode::CREATED, json!({ "status": "created", "hosts": hosts, "reload": reload }))
                    },
                )
                .await
            }
            ("PUT", ["domains", host]) => {
                let host = host.to_string();
                self.change(
                    call,
                    move |doc| edit::put_site(doc, &host, &body),
                    |created, reload| {
                        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
                        let word = if created { "created" } else { "replaced" };
                        (status, json!({ "status": word, "reload": reload }))
                    },
                )
                .await
            }
            ("DELETE", ["domains", host]) => {
                let host = host.to_string();
                self.change(
                    call,
                    move |doc| edit::delete_host(doc, &host),
                    |deleted, reload| {
                        let removed = if deleted == edit::Deleted::Site { "site" } else { "host" };
                        (StatusCode::OK, json!({ "status": "deleted", "removed": removed, "reload": reload }))
                    },
                )
                .await
            }
            ("POST", ["domains", host, "switch"]) => {
                let request: SwitchRequest = match serde_json::from_value(body) {
                    Ok(r) => r,
                    Err(e) => {
                        return Answer::Full(error(StatusCode::UNPROCESSABLE_ENTITY, &format!("the switch: {e}")));
                    }
                };
                let host = host.to_string();
                self.change(
                    call,
                    move |doc| edit::switch(doc, &host, &request),
                    |changed, reload| {
                        (StatusCode::OK, json!({ "status": "switched", "changed": changed, "reload": reload }))
                    },
                )
                .await
            }
            ("POST", ["backends"]) => {
                self.change(
                    call,
                    move |doc| edit::add_backend(doc, &body),
                    |id, reload| {
                        (StatusCode::CREATED, json!({ "status": "created", "id": id.to_string(), "reload": reload }))
                    },
                )
                .await
            }
            // An id that is not `<upstream>@<address>` names no backend: 404, like an unknown one.
            ("PUT", ["backends", id]) => {
                let id = id.to_string();
                self.change(
                    call,
                    move |doc| edit::update_backend(doc, &BackendId::parse(&id)?, &body),
                    |id, reload| {
                        (StatusCode::OK, json!({ "status": "updated", "id": id.to_string(), "reload": reload }))
                    },
                )
                .await
            }
            ("DELETE", ["backends", id]) => {
                let id = id.to_string();
                self.change(
                    call,
                    move |doc| edit::delete_backend(doc, &BackendId::parse(&id)?),
                    |(), reload| (StatusCode::OK, json!({ "status": "deleted", "reload": reload })),
                )
                .await
            }
            ("POST", ["backends", id, "drain"]) => {
                let drain = match body.get("drain") {
                    None => true,
                    Some(Json::Bool(b)) => *b,
                    Some(_) => {
                        return Answer::Full(error(StatusCode::UNPROCESSABLE_ENTITY, "drain must be true or false"));
                    }
                };
                let id = id.to_string();
                self.change(
                    call,
                    move |doc| edit::set_drain(doc, &BackendId::parse(&id)?, drain),
                    move |(), reload| {
                        let word = if drain { "draining" } else { "serving" };
                        (StatusCode::OK, json!({ "status": word, "reload": reload }))
                    },
                )
                .await
            }
            ("POST", ["backends", id, "health"]) => match views::find_backend(&generation, id) {
                Some((upstream, i)) => {
                    let report = crate::upstream::health::probe_now(&upstream, i).await;
                    json_response(StatusCode::OK, json!({ "id": id, "probe": report }))
                }
                None => error(StatusCode::NOT_FOUND, &format!("no backend {id} (ids are <upstream>@<address>)")),
            },
            _ => error(StatusCode::NOT_FOUND, "no such endpoint (GET /api/v1 lists them)"),
        })
    }

    /// Checks and routes one request.
    async fn handle(&self, session: &mut ServerSession) -> Answer {
        let head = session.req_header();
        let header = |name: http::header::HeaderName| head.headers.get(name).and_then(|v| v.to_str().ok());
        let call = Call {
            method: head.method.as_str().to_string(),
            path: head.uri.path().to_string(),
            query: head.uri.query().map(str::to_string),
            if_match: header(http::header::IF_MATCH).map(str::to_string),
            peer: session.client_addr().map_or_else(|| "-".to_string(), |a| a.to_string()),
        };
        let host = head.uri.authority().map(|a| a.as_str()).or_else(|| header(http::header::HOST));
        let access = self.current.load().process.admin_access.clone();
        let host_allowed = access.host_allowed(host, self.listen);
        let authorized = access.authorized(head.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes()));
        let content_type = header(http::header::CONTENT_TYPE).map(str::to_string);
        if !host_allowed {
            // Refused before its body is read: the connection cannot be reused.
            session.set_keepalive(None);
            return Answer::Full(error(
                StatusCode::FORBIDDEN,
                "this Host is not one the admin API answers (add it to [admin] allowed_hosts)",
            ));
        }
        if !authorized {
            session.set_keepalive(None);
            let mut response = error(StatusCode::UNAUTHORIZED, "a valid Authorization: Bearer <token> is required");
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"switchyard\""));
            return Answer::Full(response);
        }
        let Some(raw_body) = read_body(session).await else {
            return Answer::Full(error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or incomplete"));
        };

        if call.path == "/metrics" {
            return Answer::Full(match call.method.as_str() {
                "GET" | "HEAD" => {
                    let text = self.metrics.render().into_bytes();
                    Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .header("content-length", text.len())
                        .body(text)
                        .unwrap_or_default()
                }
                _ => method_not_allowed(&["GET", "HEAD"]),
            });
        }
        let Some(rest) = call.path.strip_prefix("/api/v1").filter(|r| r.is_empty() || r.starts_with('/')) else {
            return Answer::Full(error(StatusCode::NOT_FOUND, "no such endpoint (see /api/v1 and /metrics)"));
        };
        let decoded: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
        let Some(methods) = allowed_methods(&segments) else {
            return Answer::Full(error(StatusCode::NOT_FOUND, "no such endpoint (GET /api/v1 lists them)"));
        };
        if !methods.contains(&call.method.as_str()) {
            return Answer::Full(method_not_allowed(methods));
        }
        let body = if matches!(call.method.as_str(), "GET" | "HEAD") {
            Json::Null
        } else {
            if let Some(problem) = super::auth::mutation_problem(&call.method, content_type.as_deref()) {
                return Answer::Full(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, problem));
            }
            if raw_body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                match serde_json::from_slice(&raw_body) {
                    Ok(value) => value,
                    Err(e) => {
                        return Answer::Full(error(StatusCode::BAD_REQUEST, &format!("the body is not JSON: {e}")));
                    }
                }
            }
        };
        self.dispatch(&call, &segments, body).await
    }

    /// Sends log lines as server-sent events until the client leaves or the process stops.
    async fn stream_logs(
        &self,
        session: &mut ServerSession,
        filter: Option<String>,
        recent: bool,
        shutdown: &ShutdownWatch,
    ) {
        let Ok(mut head) = ResponseHeader::build(200, Some(4)) else { return };
        for (name, value) in [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-store"),
            ("transfer-encoding", "chunked"),
            ("x-accel-buffering", "no"),
        ] {
            let _ = head.insert_header(name, value);
        }
        session.set_keepalive(None);
        if session.write_response_header(Box::new(head)).await.is_err() {
            return;
        }
        let (earlier, mut receiver) = LogFeed::global().subscribe();
        let wanted = |line: &str| filter.as_deref().is_none_or(|f| line.contains(f));
        let event = |line: &str| bytes::Bytes::from(format!("data: {line}\n\n"));
        if session.write_response_body(bytes::Bytes::from_static(b": switchyard log stream\n\n"), false).await.is_err()
        {
            return;
        }
        if recent {
            for line in earlier.iter().filter(|l| wanted(l)) {
                if session.write_response_body(event(line), false).await.is_err() {
                    return;
                }
            }
        }
        let mut shutdown = shutdown.clone();
        loop {
            let chunk = tokio::select! {
                line = receiver.recv() => match line {
                    Ok(line) if wanted(&line) => event(&line),
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        bytes::Bytes::from(format!(": {n} lines skipped (the client fell behind)\n\n"))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                () = tokio::time::sleep(STREAM_KEEPALIVE) => bytes::Bytes::from_static(b": keepalive\n\n"),
                _ = shutdown.changed() => break,
            };
            if session.write_response_body(chunk, false).await.is_err() {
                return;
            }
        }
        let _ = session.write_response_body(bytes::Bytes::new(), true).await;
        let _ = session.finish_body().await;
    }
}

/// The parts of a request the handlers use.
struct Call {
    method: String,
    path: String,
    query: Option<String>,
    if_match: Option<String>,
    peer: String,
}

impl Call {
    /// A query parameter's decoded value.
    fn query_value(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode_str(&value.replace('+', " ")).decode_utf8_lossy().into_owned())
        })
    }
}

fn method_not_allowed(methods: &[&str]) -> Response<Vec<u8>> {
    let allow = methods.join(", ");
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, &format!("use {allow}"));
    if let Ok(value) = http::HeaderValue::from_str(&allow) {
        response.headers_mut().insert(http::header::ALLOW, value);
    }
    response
}

/// `GET /api/v1/stats`: the last `window` seconds (default and most [`WINDOW_SECONDS`]) by
/// site/route/upstream, and summed by site, by upstream and in all.
fn stats(window: Option<String>) -> Json {
    let seconds = window.and_then(|w| w.parse::<u64>().ok()).unwrap_or(WINDOW_SECONDS).clamp(1, WINDOW_SECONDS);
    let mut total = WindowFigures::empty(seconds);
    let mut sites: std::collections::BTreeMap<String, WindowFigures> = Default::default();
    let mut upstreams: std::collections::BTreeMap<String, WindowFigures> = Default::default();
    let mut routes = Vec::new();
    for recorder in Traffic::global().recorders() {
        let figures = recorder.window(seconds);
        if figures.requests == 0 {
            continue;
        }
        total.add(&figures);
        let empty = || WindowFigures::empty(seconds);
        sites.entry(recorder.site.clone()).or_insert_with(empty).add(&figures);
        upstreams.entry(recorder.upstream.clone()).or_insert_with(empty).add(&figures);
        let mut row = figures.to_json();
        row["site"] = json!(recorder.site);
        row["route"] = json!(recorder.route);
        row["upstream"] = json!(recorder.upstream);
        routes.push(row);
    }
    let named = |map: std::collections::BTreeMap<String, WindowFigures>, key: &str| -> Vec<Json> {
        map.into_iter()
            .map(|(name, figures)| {
                let mut row = figures.to_json();
                row[key] = json!(name);
                row
            })
            .collect()
    };
    json!({
        "window_seconds": seconds,
        "total": total.to_json(),
        "sites": named(sites, "site"),
        "upstreams": named(upstreams, "upstream"),
        "routes": routes,
    })
}

#[async_trait]
impl HttpServerApp for AdminApi {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!("admin API: cannot read a request: {e}");
                return None;
            }
        }
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let head_only = session.req_header().method == http::Method::HEAD;
        let response = match self.handle(&mut session).await {
            Answer::Full(response) => response,
            Answer::LogStream { .. } if head_only => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-store")
                .body(Vec::new())
                .unwrap_or_default(),
            Answer::LogStream { filter, recent } => {
                self.stream_logs(&mut session, filter, recent, shutdown).await;
                return None;
            }
        };
        let (parts, body) = response.into_parts();
        let header: ResponseHeader = parts.into();
        if session.write_response_header(Box::new(header)).await.is_err() {
            return None;
        }
        if !body.is_empty() && !head_only && session.write_response_body(body.into(), true).await.is_err() {
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(_) => None,
        }
    }
}
