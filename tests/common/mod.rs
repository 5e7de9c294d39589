//! Shared test harness: in-process origins, a proxy on 127.0.0.1:0, an HTTP client, and the
//! paths of the fixture components.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use switchyard::config::Diagnostics;
use switchyard::demo::EchoOrigin;
use switchyard::generation::{self, Generation};
use switchyard::plugin::PluginEngine;
use switchyard::proxy::server::EmbeddedProxy;

/// One engine per test binary: engines reserve address space for their instance pool.
pub fn engine() -> Arc<PluginEngine> {
    static ENGINE: OnceLock<Arc<PluginEngine>> = OnceLock::new();
    ENGINE.get_or_init(|| PluginEngine::new().unwrap_or_else(|e| panic!("engine: {e:#}"))).clone()
}

/// A fixture component built by plugins/build.sh.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dist").join(format!("{name}.wasm"))
}

/// Builds a generation from TOML text; relative plugin paths resolve against tests/fixtures/dist.
pub fn build(toml: &str) -> Result<Generation, Diagnostics> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dist/test.toml");
    generation::load_text(&path, toml, &engine())
}

/// Builds a generation that must be valid.
pub fn must_build(toml: &str) -> Generation {
    build(toml).unwrap_or_else(|d| panic!("configuration refused:\n{d}"))
}

/// Starts an echo origin named `name`.
pub async fn origin(name: &str) -> EchoOrigin {
    EchoOrigin::start(name).await.unwrap_or_else(|e| panic!("origin {name}: {e}"))
}

/// Serves `generation` on 127.0.0.1:0.
pub async fn proxy(generation: Generation) -> EmbeddedProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    EmbeddedProxy::start(listener, generation).unwrap_or_else(|e| panic!("proxy: {e}"))
}

/// An address nothing listens on.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"))
}

/// A client with a bounded timeout (no test waits forever).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_else(|e| panic!("client: {e}"))
}

/// What a request through the proxy got back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub backend: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// A field of the echo origin's JSON body.
    pub fn echoed(&self, field: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v.get(field).map(|f| f.as_str().map_or_else(|| f.to_string(), str::to_string))
    }

    /// A header the origin received.
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v.get("headers")?.get(name)?.as_str().map(str::to_string)
    }
}

/// Sends `method path` with `Host: host` and extra headers through the proxy at `addr`.
pub async fn send(addr: SocketAddr, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut req = client().request(method, format!("http://{addr}{path}")).header("host", host);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("request {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let backend = headers.get("x-backend").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.text().await.unwrap_or_else(|e| panic!("body: {e}"));
    Answer { status, backend, headers, body }
}

/// `GET path` with `Host: host`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    send(addr, "GET", host, path, &[]).await
}
