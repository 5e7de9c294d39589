//! HTTP/1 hardening over real sockets: every malformed request of RFC 9110/9112's list, sent as
//! raw bytes to the proxy with a recording origin behind it. Each must get a 4xx (or 5xx where
//! the RFC says so) with `Connection: close`; the origin must never frame a request the client
//! did not get an answer for; and the proxy keeps serving. Also: early answers never leave a
//! body to be read as the next request, upgrade bytes wait for the backend's 101, and a lenient
//! listener gets Pingora's own (re-framing) parsing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::raw_http::{Exchange, RecordingOrigin, exchange, malformed_cases, read_responses};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const QUIET: Duration = Duration::from_millis(1500);

fn config(origin: std::net::SocketAddr, server_extra: &str) -> String {
    format!(
        r#"
[server]
{server_extra}

[[plugin]]
name = "get-only"
path = "access-policy.wasm"
config = {{ methods = ["GET"], status = 403, message = "only GET here" }}

[[upstream]]
name = "o"
backends = [{{ address = "{origin}" }}]

[[site]]
hosts = ["*"]
[[site.route]]
path_prefix = "/t"
upstream = "o"
[[site.route]]
path_prefix = "/guarded"
upstream = "o"
request_filters = ["get-only"]
[[site.route]]
path_prefix = "/small"
upstream = "o"
max_body_bytes = 100
"#
    )
}

/// The seqs of the origin's answers the client got.
fn answered(exchange: &Exchange) -> BTreeSet<u64> {
    exchange.responses.iter().filter_map(|r| r.header("x-origin-request")?.parse().ok()).collect()
}

