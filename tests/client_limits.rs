//! Limits against hostile clients, over real sockets: a slowloris head is cut off at its
//! deadline while other clients are served, oversized heads get 431, oversized bodies 413,
//! connections over `max_connections` are closed, idle kept-alive connections are closed.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_with(origin: SocketAddr, limits: &str, route_extra: &str) -> switchyard::proxy::server::EmbeddedProxy {
    let toml = format!(
        "[server]\nlimits = {{ {limits} }}\n[[upstream]]\nname = \"o\"\nbackends = [{{ address = \"{origin}\" }}]\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\npath_prefix = \"/small\"\nupstream = \"o\"\n{route_extra}\n[[site.route]]\nupstream = \"o\"\n"
    );
    common::proxy(common::must_build(&toml)).await
}

/// Reads until the peer closes (or `limit` passes): what was read, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while started.elapsed() < limit {
        match tokio::time::timeout(limit - started.elapsed(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&all).into_owned(), true),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&all).into_owned(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slowloris_head_is_cut_off_at_its_deadline_while_others_are_served() {
    let origin = common::origin("o").await;
    let proxy = proxy_with(origin.addr, "head_timeout_ms = 2000", "").await;
    let addr = proxy.local_addr;
    let slow = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        // One byte a second: each byte would reset a per-read timeout.
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1234567890\r\n" {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            let mut probe = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await {
                break;
            }
        }
        started.elapsed()
    });
    // Meanwhile, normal clients are served.
    let client = common::client();
    let mut served = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let r = client.get(format!("http://{addr}/")).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut_after = slow.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cut_after >= Duration::from_millis(1900) && cut_after < Duration::from_millis(3500),
        "the slow client was cut off after {cut_after:?}"
    );
    assert!(served > 20, "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_the_limits_get_431_and_bodies_over_them_413() {
    let origin = common::origin("o").await;
    let proxy = proxy_with(
        origin.addr,
        "max_headers = 20, max_header_bytes = 8192, max_body_bytes = 1000",
        "max_body_bytes = 10",
    )
    .await;
    let url = format!("http://{}/", proxy.local_addr);
    let client = common::client();

    let mut many = client.get(&url);
    for i in 0..25 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let r = many.send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 431);
    assert!(r.text().await.unwrap_or_default().contains("at most 20"));
    let r = client.get(&url).header("x-big", "v".repeat(10_000)).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 431);
    let r = client.get(&url).header("x-fine", "v".repeat(1000)).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);

    // Content-Length over the server's limit, then the route's smaller one.
    let r = client.post(&url).body(vec![b'x'; 1001]).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 413);
    let r = client.post(&url).body(vec![b'x'; 1000]).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let small = format!("http://{}/small", proxy.local_addr);
    let r = client.post(&small).body(vec![b'x'; 11]).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(r.status(), 413);

    // A chunked body with no length: counted as it streams.
    let mut stream = TcpStream::connect(proxy.local_addr).await.unwrap_or_else(|e| panic!("{e}"));
    let chunk = "x".repeat(600);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(closed, "the connection stays open after an unread body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_idle_ones_time_out() {
    let origin = common::origin("o").await;
    let proxy = proxy_with(origin.addr, "max_connections = 3, idle_timeout_ms = 300, head_timeout_ms = 300", "").await;
    let addr = proxy.local_addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}")));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fourth = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (answer, closed) = read_until_closed(&mut fourth, Duration::from_millis(200)).await;
    assert!(closed && answer.is_empty(), "a fourth connection was served: {answer:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;

    // A kept-alive connection: served, then closed once idle for idle + head timeout.
    let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle connection stayed open");
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(550) && idle < Duration::from_millis(1500), "closed after {idle:?}");
}
