//! Raw HTTP/1 over TCP for the hardening tests: a recording origin that frames requests the
//! way a typical backend would (and numbers each one in its answer), and a client side that
//! sends exact bytes and splits what comes back into responses.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the origin framed it.
#[derive(Debug, Clone)]
pub struct Framed {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The first value of the field `name` in `headers`.
pub fn field<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

impl Framed {
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }
}

/// An origin that records every request it frames and answers each with
/// `x-origin-request: <seq>`.
#[derive(Clone)]
pub struct RecordingOrigin {
    pub addr: SocketAddr,
    framed: Arc<Mutex<Vec<Framed>>>,
}

impl RecordingOrigin {
    pub async fn start() -> RecordingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let framed: Arc<Mutex<Vec<Framed>>> = Arc::default();
        let record = framed.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, record).await;
                });
            }
        });
        RecordingOrigin { addr, framed }
    }

    /// The requests framed so far whose path starts with `prefix`.
    pub fn framed(&self, prefix: &str) -> Vec<Framed> {
        let framed = self.framed.lock().unwrap_or_else(|e| e.into_inner());
        framed.iter().filter(|f| f.path.starts_with(prefix)).cloned().collect()
    }
}

/// Frames requests leniently (LF line ends, any TE containing chunked, chunk extensions
/// ignored), as a backend that trusts its proxy might.
async fn serve(stream: TcpStream, record: Arc<Mutex<Vec<Framed>>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |name: &str| field(&headers, name).map(str::to_string);
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
            loop {
                let mut size_line = String::new();
                if reader.read_line(&mut size_line).await? == 0 {
                    return Ok(());
                }
                let size = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16).unwrap_or(0);
                if size == 0 {
                    loop {
                        let mut t = String::new();
                        if reader.read_line(&mut t).await? == 0 || t.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut data = vec![0; size + 2];
                reader.read_exact(&mut data).await?;
                body.extend_from_slice(&data[..size]);
            }
        } else if let Some(length) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body = vec![0; length];
            reader.read_exact(&mut body).await?;
        }
        let seq = {
            let mut framed = record.lock().unwrap_or_else(|e| e.into_inner());
            let seq = framed.len() as u64 + 1;
            framed.push(Framed { seq, method, path, headers, body });
            seq
        };
        let answer = format!("HTTP/1.1 200 OK\r\nx-origin-request: {seq}\r\ncontent-length: 2\r\n\r\nok");
        reader.get_mut().write_all(answer.as_bytes()).await?;
    }
}