/// Asserts that a fresh, plain request is still served.
async fn still_serving(addr: std::net::SocketAddr, origin: &RecordingOrigin, tag: &str) {
    let path = format!("/t/{tag}/after");
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let after = exchange(addr, request.as_bytes(), QUIET).await;
    assert_eq!(after.responses.first().map(|r| r.status), Some(200), "{tag}: the proxy still serves");
    assert_eq!(origin.framed(&path).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_is_refused_and_nothing_reaches_the_origin() {
    let origin = RecordingOrigin::start().await;
    let proxy = common::proxy(common::must_build(&config(origin.addr, ""))).await;
    let addr = proxy.local_addr;
    for (tag, request, status) in malformed_cases() {
        let outcome = exchange(addr, request.as_bytes(), QUIET).await;
        let first = outcome.responses.first().unwrap_or_else(|| panic!("{tag}: no answer: {outcome:?}"));
        assert_eq!(first.status, status, "{tag}: {}", first.text());
        assert_eq!(first.header("connection"), Some("close"), "{tag}: {:?}", first.headers);
        assert_eq!(outcome.responses.len(), 1, "{tag}: one answer, nothing after it: {outcome:?}");
        assert!(outcome.closed, "{tag}: the proxy closed the connection");
        let framed = origin.framed(&format!("/t/{tag}"));
        assert!(framed.is_empty(), "{tag}: the origin framed {framed:?}");
        still_serving(addr, &origin, tag).await;
    }
    let metrics = switchyard::proxy::strict::rejected_metric();
    assert!(metrics.with_label_values(&["transfer-encoding"]).get() >= 5);
    assert!(metrics.with_label_values(&["chunked"]).get() >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_requests_pass_reframed_and_connection_never_removes_framing_headers() {
    let origin = RecordingOrigin::start().await;
    let proxy = common::proxy(common::must_build(&config(origin.addr, ""))).await;
    let addr = proxy.local_addr;
    // Three requests on one connection: chunked with extensions and a trailer, a body whose
    // Connection header names Content-Length, and empty lines before a request line.
    let pipelined = "POST /t/ok/1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5;name=\"v\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(pipelined.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let first = read_responses(&mut stream, Duration::from_millis(500)).await;
    assert_eq!(first.responses.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200]);
    let second = "\r\nPOST /t/ok/2 HTTP/1.1\r\nHost: a\r\nConnection: content-length, x-drop\r\nX-Drop: 1\r\nContent-Length: 5\r\n\r\nhello";
    stream.write_all(second.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let second = read_responses(&mut stream, Duration::from_millis(500)).await;
    assert_eq!(second.responses.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200]);
    let framed = origin.framed("/t/ok/");
    assert_eq!(framed.len(), 2, "{framed:?}");
    assert_eq!(framed[0].body, b"hello world");
    assert_eq!(framed[0].header("x-checksum"), None, "trailers are not merged into the head");
    assert_eq!(framed[1].body, b"hello");
    assert_eq!(
        framed[1].header("content-length"),
        Some("5"),
        "Connection cannot remove framing: {:?}",
        framed[1].headers
    );
    assert_eq!(framed[1].header("x-drop"), None, "other nominated headers are hop-by-hop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_after_a_good_one_waits_for_the_good_answer() {
    let origin = RecordingOrigin::start().await;
    let proxy = common::proxy(common::must_build(&config(origin.addr, ""))).await;
    let both = "GET /t/first HTTP/1.1\r\nHost: a\r\n\r\nGET /t/second HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n";
    let outcome = exchange(proxy.local_addr, both.as_bytes(), QUIET).await;
    let statuses: Vec<u16> = outcome.responses.iter().map(|r| r.status).collect();
    // Pingora closes a connection whose client pipelined (it reads no further), or answers the
    // first and then the refusal: never the refusal first, never the second proxied.
    assert_eq!(statuses.first(), Some(&200), "{outcome:?}");
    assert!(statuses.len() <= 2 && statuses.get(1).is_none_or(|&s| s == 400), "{outcome:?}");
    assert_eq!(answered(&outcome), origin.framed("/t/").iter().map(|f| f.seq).collect());
    assert!(origin.framed("/t/second").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_leave_no_body_behind() {
    let origin = RecordingOrigin::start().await;
    let proxy = common::proxy(common::must_build(&config(origin.addr, ""))).await;
    let addr = proxy.local_addr;
    // A 1 MiB body that is itself a request: if it were ever read as the next request, the
    // origin would see /t/smuggled.
    let inner = b"GET /t/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut body = Vec::with_capacity(1 << 20);
    while body.len() + inner.len() <= 1 << 20 {
        body.extend_from_slice(inner);
    }
    body.resize(1 << 20, b'\n');

    for (path, status) in [("/guarded/upload", 403), ("/nowhere", 404)] {
        let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        let head = format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(&body).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let first = read_responses(&mut stream, Duration::from_millis(500)).await;
        assert_eq!(first.responses.iter().map(|r| r.status).collect::<Vec<_>>(), vec![status], "{path}");
        assert!(!first.closed, "{path}: the whole body was read, so the connection stays open");
        // The second request on the same connection is answered as itself.
        stream.write_all(b"GET /t/second HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap_or_else(|e| panic!("{e}"));
        let second = read_responses(&mut stream, Duration::from_millis(500)).await;
        assert_eq!(second.responses.len(), 1, "{path}: {second:?}");
        assert_eq!(second.responses[0].status, 200);
        let framed = origin.framed("/t/second");
        assert_eq!(second.responses[0].header("x-origin-request"), framed.last().map(|f| f.seq.to_string()).as_deref());
    }

    // Sent in one go (the second request right behind the body): whatever the proxy does with
    // the connection, nothing in the body is ever a request.
    let mut all =
        format!("POST /guarded/upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    all.extend_from_slice(&body);
    all.extend_from_slice(b"GET /t/third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let outcome = exchange(addr, &all, QUIET).await;
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(403));
    assert_eq!(answered(&outcome), origin.framed("/t/third").iter().map(|f| f.seq).collect());

    // Over the route's limit with a declared length: 413 and the connection closes unread.
    let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
    let head = format!("POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let _ = stream.write_all(&body[..64 << 10]).await;
    let outcome = read_responses(&mut stream, QUIET).await;
    assert_eq!(outcome.responses.iter().map(|r| r.status).collect::<Vec<_>>(), vec![413]);
    assert!(outcome.closed);
    assert!(origin.framed("/t/smuggled").is_empty(), "no body was ever read as a request");
}

/// An origin that answers an upgrade with 101 after `delay`, reporting whether any byte came
/// before its 101, then echoes.
async fn upgrade_origin(delay: Duration) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (early_tx, early_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let early_tx = early_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let mut early = vec![0u8; 1024];
                let n = match tokio::time::timeout(delay, stream.read(&mut early)).await {
                    Ok(Ok(n)) => n,
                    _ => 0,
                };
                let _ = early_tx.send(n).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
                    .await;
                let mut buf = vec![0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, early_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_an_upgrade_request_wait_for_the_101() {
    let (origin, mut early) = upgrade_origin(Duration::from_millis(400)).await;
    let proxy = common::proxy(common::must_build(&config(origin, ""))).await;
    let mut stream = TcpStream::connect(proxy.local_addr).await.unwrap_or_else(|e| panic!("{e}"));
    let request = "GET /t/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    // The tunnel's first bytes right behind the head, before any 101: binary, not a request.
    stream.write_all(format!("{request}\u{1}\u{2}tunnel-data").as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let early_bytes = tokio::time::timeout(Duration::from_secs(5), early.recv()).await.ok().flatten();
    assert_eq!(early_bytes, Some(0), "nothing reached the backend before its 101");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"tunnel-data") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no echo: {}", String::from_utf8_lossy(&got)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.ends_with("\u{1}\u{2}tunnel-data"), "the early bytes went through the tunnel after the 101: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_upgrade_makes_the_held_bytes_the_next_request() {
    let origin = RecordingOrigin::start().await;
    let proxy = common::proxy(common::must_build(&config(origin.addr, ""))).await;
    // The origin answers 200 to the upgrade request: what followed is an ordinary request.
    let bytes = "GET /t/up HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
                 GET /t/up-next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let outcome = exchange(proxy.local_addr, bytes.as_bytes(), QUIET).await;
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(200), "{outcome:?}");
    assert_eq!(answered(&outcome), origin.framed("/t/up").iter().map(|f| f.seq).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lenient_listener_gets_pingoras_parsing() {
    let origin = RecordingOrigin::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let toml = config(origin.addr, &format!("listen = [\"{addr}\"]\nlenient_listeners = [\"{addr}\"]"));
    let proxy = switchyard::proxy::server::EmbeddedProxy::start(
        listener
            .into_std()
            .map(|l| TcpListener::from_std(l).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}")),
        common::must_build(&toml),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Content-Length with Transfer-Encoding: Pingora forwards it chunked, without the length,
    // and closes the client's connection afterwards, as RFC 9112 §6.1 allows.
    let bytes = "POST /t/lenient HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\n\r\n";
    let outcome = exchange(proxy.local_addr, bytes.as_bytes(), QUIET).await;
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(200), "{outcome:?}");
    let framed = origin.framed("/t/lenient");
    assert_eq!(framed.len(), 1);
    assert_eq!(framed[0].body, b"hello");
    assert_eq!(framed[0].header("content-length"), None, "re-framed without the length");
    assert_eq!(answered(&outcome), framed.iter().map(|f| f.seq).collect());
    // The key is checked: it must name a listener.
    let bad = config(origin.addr, "lenient_listeners = [\"127.0.0.1:1\"]");
    let error = common::build(&bad).err().unwrap_or_else(|| panic!("accepted")).to_string();
    assert!(error.contains("not in listen or tls_listen"), "{error}");
}
