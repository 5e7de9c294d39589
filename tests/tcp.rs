//! `[[tcp]]` routes on the real binary: a TCP echo service with two backends balanced
//! round-robin, a backend that stops accepting skipped without failing a connection, and the
//! connection counts in the metrics.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A TCP service that greets with its name on a line, then echoes every byte. Dropping the
/// handle stops it accepting.
async fn echo_backend(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if stream.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (addr, task)
}

/// Opens a connection through the route: which backend greeted, after echoing `payload` back.
async fn echo_through(addr: SocketAddr, payload: &[u8]) -> String {
    let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect: {e}"));
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut greeting))
        .await
        .unwrap_or_else(|_| panic!("no greeting"))
        .unwrap_or_else(|e| panic!("greeting: {e}"));
    let (mut read, mut write) = reader.into_inner().into_split();
    let sent = payload.to_vec();
    let writer = tokio::spawn(async move { write.write_all(&sent).await.map(|_| write) });
    let mut echoed = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), read.read_exact(&mut echoed))
        .await
        .unwrap_or_else(|_| panic!("echo timed out"))
        .unwrap_or_else(|e| panic!("echo: {e}"));
    assert!(echoed == payload, "the echo differs from what was sent");
    drop(writer.await);
    greeting.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_echo_service_is_balanced_over_two_backends_and_counted() {
    let (a, _a_task) = echo_backend("a").await;
    let (b, b_task) = echo_backend("b").await;
    let (listen, tcp_listen, admin) = (common::closed_port(), common::closed_port(), common::closed_port());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = ["{listen}"]
threads = 1
[admin]
listen = "{admin}"
[[upstream]]
name = "echo"
backends = [{{ address = "{a}" }}, {{ address = "{b}" }}]
[[site]]
hosts = ["*"]
[[site.route]]
upstream = "echo"
[[tcp]]
name = "echo"
listen = "{tcp_listen}"
upstream = "echo"
"#
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _proxy = common::RunningBinary::start(&config);
    let started = Instant::now();
    while TcpStream::connect(tcp_listen).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the tcp route never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // That probe connection was one too: the next one goes to the other backend.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let payload: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    let mut greeted = Vec::new();
    for _ in 0..4 {
        greeted.push(echo_through(tcp_listen, &payload).await);
    }
    let (from_a, from_b) = (greeted.iter().filter(|g| *g == "a").count(), greeted.iter().filter(|g| *g == "b").count());
    assert_eq!((from_a, from_b), (2, 2), "round-robin over two backends: {greeted:?}");

    // b stops accepting: its connections are refused, and the route goes to a without failing.
    b_task.abort();
    let _ = b_task.await;
    for _ in 0..3 {
        assert_eq!(echo_through(tcp_listen, b"still here").await, "a");
    }

    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(metrics.contains("switchyard_tcp_connections_total{result=\"proxied\",route=\"echo\"} 8"), "{metrics}");
    assert!(metrics.contains("switchyard_tcp_connections_active{route=\"echo\"}"), "{metrics}");
}
