//! Upstream resilience over real sockets: active health checks, retries of connect failures,
//! outlier ejection of a backend answering 500s, timeouts (504), drain, the 503 when no backend
//! is left, and backends that reset in the middle of a response.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How a [`Backend`] answers.
#[derive(Clone, Copy, PartialEq, Debug)]
#[repr(u8)]
enum Mode {
    /// 200 with `x-backend` and a body naming the backend.
    Ok = 0,
    /// 500.
    Fail = 1,
    /// Announces 1,000 bytes of body, sends 100, then resets the connection.
    ResetMidBody = 2,
    /// A chunked body: one chunk, then a reset instead of the last chunk.
    ResetMidChunks = 3,
}

/// A keep-alive HTTP/1.1 backend that can be stopped (listener and connections closed) and
/// started again on the same address, and told how to answer.
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    tasks: Option<JoinSet<()>>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut backend = Backend { name, addr, mode: Arc::new(AtomicU8::new(Mode::Ok as u8)), tasks: None };
        backend.serve(listener);
        backend
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, mode) = (self.name, self.mode.clone());
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve_connection(stream, name, mode.clone()));
            }
        });
        self.tasks = Some(tasks);
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Closes the listener and every connection: the process died.
    async fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Listens again on the same address.
    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap_or_else(|e| panic!("rebind {}: {e}", self.addr));
        self.serve(listener);
    }
}

async fn serve_connection(mut stream: TcpStream, name: &'static str, mode: Arc<AtomicU8>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head (these tests send no request bodies).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..end);
        let reply = match mode.load(Ordering::SeqCst) {
            0 => {
                let body = format!("hello from {name}\n");
                format!("HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-length: {}\r\n\r\n{body}", body.len())
            }
            1 => format!("HTTP/1.1 500 Internal Server Error\r\nx-backend: {name}\r\ncontent-length: 0\r\n\r\n"),
            2 => format!("HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-length: 1000\r\n\r\n{}", "x".repeat(100)),
            _ => format!(
                "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ntransfer-encoding: chunked\r\n\r\n64\r\n{}\r\n",
                "y".repeat(100)
            ),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if mode.load(Ordering::SeqCst) >= Mode::ResetMidBody as u8 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // SO_LINGER 0: closing sends a reset, not an orderly end. (Deprecated because a
            // non-zero linger blocks on drop; a zero one does not.)
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            return;
        }
    }
}

/// A proxy with one upstream `pool` over `backends` (plus `backend_extra` on each backend
/// table) and `upstream_extra` TOML keys.
async fn proxy(
    backends: &[&Backend],
    backend_extra: &[&str],
    upstream_extra: &str,
) -> switchyard::proxy::server::EmbeddedProxy {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "{{ address = \"{}\"{} }}",
                b.addr,
                backend_extra.get(i).map_or(String::new(), |e| format!(", {e}"))
            )
        })
        .collect();
    let toml = format!(
        "[[upstream]]\nname = \"pool\"\nbackends = [{}]\n{upstream_extra}\n\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"pool\"\n",
        list.join(", ")
    );
    common::proxy(common::must_build(&toml)).await
}

