//! Streaming bodies through the real binary: a 1 GiB upload and a 1 GiB download, with the
//! proxy's peak resident memory (VmHWM) measured against what it used before.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const GIB: u64 = 1 << 30;
const CHUNK: usize = 256 << 10;

/// An origin that answers `GET /download` with 1 GiB and `POST /upload` with the number of body
/// bytes it read (Content-Length bodies).
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = serve(stream).await;
            });
        }
    });
    addr
}

async fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut length = 0u64;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).await?;
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        if line.starts_with("GET /download") {
            reader.get_mut().write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {GIB}\r\n\r\n").as_bytes()).await?;
            let chunk = vec![7u8; CHUNK];
            let mut sent = 0;
            while sent < GIB {
                reader.get_mut().write_all(&chunk).await?;
                sent += CHUNK as u64;
            }
        } else {
            let mut left = length;
            let mut buf = vec![0u8; CHUNK];
            while left > 0 {
                let n = reader.read(&mut buf[..CHUNK.min(left as usize)]).await?;
                if n == 0 {
                    return Ok(());
                }
                left -= n as u64;
            }
            let body = format!("{length}");
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            reader.get_mut().write_all(reply.as_bytes()).await?;
        }
    }
}

/// Resident and peak resident memory of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reads a response head from `stream`; the status and the Content-Length.
async fn read_head(stream: &mut BufReader<TcpStream>) -> (u16, u64) {
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap_or_else(|e| panic!("{e}"));
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0;
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).await.unwrap_or_else(|e| panic!("{e}"));
        if header.trim().is_empty() {
            return (status, length);
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_each_way_streams_through_with_bounded_memory() {
    let origin = origin().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let listen = common::closed_port();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"{listen}\"]\nthreads = 1\n[[upstream]]\nname = \"o\"\nbackends = [{{ address = \"{origin}\" }}]\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"o\"\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let proxy = common::RunningBinary::start(&config);
    let pid = proxy.pid();
    let started = Instant::now();
    let mut warm = None;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(mut s) = TcpStream::connect(listen).await {
            // A small request first, so the memory baseline includes a served request.
            s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut reader = BufReader::new(s);
            warm = Some(read_head(&mut reader).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(warm.map(|w| w.0), Some(200), "the proxy did not come up");
    let (baseline, _) = memory_kib(pid);

    // Upload: 1 GiB with a Content-Length; the origin counts what arrives.
    let upload = Instant::now();
    let mut stream = TcpStream::connect(listen).await.unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let chunk = vec![3u8; CHUNK];
    for _ in 0..(GIB / CHUNK as u64) {
        stream.write_all(&chunk).await.unwrap_or_else(|e| panic!("upload: {e}"));
    }
    let mut reader = BufReader::new(stream);
    let (status, length) = read_head(&mut reader).await;
    let mut body = vec![0u8; length as usize];
    reader.read_exact(&mut body).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((status, String::from_utf8_lossy(&body).into_owned()), (200, GIB.to_string()));
    let upload = upload.elapsed();

    // Download: 1 GiB, read and counted.
    let download = Instant::now();
    let mut stream = TcpStream::connect(listen).await.unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::with_capacity(CHUNK, stream);
    let (status, length) = read_head(&mut reader).await;
    assert_eq!((status, length), (200, GIB));
    let mut buf = vec![0u8; CHUNK];
    let mut received = 0u64;
    while received < GIB {
        let n = reader.read(&mut buf).await.unwrap_or_else(|e| panic!("download: {e}"));
        assert!(n > 0, "the download ended after {received} bytes");
        received += n as u64;
    }
    let download = download.elapsed();

    let (_, peak) = memory_kib(pid);
    let growth_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
    println!(
        "proxy RSS {:.1} MiB before, peak {:.1} MiB: +{growth_mib:.1} MiB; upload {:.0} MiB/s, download {:.0} MiB/s",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        1024.0 / upload.as_secs_f64(),
        1024.0 / download.as_secs_f64()
    );
    assert!(growth_mib < 64.0, "the proxy's peak memory grew by {growth_mib:.1} MiB");
}
