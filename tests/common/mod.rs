//! Shared test harness: in-process origins, a proxy on 127.0.0.1:0, an HTTP client, and the
//! paths of the fixture components.

#![allow(dead_code)]

pub mod h2_frames;
pub mod pebble;
pub mod raw_http;
pub mod tls;

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

/// Starts an origin named `name` that waits `delay` before each answer (a slow backend). It
/// answers `GET`s with an empty 200 carrying `x-backend`, and keeps connections alive.
pub async fn slow_origin(name: &str, delay: Duration) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
    let name = name.to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        tokio::time::sleep(delay).await;
                        let reply = format!("HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-length: 0\r\n\r\n");
                        if stream.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Sends `n` GETs for `path` with `Host: host` through the proxy at `addr` over one kept-alive
/// client, `concurrency` at a time; request `i` carries `headers(i)`. Returns how many answers
/// each backend (`x-backend`) gave; any non-200 answer fails the test.
pub async fn tally(
    addr: SocketAddr,
    host: &str,
    path: &str,
    n: usize,
    concurrency: usize,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> std::collections::HashMap<String, usize> {
    let client = client();
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await.unwrap_or_else(|e| panic!("{e}"));
        let mut req = client.get(format!("http://{addr}{path}")).header("host", host);
        for (name, value) in headers(i) {
            req = req.header(name, value);
        }
        tasks.spawn(async move {
            let resp = req.send().await.unwrap_or_else(|e| panic!("request {i}: {e}"));
            drop(permit);
            assert_eq!(resp.status().as_u16(), 200, "request {i}");
            resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
        });
    }
    let mut counts = std::collections::HashMap::new();
    while let Some(backend) = tasks.join_next().await {
        *counts.entry(backend.unwrap_or_else(|e| panic!("{e}"))).or_insert(0) += 1;
    }
    counts
}

/// The `name=value` part of a `Set-Cookie` answer header, if any.
pub fn set_cookie(answer: &Answer) -> Option<String> {
    let value = answer.headers.get("set-cookie")?.to_str().ok()?;
    value.split(';').next().map(|pair| pair.trim().to_string())
}

/// `switchyard run --config <config>` as a child process (plugin cache under the target dir,
/// warnings only), killed when dropped.
pub struct RunningBinary(pub std::process::Child);

impl RunningBinary {
    pub fn start(config: &std::path::Path) -> RunningBinary {
        Self::start_logging(config, "warn")
    }

    /// [`RunningBinary::start`] logging at `level` (a `SWITCHYARD_LOG` filter).
    pub fn start_logging(config: &std::path::Path, level: &str) -> RunningBinary {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(config)
            .env("SWITCHYARD_PLUGIN_CACHE", std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"))
            .env("SWITCHYARD_LOG", level)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn switchyard: {e}"));
        RunningBinary(child)
    }

    /// `switchyard run --config <config> <extra…>` logging at `level` into the file `log`.
    pub fn start_with(config: &std::path::Path, extra: &[&str], level: &str, log: &std::path::Path) -> RunningBinary {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(config)
            .args(extra)
            .env("SWITCHYARD_PLUGIN_CACHE", std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"))
            .env("SWITCHYARD_LOG", level)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn switchyard: {e}"));
        RunningBinary(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
