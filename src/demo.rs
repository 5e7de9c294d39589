//! `switchyard demo`: the embedded default. Two small in-process HTTP origins and a built-in
//! configuration, so the proxy can be tried with no setup. The origins are also what the
//! integration tests proxy to.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The demo configuration, with `${LISTEN}`, `${BACKEND_A}` and `${BACKEND_B}` to fill in.
pub const DEMO_CONFIG_TEMPLATE: &str = include_str!("../examples/demo.toml");

/// The demo configuration for the given listener and origins.
pub fn demo_config(listen: SocketAddr, backend_a: SocketAddr, backend_b: SocketAddr) -> String {
    DEMO_CONFIG_TEMPLATE
        .replace("${LISTEN}", &listen.to_string())
        .replace("${BACKEND_A}", &backend_a.to_string())
        .replace("${BACKEND_B}", &backend_b.to_string())
}

/// A minimal HTTP/1.1 origin that answers every request with a JSON description of it
/// (`{"backend": NAME, "method", "path", "host", "headers": {...}}`) and an `x-backend` header.
/// It reads `Content-Length` bodies and keeps connections alive.
#[derive(Debug, Clone)]
pub struct EchoOrigin {
    pub name: String,
    pub addr: SocketAddr,
}

impl EchoOrigin {
    /// Binds `127.0.0.1:0` and serves in the current tokio runtime.
    pub async fn start(name: &str) -> std::io::Result<EchoOrigin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let origin = EchoOrigin { name: name.to_string(), addr };
        let served = origin.name.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let name = served.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, &name).await;
                });
            }
        });
        Ok(origin)
    }
}

fn json_escape(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

async fn serve_connection(stream: TcpStream, name: &str) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || header("transfer-encoding").is_some();
        let (path, _) = target.split_once('?').unwrap_or((&target, ""));
        let header_json: Vec<String> =
            headers.iter().map(|(k, v)| format!("{}: {}", json_escape(k), json_escape(v))).collect();
        let payload = format!(
            "{{\"backend\": {}, \"method\": {}, \"path\": {}, \"target\": {}, \"host\": {}, \"body_bytes\": {}, \"headers\": {{{}}}}}\n",
            json_escape(name),
            json_escape(&method),
            json_escape(path),
            json_escape(&target),
            json_escape(header("host").unwrap_or("")),
            body.len(),
            header_json.join(", ")
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-backend: {name}\r\ncontent-length: {}\r\n{}\r\n{payload}",
            payload.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        reader.get_mut().write_all(response.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}
