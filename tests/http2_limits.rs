//! HTTP/2 hardening on the real binary, with raw frames over TLS: the advertised limits come
//! from `[server] limits`; a request with CR, LF or NUL in a value, or with a connection-specific
//! field, is reset and never reaches the HTTP/1 origin; streams over the concurrency limit are
//! refused; CONTINUATION and reset floods end the offending connection; and the proxy keeps
//! serving through all of it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::h2_frames::*;
use common::raw_http::RecordingOrigin;
use common::tls::{TestCa, client_config, https_client, start};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio_rustls::client::TlsStream;

const HOST: &str = "h2.test";

/// Extra header fields of a request: name and value bytes.
type Fields = Vec<(&'static [u8], &'static [u8])>;

struct Setup {
    _dir: tempfile::TempDir,
    _running: common::RunningBinary,
    https: SocketAddr,
    ca: String,
    origin: RecordingOrigin,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let origin = RecordingOrigin::start().await;
    let ca = TestCa::new("h2 test CA");
    let (cert, key) = ca.issue(&[HOST]);
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("key.pem"), key).unwrap_or_else(|e| panic!("{e}"));
    let (http, https) = (common::closed_port(), common::closed_port());
    let config = format!(
        r#"[server]
listen = ["{http}"]
tls_listen = ["{https}"]
strategy = "both"
threads = 1
limits = {{ h2_max_concurrent_streams = 7, max_header_bytes = 8192 }}
[[upstream]]
name = "o"
backends = [{{ address = "{}" }}]
[[site]]
hosts = ["{HOST}"]
tls = {{ cert = "cert.pem", key = "key.pem" }}
[[site.route]]
upstream = "o"
"#,
        origin.addr
    );
    let running = start(dir.path(), &config, &[], http, https).await;
    Setup { _dir: dir, _running: running, https, ca: ca.pem, origin }
}

