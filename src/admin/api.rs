//! The management listener: a small JSON API under `/api/v1` and Prometheus `/metrics`.
//!
//! | method | path              | answer                                                        |
//! |--------|-------------------|---------------------------------------------------------------|
//! | GET    | `/api/v1/health`  | `{"status":"ok","generation":N,"requests_in_progress":N}`     |
//! | POST   | `/api/v1/reload`  | 200 with what the reload did, or 422 with every problem       |
//! | POST   | `/api/v1/upgrade` | 200 `{"old_pid","new_pid"}` once the new process took over the |
//! |        |                   | sockets' hand-off, or 500 and this process serving on         |
//! | GET    | `/metrics`        | Prometheus text                                               |
//!
//! It runs as its own Pingora service, so a graceful upgrade hands its socket over with the
//! proxy's. It only listens on loopback (the configuration refuses anything else). A reload is
//! only triggered by a POST whose body, if any, is not of a type a browser form can send across
//! sites, so a web page cannot reload or upgrade the proxy behind its operator's back.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::metrics::Metrics;
use super::reload::Reloader;
use crate::proxy::RequestCount;
use crate::proxy::upgrade::Upgrader;

/// The largest request body the API reads (anything longer is refused).
const MAX_BODY: usize = 64 << 10;

/// The admin HTTP application.
pub struct AdminApi {
    /// `None` for a process without a configuration file (the demo): nothing to reload.
    pub reloader: Option<Arc<Reloader>>,
    /// `None` likewise: the demo cannot start itself again.
    pub upgrader: Option<Arc<Upgrader>>,
    pub metrics: Arc<Metrics>,
    pub requests: Arc<RequestCount>,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let mut text = body.to_string().into_bytes();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", text.len())
        .header("cache-control", "no-store")
        .body(text)
        .unwrap_or_default()
}

fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json_response(status, json!({ "status": "error", "message": message }))
}

/// Reads (and discards) the request body, up to [`MAX_BODY`]; `false` if it is longer or broken.
async fn drain_body(session: &mut ServerSession) -> bool {
    let mut read = 0usize;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_BODY {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Whether the request's content type is one a cross-site HTML form or `fetch` without a
/// preflight may send (those requests must not change anything).
fn is_simple_cross_site_type(session: &ServerSession) -> bool {
    let Some(value) = session.req_header().headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"].iter().any(|t| value.starts_with(t))
}

impl AdminApi {
    async fn reload(&self) -> Response<Vec<u8>> {
        let Some(reloader) = self.reloader.clone() else {
            return error(StatusCode::CONFLICT, "this process runs without a configuration file; nothing to reload");
        };
        // Compiling plugins takes a while: keep it off the listener's threads.
        let result = tokio::task::spawn_blocking(move || reloader.reload("admin API")).await;
        match result {
            Ok(Ok(outcome)) => json_response(StatusCode::OK, json!({ "status": "reloaded", "reload": outcome })),
            Ok(Err(refused)) => {
                let problems: Vec<_> = refused
                    .0
                    .0
                    .iter()
                    .map(|d| {
                        json!({
                            "file": d.file.display().to_string(),
                            "line": d.line,
                            "column": d.column,
                            "message": d.message,
                        })
                    })
                    .collect();
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "status": "refused",
                        "message": format!("reload refused, the running configuration keeps serving:\n{refused}"),
                        "problems": problems,
                    }),
                )
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the reload task failed: {e}")),
        }
    }
}

impl AdminApi {
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
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let body_ok = drain_body(session).await;
        if !body_ok {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or incomplete");
        }
        match (path.as_str(), method.as_str()) {
            ("/api/v1/health", "GET" | "HEAD") => json_response(
                StatusCode::OK,
                json!({
                    "status": "ok",
                    "generation": self.reloader.as_ref().map_or(1, |r| r.generation_number()),
                    "requests_in_progress": self.requests.get(),
                }),
            ),
            ("/api/v1/reload" | "/api/v1/upgrade", "POST") if is_simple_cross_site_type(session) => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send no body or a JSON body (Content-Type: application/json)",
            ),
            ("/api/v1/reload", "POST") => self.reload().await,
            ("/api/v1/upgrade", "POST") => self.upgrade().await,
            ("/metrics", "GET" | "HEAD") => {
                let text = self.metrics.render().into_bytes();
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .header("content-length", text.len())
                    .body(text)
                    .unwrap_or_default()
            }
            ("/api/v1/health" | "/metrics", _) => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            ("/api/v1/reload" | "/api/v1/upgrade", _) => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
            _ => error(
                StatusCode::NOT_FOUND,
                "no such endpoint (see /api/v1/health, /api/v1/reload, /api/v1/upgrade, /metrics)",
            ),
        }
    }
}