/// GET / through the proxy: the status and `x-backend`, or the error.
async fn hit(client: &reqwest::Client, proxy: SocketAddr) -> Result<(u16, String), String> {
    let r = client.get(format!("http://{proxy}/")).send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let backend = r.headers().get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    r.bytes().await.map_err(|e| format!("body: {e:?}"))?;
    Ok((status, backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_backend_costs_no_request_and_returns_after_its_healthy_threshold() {
    let a = Backend::start("a").await;
    let mut b = Backend::start("b").await;
    let proxy = proxy(
        &[&a, &b],
        &[],
        "health_check = { path = \"/health\", interval_ms = 100, timeout_ms = 200, healthy_threshold = 3, unhealthy_threshold = 2 }\nretries = { idempotent = true }",
    )
    .await;
    let addr = proxy.local_addr;

    // Steady load from four clients while b dies.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = JoinSet::new();
    for _ in 0..4 {
        let stop = stop.clone();
        load.spawn(async move {
            let client = common::client();
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                answers.push((Instant::now(), hit(&client, addr).await));
            }
            answers
        });
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = Instant::now();
    b.stop().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    while let Some(r) = load.join_next().await {
        answers.extend(r.unwrap_or_else(|e| panic!("{e}")));
    }
    let failed: Vec<_> = answers.iter().filter(|(_, r)| !matches!(r, Ok((200, _)))).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    let before = answers.iter().filter(|(t, r)| *t < killed && matches!(r, Ok((_, x)) if x == "b")).count();
    assert!(before > 10, "b served {before} requests before it died");
    // Two failed probes 100 ms apart take b out; nothing reaches it afterwards.
    let detected = killed + Duration::from_millis(500);
    let after: Vec<_> = answers.iter().filter(|(t, _)| *t > detected).collect();
    assert!(after.len() > 20 && after.iter().all(|(_, r)| matches!(r, Ok((_, x)) if x == "a")), "{after:?}");

    // b comes back: traffic returns after three passing probes (about 300 ms), not before.
    b.restart().await;
    let restarted = Instant::now();
    let client = common::client();
    let back = loop {
        if let Ok((200, x)) = hit(&client, addr).await
            && x == "b"
        {
            break restarted.elapsed();
        }
        assert!(restarted.elapsed() < Duration::from_secs(5), "b never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(back >= Duration::from_millis(190), "b served {back:?} after its restart, before three probes could pass");
    println!("{} requests, none failed; b back after {back:?}", answers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_500s_is_ejected_then_returns_after_its_ejection_time() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = proxy(&[&a, &b], &[], "outlier = { consecutive_failures = 3, base_ejection_ms = 600 }").await;
    let client = common::client();
    a.set_mode(Mode::Fail);
    // Round-robin: a's third 500 in a row ejects it (its 500s reach the client; no retry).
    let mut fives = 0;
    for _ in 0..6 {
        if let Ok((500, _)) = hit(&client, proxy.local_addr).await {
            fives += 1;
        }
    }
    assert_eq!(fives, 3);
    let ejected = Instant::now();
    a.set_mode(Mode::Ok);
    let mut during = Vec::new();
    while ejected.elapsed() < Duration::from_millis(450) {
        during.push(hit(&client, proxy.local_addr).await);
    }
    assert!(during.iter().all(|r| matches!(r, Ok((200, x)) if x == "b")), "{during:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut after = Vec::new();
    for _ in 0..10 {
        after.push(hit(&client, proxy.local_addr).await);
    }
    let from_a = after.iter().filter(|r| matches!(r, Ok((200, x)) if x == "a")).count();
    assert_eq!(from_a, 5, "a is back in the rotation: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_on_a_slow_backend_do_not_eject_it() {
    use tokio::io::AsyncWriteExt;
    let slow = common::slow_origin("slow", Duration::from_millis(300)).await;
    let fast = Backend::start("fast").await;
    let toml = format!(
        "[[upstream]]\nname = \"pool\"\nbackends = [{{ address = \"{slow}\" }}, {{ address = \"{}\" }}]\n\
         outlier = {{ consecutive_failures = 2, base_ejection_ms = 30000 }}\n\
         [[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"pool\"\n",
        fast.addr
    );
    let proxy = common::proxy(common::must_build(&toml)).await;
    // Eight clients send a request and hang up 50 ms later: round-robin gives four of them to the
    // slow backend, which has not answered by then.
    for _ in 0..8 {
        let mut client = TcpStream::connect(proxy.local_addr).await.unwrap_or_else(|e| panic!("{e}"));
        client.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await.unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(client);
    }
    // Each abandoned request has ended in the proxy by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = common::client();
    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(hit(&client, proxy.local_addr).await);
    }
    let from_slow = served.iter().filter(|r| matches!(r, Ok((200, x)) if x == "slow")).count();
    assert_eq!(from_slow, 2, "the slow backend was counted as failing for its clients' hang-ups: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gets_a_504_at_the_read_timeout_and_the_total_deadline() {
    let slow = common::slow_origin("slow", Duration::from_secs(3)).await;
    let client = common::client();
    for (extra, expected) in [
        ("timeouts = { read_ms = 300 }", Duration::from_millis(300)),
        ("timeouts = { read_ms = 5000, total_ms = 500 }", Duration::from_millis(500)),
    ] {
        let toml = format!(
            "[[upstream]]\nname = \"pool\"\nbackends = [{{ address = \"{slow}\" }}]\n{extra}\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"pool\"\n"
        );
        let proxy = common::proxy(common::must_build(&toml)).await;
        let started = Instant::now();
        let r = client.get(format!("http://{}/", proxy.local_addr)).send().await.unwrap_or_else(|e| panic!("{e}"));
        let took = started.elapsed();
        assert_eq!(r.status(), 504, "{extra}");
        assert!(took >= expected && took < expected + Duration::from_millis(400), "{extra}: 504 after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_backends_get_nothing_new_and_an_upstream_with_none_left_answers_503() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let client = common::client();
    let one_drained = proxy(&[&a, &b], &["drain = true"], "").await;
    for _ in 0..10 {
        assert_eq!(hit(&client, one_drained.local_addr).await, Ok((200, "b".to_string())));
    }
    let all_drained = proxy(&[&a, &b], &["drain = true", "drain = true"], "").await;
    let r = client.get(format!("http://{}/", all_drained.local_addr)).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("no healthy backend in upstream `pool`") && body.contains("2 draining"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_resetting_mid_response_is_a_failed_transfer_not_a_short_body() {
    let backend = Backend::start("r").await;
    let proxy = proxy(&[&backend], &[], "").await;
    let client = common::client();
    for mode in [Mode::ResetMidBody, Mode::ResetMidChunks] {
        backend.set_mode(mode);
        let result = match client.get(format!("http://{}/", proxy.local_addr)).send().await {
            Ok(r) => r.bytes().await.map(|b| b.len()).map_err(|e| format!("{e:?}")),
            Err(e) => Err(format!("{e:?}")),
        };
        assert!(result.is_err(), "{mode:?}: the client got a complete-looking body of {result:?} bytes");
    }
}

#[test]
fn out_of_range_resilience_settings_are_all_reported() {
    let toml = r#"
[[upstream]]
name = "pool"
backends = [{ address = "127.0.0.1:1" }]
timeouts = { connect_ms = 0, total_ms = 99999999999 }
health_check = { kind = "udp", interval_ms = 5, healthy_threshold = 0, expect_status = [500, 200] }
outlier = { max_ejected_percent = 150, base_ejection_ms = 1000, max_ejection_ms = 10 }
retries = { max_retries = 50, budget = 3 }

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "pool"
"#;
    let problems = common::build(toml).err().unwrap_or_else(|| panic!("accepted")).to_string();
    for expected in [
        "5:27: connect_ms must be between 1",
        "5:41: total_ms must be between 1",
        "6:25: unknown health check kind `udp`",
        "interval_ms must be between 10",
        "healthy_threshold must be between 1 and 1000",
        "expect_status is [lowest, highest]",
        "max_ejected_percent must be between 0 and 100",
        "max_ejection_ms must not be below base_ejection_ms",
        "max_retries must be between 0 and 10",
        "8:31: unknown key `retries.budget`",
    ] {
        assert!(problems.contains(expected), "missing {expected:?} in:\n{problems}");
    }
}
