//! [`StrictStream`]: a client connection whose incoming bytes reach Pingora only once checked.
//!
//! Bytes read from the client land in a buffer. The front of it (`ready`) has been checked and
//! is handed to Pingora's reads; the rest is a head still arriving, or bytes held after an
//! upgrade request. A head is checked whole before any of it is handed on, so Pingora never
//! starts on a request the strict parser refuses. Writes pass straight through.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Violation;
use super::chunked::ChunkedBody;
use super::head::{BodyFraming, check_head};

/// How much is read from the client at a time.
const READ_SIZE: usize = 16 << 10;
/// After a refused head: how much of what the client still sends is read and dropped, and for
/// how long, before the connection closes (closing with unread data would reset the connection
/// and could destroy the answer before the client reads it).
const DRAIN_LIMIT: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// What the proxy tells the connection's strict stream about the requests it handed on.
#[derive(Debug, Default)]
pub struct ConnectionProgress {
    /// Requests the proxy has finished on this connection.
    requests_done: AtomicU64,
    /// The backend answered an upgrade request with 101: the connection is now a tunnel.
    upgraded: AtomicBool,
    /// The read waiting for one of the above.
    reader: Mutex<Option<Waker>>,
}

impl ConnectionProgress {
    /// A request ended.
    pub fn request_done(&self) {
        self.requests_done.fetch_add(1, Ordering::AcqRel);
        self.wake();
    }

    /// The response to an upgrade request is a 101.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            waker.wake();
        }
    }

    fn park(&self, waker: &Waker) {
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
    }
}

/// Where the stream is in the client's byte stream.
#[derive(Debug)]
enum Framing {
    /// At (or inside) a request head.
    Head,
    /// Inside a body of known length: bytes left.
    Length(u64),
    Chunked(ChunkedBody),
    /// After a 101: bytes pass unchecked.
    Tunnel,
}

/// Answering a refused head: the answer's bytes written so far, then the drain.
#[derive(Debug)]
struct Refusal {
    answer: Vec<u8>,
    written: usize,
    shut: bool,
    drained: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A client connection checked by the strict HTTP/1 parser. See the module docs.
#[derive(Debug)]
pub struct StrictStream {
    inner: Stream,
    buf: BytesMut,
    /// Checked bytes at the front of `buf`, not yet handed to Pingora.
    ready: usize,
    /// Bytes of `buf[ready..]` already searched for a head's end.
    head_scanned: usize,
    framing: Framing,
    /// Heads handed on so far (the n-th request on the connection).
    heads: u64,
    /// The request with this number asked for an upgrade and is not answered yet: what follows
    /// it is held.
    upgrade_request: Option<u64>,
    /// The first violation after the ready bytes.
    found: Option<Violation>,
    /// A violation in a body was reported to Pingora: reads fail from now on.
    body_failed: Option<Violation>,
    refusal: Option<Refusal>,
    client_eof: bool,
    max_head_bytes: usize,
    progress: Arc<ConnectionProgress>,
}

impl StrictStream {
    /// Checks what the client sends on `inner`, refusing heads over `max_head_bytes` (431).
    pub fn new(inner: Stream, max_head_bytes: usize, progress: Arc<ConnectionProgress>) -> Self {
        StrictStream {
            inner,
            buf: BytesMut::new(),
            ready: 0,
            head_scanned: 0,
            framing: Framing::Head,
            heads: 0,
            upgrade_request: None,
            found: None,
            body_failed: None,
            refusal: None,
            client_eof: false,
            max_head_bytes,
            progress,
        }
    }

    /// Whether every request handed on has ended (so nothing else is being answered).
    fn all_requests_done(&self) -> bool {
        self.progress.requests_done.load(Ordering::Acquire) >= self.heads
    }

    /// Checks as much of the unchecked bytes as possible, moving `ready` forward.
    fn check(&mut self) {
        while self.found.is_none() && self.ready < self.buf.len() {
            let unchecked = self.buf.len() - self.ready;
            match &mut self.framing {
                Framing::Tunnel => self.ready = self.buf.len(),
                Framing::Length(left) => {
                    let take = (*left).min(unchecked as u64);
                    self.ready += take as usize;
                    *left -= take;
                    if *left == 0 {
                        self.framing = Framing::Head;
                    }
                }
                Framing::Chunked(body) => match body.scan(&self.buf[self.ready..]) {
                    Ok(used) => {
                        self.ready += used;
                        if body.is_done() {
                            self.framing = Framing::Head;
                        }
                    }
                    Err(v) => self.found = Some(v),
                },
                Framing::Head => {
                    if self.upgrade_request.is_some() || !self.check_head() {
                        return;
                    }
                }
            }
        }
    }

