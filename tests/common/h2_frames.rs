//! Raw HTTP/2 frames for the hardening tests: just enough to send what a well-behaved client
//! library never would (control bytes in values, connection-specific fields, CONTINUATION and
//! reset floods) and to read the frames the server answers with.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }

    /// The parameters of a SETTINGS frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|p| (u16::from_be_bytes([p[0], p[1]]), u32::from_be_bytes([p[2], p[3], p[4], p[5]])))
            .collect()
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing (no Huffman): any bytes go through as
/// they are, which is the point.
pub fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// The pseudo-header fields of a GET for `path` on `authority`, then `extra`.
pub fn get_request<'a>(authority: &'a [u8], path: &'a [u8], extra: &[(&'a [u8], &'a [u8])]) -> Vec<u8> {
    let mut fields: Vec<(&[u8], &[u8])> =
        vec![(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority), (b":path", path)];
    fields.extend_from_slice(extra);
    header_block(&fields)
}

/// Reads one frame, or `None` when the connection closed or nothing came for `wait`.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> Option<Frame> {
    let mut head = [0u8; 9];
    tokio::time::timeout(wait, stream.read_exact(&mut head)).await.ok()?.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tokio::time::timeout(wait, stream.read_exact(&mut payload)).await.ok()?.ok()?;
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame { kind: head[3], flags: head[4], stream: stream_id, payload })
}

/// Sends the preface and empty SETTINGS, and acknowledges the server's: returns its SETTINGS.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Frame {
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.unwrap_or_else(|e| panic!("preface: {e}"));
    loop {
        let f = read_frame(stream, Duration::from_secs(5)).await.unwrap_or_else(|| panic!("no SETTINGS"));
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap_or_else(|e| panic!("ack: {e}"));
            return f;
        }
    }
}

/// Every frame until the connection closes or is quiet for `quiet`.
pub async fn read_all<S: AsyncRead + Unpin>(stream: &mut S, quiet: Duration) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(f) = read_frame(stream, quiet).await {
        frames.push(f);
    }
    frames
}