/// A TLS connection that negotiated h2, past the SETTINGS exchange; and the server's SETTINGS.
async fn connect(setup: &Setup) -> (TlsStream<tokio::net::TcpStream>, Frame) {
    let connector = tokio_rustls::TlsConnector::from(client_config(&setup.ca, &[b"h2"]));
    let tcp = tokio::net::TcpStream::connect(setup.https).await.unwrap_or_else(|e| panic!("{e}"));
    let name = ServerName::try_from(HOST.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let mut tls = connector.connect(name, tcp).await.unwrap_or_else(|e| panic!("handshake: {e}"));
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let settings = handshake(&mut tls).await;
    (tls, settings)
}

/// Whether an ordinary HTTP/2 client is still served.
async fn still_serving(setup: &Setup, path: &str) {
    let client = https_client(&setup.ca, &[HOST], setup.https);
    let answer = client.get(format!("https://{HOST}{path}")).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_h2_requests_are_reset_and_never_reach_the_origin() {
    let setup = setup().await;
    let (_, settings) = connect(&setup).await;
    let advertised = settings.settings();
    assert!(advertised.contains(&(0x3, 7)), "MAX_CONCURRENT_STREAMS from the limits: {advertised:?}");
    assert!(advertised.contains(&(0x6, 8192)), "MAX_HEADER_LIST_SIZE from max_header_bytes: {advertised:?}");

    let bad: Vec<(&str, Fields)> = vec![
        ("/t/cr", vec![(b"x-a", b"1\r2")]),
        ("/t/lf", vec![(b"x-a", b"1\nx-injected: 1")]),
        ("/t/nul", vec![(b"x-a", b"1\x002")]),
        ("/t/connection", vec![(b"connection", b"keep-alive")]),
        ("/t/transfer-encoding", vec![(b"transfer-encoding", b"chunked")]),
        ("/t/te", vec![(b"te", b"gzip")]),
        ("/t/keep-alive", vec![(b"keep-alive", b"timeout=5")]),
        ("/t/upgrade", vec![(b"upgrade", b"websocket")]),
        ("/t/uppercase", vec![(b"X-Upper", b"1")]),
    ];
    for (path, extra) in &bad {
        // Each on its own connection: some are stream errors (RST_STREAM), some connection
        // errors (GOAWAY), both PROTOCOL_ERROR.
        let (mut tls, _) = connect(&setup).await;
        let block = get_request(HOST.as_bytes(), path.as_bytes(), extra);
        tls.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block)).await.unwrap_or_else(|e| panic!("{e}"));
        let frames = read_all(&mut tls, Duration::from_millis(1000)).await;
        let refused = frames
            .iter()
            .any(|f| ((f.kind == RST_STREAM && f.stream == 1) || f.kind == GOAWAY) && f.error_code() == Some(0x1));
        assert!(refused, "{path}: refused with PROTOCOL_ERROR: {frames:?}");
        assert!(!frames.iter().any(|f| f.kind == HEADERS), "{path}: no response");
        assert!(setup.origin.framed(path).is_empty(), "{path} reached the origin");
    }
    // A valid request (with the one TE value HTTP/2 allows) is served and forwarded.
    let (mut tls, _) = connect(&setup).await;
    let ok = get_request(HOST.as_bytes(), b"/t/valid", &[(b"te", b"trailers")]);
    tls.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &ok)).await.unwrap_or_else(|e| panic!("{e}"));
    let frames = read_all(&mut tls, Duration::from_millis(1000)).await;
    assert!(frames.iter().any(|f| f.stream == 1 && f.kind == HEADERS), "the valid request was answered: {frames:?}");
    assert_eq!(setup.origin.framed("/t/valid").len(), 1);
    assert!(setup.origin.framed("/t/").iter().all(|f| f.header("x-injected").is_none()));
    still_serving(&setup, "/t/after-malformed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused() {
    let setup = setup().await;
    let (mut tls, _) = connect(&setup).await;
    // Ten requests whose bodies never finish: seven may be open at once.
    let mut bytes = Vec::new();
    for i in 0..10u32 {
        let path = format!("/t/open/{i}");
        let block = header_block(&[
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", HOST.as_bytes()),
            (b":path", path.as_bytes()),
        ]);
        bytes.extend(frame(HEADERS, END_HEADERS, 1 + 2 * i, &block));
    }
    tls.write_all(&bytes).await.unwrap_or_else(|e| panic!("{e}"));
    let frames = read_all(&mut tls, Duration::from_millis(1500)).await;
    let refused: Vec<u32> =
        frames.iter().filter(|f| f.kind == RST_STREAM && f.error_code() == Some(0x7)).map(|f| f.stream).collect();
    assert_eq!(refused, vec![15, 17, 19], "the 8th to 10th streams are refused: {frames:?}");
    still_serving(&setup, "/t/after-streams").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_ends_the_connection() {
    let setup = setup().await;
    let (mut tls, _) = connect(&setup).await;
    let start = get_request(HOST.as_bytes(), b"/t/flood", &[]);
    tls.write_all(&frame(HEADERS, END_STREAM, 1, &start)).await.unwrap_or_else(|e| panic!("{e}"));
    // A header block that never ends: 4 MiB of CONTINUATION frames, far over the 8 KiB limit.
    let piece = header_block(&[(b"x-flood", &[b'a'; (16 << 10) - 64][..])]);
    let mut sent = 0usize;
    for _ in 0..256 {
        if tls.write_all(&frame(CONTINUATION, 0, 1, &piece)).await.is_err() {
            break;
        }
        sent += piece.len();
    }
    let frames = read_all(&mut tls, Duration::from_millis(1500)).await;
    let ended = frames.iter().any(|f| f.kind == GOAWAY) || frames.iter().any(|f| f.kind == RST_STREAM && f.stream == 1);
    assert!(ended || sent < 4 << 20, "the flood was cut off (GOAWAY, reset, or the connection closed): {frames:?}");
    assert!(setup.origin.framed("/t/flood").is_empty());
    still_serving(&setup, "/t/after-continuation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_gets_goaway() {
    let setup = setup().await;
    let (mut tls, _) = connect(&setup).await;
    let block = get_request(HOST.as_bytes(), b"/t/reset", &[]);
    let mut bytes = Vec::new();
    for i in 0..1000u32 {
        let id = 1 + 2 * i;
        bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        bytes.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = tls.write_all(&bytes).await;
    let frames = read_all(&mut tls, Duration::from_millis(1500)).await;
    let goaway = frames.iter().find(|f| f.kind == GOAWAY);
    assert_eq!(goaway.and_then(Frame::error_code), Some(0xb), "ENHANCE_YOUR_CALM: {:?}", frames.last());
    assert!(setup.origin.framed("/t/reset").len() < 1000, "the flood was cut short");
    still_serving(&setup, "/t/after-reset").await;
}