/// (tag, raw request, expected status). Each tag's requests use paths under `/t/<tag>`.
pub fn malformed_cases() -> Vec<(&'static str, String, u16)> {
    let post = |tag: &str, fields: &str, body: &str| {
        format!(
            "POST /t/{tag} HTTP/1.1\r\nHost: a\r\n{fields}\r\n{body}GET /t/{tag}/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        )
    };
    let get = |tag: &str, fields: &str| format!("GET /t/{tag} HTTP/1.1\r\n{fields}\r\n");
    let chunked = |tag: &str, body: &str| post(tag, "Transfer-Encoding: chunked\r\n", body);
    vec![
        ("cl-te", post("cl-te", "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        ("te-cl", post("te-cl", "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", "0\r\n\r\n"), 400),
        (
            "te-last-not-chunked",
            post("te-last-not-chunked", "Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            400,
        ),
        ("te-chunked-twice", post("te-chunked-twice", "Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"), 400),
        ("te-unknown", post("te-unknown", "Transfer-Encoding: foo, chunked\r\n", "0\r\n\r\n"), 501),
        ("te-gzip", post("te-gzip", "Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 501),
        (
            "te-two-fields",
            post("te-two-fields", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        ("te-vertical-tab", post("te-vertical-tab", "Transfer-Encoding: \u{b}chunked\r\n", "0\r\n\r\n"), 400),
        (
            "space-before-colon",
            post("space-before-colon", "Transfer-Encoding : chunked\r\nContent-Length: 6\r\n", "0\r\n\r\n"),
            400,
        ),
        (
            "obs-fold",
            post("obs-fold", "Content-Length: 6\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        ("bare-cr", get("bare-cr", "Host: a\r\nX-A: 1\r2\r\n"), 400),
        ("nul", get("nul", "Host: a\r\nX-A: 1\u{0}2\r\n"), 400),
        ("lf-in-value", get("lf-in-value", "Host: a\r\nX-A: 1\nContent-Length: 5\r\n"), 400),
        ("bare-lf-lines", "GET /t/bare-lf-lines HTTP/1.1\nHost: a\n\n".to_string(), 400),
        ("empty-name", get("empty-name", "Host: a\r\n: x\r\n"), 400),
        ("non-token-name", get("non-token-name", "Host: a\r\nX\"A: 1\r\n"), 400),
        ("cl-plus", post("cl-plus", "Content-Length: +5\r\n", "hello"), 400),
        ("cl-minus", post("cl-minus", "Content-Length: -1\r\n", ""), 400),
        ("cl-hex", post("cl-hex", "Content-Length: 0x10\r\n", ""), 400),
        ("cl-overflow", post("cl-overflow", "Content-Length: 99999999999999999999999\r\n", ""), 400),
        ("cl-empty", post("cl-empty", "Content-Length: \r\n", ""), 400),
        ("cl-differ", post("cl-differ", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), 400),
        ("cl-list", post("cl-list", "Content-Length: 5, 6\r\n", "hello!"), 400),
        ("chunk-size-not-hex", chunked("chunk-size-not-hex", "zz\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-size-empty", chunked("chunk-size-empty", "\r\n\r\n"), 400),
        ("chunk-size-0x", chunked("chunk-size-0x", "0x5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-size-space", chunked("chunk-size-space", "5 5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-size-overflow", chunked("chunk-size-overflow", "100000000000000005\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-data-too-long", chunked("chunk-data-too-long", "3\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-bad-terminator", chunked("chunk-bad-terminator", "5\r\nhello\n0\r\n\r\n"), 400),
        ("chunk-ext-bare-lf", chunked("chunk-ext-bare-lf", "5;a\nb\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-size-bare-lf", chunked("chunk-size-bare-lf", "5\nhello\r\n0\r\n\r\n"), 400),
        (
            "trailer-content-length",
            chunked("trailer-content-length", "5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
            400,
        ),
        (
            "trailer-transfer-encoding",
            chunked("trailer-transfer-encoding", "0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400,
        ),
        ("trailer-host", chunked("trailer-host", "0\r\nHost: evil\r\n\r\n"), 400),
        ("http10-te", "POST /t/http10-te HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(), 400),
        ("no-host", get("no-host", "X-A: 1\r\n"), 400),
        ("two-hosts", get("two-hosts", "Host: a\r\nHost: b\r\n"), 400),
        ("host-userinfo", get("host-userinfo", "Host: user@a\r\n"), 400),
        ("host-space", get("host-space", "Host: a b\r\n"), 400),
        (
            "absolute-form-other-host",
            "GET http://b/t/absolute-form-other-host HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
            400,
        ),
        ("space-in-target", "GET /t/space in-target HTTP/1.1\r\nHost: a\r\n\r\n".to_string(), 400),
        ("fragment", "GET /t/fragment#x HTTP/1.1\r\nHost: a\r\n\r\n".to_string(), 400),
        ("version", "GET /t/version HTTP/1.2\r\nHost: a\r\n\r\n".to_string(), 400),
    ]
}

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a raw exchange produced: the responses, and whether the proxy closed the connection.
#[derive(Debug)]
pub struct Exchange {
    pub responses: Vec<RawResponse>,
    pub closed: bool,
}

/// Sends `bytes` on a new connection to `addr` and reads until the proxy closes it or nothing
/// arrives for `quiet`.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect: {e}"));
    // The proxy may close before everything is written (it refused what came first).
    let _ = stream.write_all(bytes).await;
    read_responses(&mut stream, quiet).await
}

/// Reads from `stream` until it closes or is quiet for `quiet` (at most 10 s in all).
pub async fn read_responses(stream: &mut TcpStream, quiet: Duration) -> Exchange {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    Exchange { responses: parse_responses(&all), closed }
}

/// Splits bytes into responses framed by Content-Length (the proxy's answers all have one, or
/// are chunked, which this reads too).
pub fn parse_responses(mut bytes: &[u8]) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        bytes = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string())))
            .collect();
        let get = |name: &str| field(&headers, name).map(str::to_string);
        let mut body = Vec::new();
        if let Some(length) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
            let length = length.min(bytes.len());
            body = bytes[..length].to_vec();
            bytes = &bytes[length..];
        } else if get("transfer-encoding").is_some() {
            while let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(String::from_utf8_lossy(&bytes[..line_end]).trim(), 16).unwrap_or(0);
                bytes = &bytes[line_end + 2..];
                if size == 0 {
                    bytes = bytes.get(2..).unwrap_or_default();
                    break;
                }
                let size = size.min(bytes.len());
                body.extend_from_slice(&bytes[..size]);
                bytes = bytes.get(size + 2..).unwrap_or_default();
            }
        }
        responses.push(RawResponse { status, headers, body });
    }
    responses
}