    /// Looks for the end of the head at `buf[ready..]` and checks the head once it is whole.
    /// `false` when more bytes are needed or a violation was found.
    fn check_head(&mut self) -> bool {
        // Empty lines before a request line are allowed (RFC 9112 §2.2), as CRLF only.
        while self.head_scanned == 0 && self.buf[self.ready..].starts_with(b"\r\n") {
            self.ready += 2;
        }
        let start = self.ready;
        let unchecked = &self.buf[start..];
        if unchecked.is_empty() || unchecked == b"\r" {
            return false;
        }
        let mut end = None;
        let scan_from = self.head_scanned.min(unchecked.len());
        for i in memchr::memchr_iter(b'\n', &unchecked[scan_from..]).map(|i| i + scan_from) {
            if i == 0 || unchecked[i - 1] != b'\r' {
                self.found = Some(Violation::bad("bare-lf", "a line ends in LF without CR"));
                return false;
            }
            if i >= 3 && &unchecked[i - 3..=i] == b"\r\n\r\n" {
                end = Some(i + 1);
                break;
            }
        }
        if end.unwrap_or(unchecked.len()) > self.max_head_bytes {
            self.found = Some(Violation::new(431, "head-size", "the request head is too large"));
            return false;
        }
        let Some(end) = end else {
            self.head_scanned = unchecked.len();
            return false;
        };
        self.head_scanned = 0;
        match check_head(&unchecked[..end]) {
            Ok(info) => {
                self.ready += end;
                self.heads += 1;
                if info.upgrade {
                    self.upgrade_request = Some(self.heads);
                }
                self.framing = match info.framing {
                    BodyFraming::None | BodyFraming::Length(0) => Framing::Head,
                    BodyFraming::Length(n) => Framing::Length(n),
                    BodyFraming::Chunked => Framing::Chunked(ChunkedBody::new(self.max_head_bytes)),
                };
                true
            }
            Err(v) => {
                self.found = Some(v);
                false
            }
        }
    }

    /// Settles a held upgrade: the tunnel after a 101, the next request once it was answered
    /// otherwise.
    fn settle_upgrade(&mut self) {
        let Some(request) = self.upgrade_request else { return };
        if self.progress.upgraded.load(Ordering::Acquire) {
            self.upgrade_request = None;
            self.found = None;
            self.framing = Framing::Tunnel;
        } else if self.progress.requests_done.load(Ordering::Acquire) >= request {
            self.upgrade_request = None;
        }
    }

    /// Reads more from the client into `buf`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        let spare = self.buf.spare_capacity_mut();
        let mut read = ReadBuf::uninit(spare);
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Poll::Ready(Ok(n))
    }

    /// Counts and logs a refused request.
    fn record(&self, violation: &Violation) {
        super::rejected_metric().with_label_values(&[violation.label]).inc();
        tracing::info!(target: "switchyard::access", client = %self.client(), status = violation.status, "refused: {violation}");
    }

    /// Starts answering the violation found in a head: records it and prepares the answer.
    fn refuse(&mut self, violation: &Violation) {
        self.record(violation);
        let reason = http::StatusCode::from_u16(violation.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        let body = format!("{}\n", violation.detail);
        let answer = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            violation.status,
            body.len()
        );
        self.refusal =
            Some(Refusal { answer: answer.into_bytes(), written: 0, shut: false, drained: 0, deadline: None });
    }

    fn client(&self) -> String {
        self.inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_else(|| "-".to_string())
    }

    /// Writes the refusal, shuts the write side, and drains for a while; then ends the stream
    /// (an end of file for Pingora, which has seen none of the refused head).
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let StrictStream { inner, refusal, .. } = self;
        let Some(refusal) = refusal.as_mut() else { return Poll::Ready(Ok(())) };
        let mut inner = Pin::new(inner);
        while refusal.written < refusal.answer.len() {
            match std::task::ready!(inner.as_mut().poll_write(cx, &refusal.answer[refusal.written..])) {
                Ok(0) | Err(_) => return Poll::Ready(Ok(())),
                Ok(n) => refusal.written += n,
            }
        }
        if !refusal.shut {
            if std::task::ready!(inner.as_mut().poll_flush(cx)).is_err() {
                return Poll::Ready(Ok(()));
            }
            let _ = std::task::ready!(inner.as_mut().poll_shutdown(cx));
            refusal.shut = true;
        }
        let deadline = refusal.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(DRAIN_TIME)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let mut scratch = [0u8; 4096];
        while refusal.drained < DRAIN_LIMIT {
            let mut read = ReadBuf::new(&mut scratch);
            match std::task::ready!(inner.as_mut().poll_read(cx, &mut read)) {
                Ok(()) if !read.filled().is_empty() => refusal.drained += read.filled().len(),
                _ => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for StrictStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.refusal.is_some() {
                return this.poll_refusal(cx);
            }
            if this.upgrade_request.is_some() {
                // Parked first, so a 101 or the request's end in between is not missed.
                this.progress.park(cx.waker());
                this.settle_upgrade();
                this.check();
            }
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some(v) = &this.body_failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v.clone())));
            }
            if let Some(v) = this.found.take() {
                if matches!(this.framing, Framing::Head) {
                    this.progress.park(cx.waker());
                    if this.all_requests_done() {
                        this.refuse(&v);
                        continue;
                    }
                    // A response is still on its way: the refusal waits for it.
                    this.found = Some(v);
                    return Poll::Pending;
                }
                this.record(&v);
                this.body_failed = Some(v);
                continue;
            }
            if this.upgrade_request.is_some() && this.buf.len() > this.max_head_bytes {
                // Held bytes are bounded: the client waits (the reader is parked above).
                return Poll::Pending;
            }
            if this.client_eof {
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(this.poll_fill(cx)) {
                Ok(0) => this.client_eof = true,
                Ok(_) => this.check(),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for StrictStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            // The connection is closing with the refusal; nothing else goes out.
            return Poll::Ready(Ok(data.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for StrictStream {
    async fn shutdown(&mut self) {
        if self.refusal.is_none() {
            self.inner.shutdown().await;
        }
    }
}

impl UniqueID for StrictStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for StrictStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for StrictStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for StrictStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for StrictStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

/// Peeking would show bytes not yet checked, so this stream does not support it (Pingora then
/// reads instead; it peeks only for an h2c preface, which is off).
#[async_trait]
impl Peek for StrictStream {}
