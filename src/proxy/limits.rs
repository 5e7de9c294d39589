//! Limits on what clients may send and hold (`[server] limits`, and a route's `max_body_bytes`):
//! read from the configuration with every out-of-range value reported, and checked on request
//! heads (431) and bodies (413). The connection-level ones (head deadline, idle time, connection
//! count) are enforced by [`super::connection`].

use std::time::Duration;

use pingora::http::RequestHeader;
use toml::Spanned;

use crate::config::model::LimitsSection;
use crate::config::{Collector, in_range};

/// The client limits of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// For routes without their own `max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Open streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_connections: 10_000,
            max_body_bytes: None,
            h2_max_concurrent_streams: 100,
        }
    }
}

/// Pingora refuses heads above 1 MiB and 256 headers itself (with 400), before any limit here.
const PINGORA_MAX_HEADER_BYTES: u64 = 1 << 20;
const PINGORA_MAX_HEADERS: u64 = 256;

/// A body limit: at least 1 byte.
pub fn body_limit(value: &Option<Spanned<u64>>, c: &mut Collector<'_>) -> Option<u64> {
    value.as_ref().map(|_| in_range(value, "max_body_bytes", (1, u64::MAX), u64::MAX, c))
}

impl ClientLimits {
    /// The limits `[server] limits` sets.
    pub fn from_config(l: &LimitsSection, c: &mut Collector<'_>) -> ClientLimits {
        let d = ClientLimits::default();
        let ms = |d: Duration| d.as_millis() as u64;
        ClientLimits {
            head_timeout: Duration::from_millis(in_range(
                &l.head_timeout_ms,
                "head_timeout_ms",
                (100, 3_600_000),
                ms(d.head_timeout),
                c,
            )),
            idle_timeout: Duration::from_millis(in_range(
                &l.idle_timeout_ms,
                "idle_timeout_ms",
                (100, 86_400_000),
                ms(d.idle_timeout),
                c,
            )),
            max_header_bytes: in_range(
                &l.max_header_bytes,
                "max_header_bytes",
                (1024, PINGORA_MAX_HEADER_BYTES),
                d.max_header_bytes as u64,
                c,
            ) as usize,
            max_headers: in_range(&l.max_headers, "max_headers", (1, PINGORA_MAX_HEADERS), d.max_headers as u64, c)
                as usize,
            max_connections: in_range(
                &l.max_connections,
                "max_connections",
                (1, 10_000_000),
                d.max_connections as u64,
                c,
            ) as usize,
            max_body_bytes: body_limit(&l.max_body_bytes, c),
            h2_max_concurrent_streams: in_range(
                &l.h2_max_concurrent_streams,
                "h2_max_concurrent_streams",
                (1, 10_000),
                u64::from(d.h2_max_concurrent_streams),
                c,
            ) as u32,
        }
    }

    /// The HTTP/2 settings for client connections: at most `h2_max_concurrent_streams` open
    /// streams, a decoded header list of at most `max_header_bytes` (which also bounds a flood of
    /// CONTINUATION frames), and the `h2` crate's guards against reset floods made explicit: a
    /// client whose streams are reset before the proxy accepts them more than 20 times, or who
    /// makes the proxy reset more than 1024 streams for its errors, is sent GOAWAY.
    pub fn h2_options(&self) -> pingora::protocols::http::v2::server::H2Options {
        let mut options = pingora::protocols::http::v2::server::H2Options::default();
        options
            .max_concurrent_streams(self.h2_max_concurrent_streams)
            .max_header_list_size(self.max_header_bytes as u32)
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(Some(1024));
        options
    }

    /// Why `head` is over the limits, if it is (the answer is 431).
    pub fn head_problem(&self, head: &RequestHeader) -> Option<String> {
        let count = head.headers.len();
        if count > self.max_headers {
            return Some(format!("{count} request headers; at most {} are accepted", self.max_headers));
        }
        // The request line, then `name: value\r\n` per header.
        let line = head.method.as_str().len() + head.raw_path().len() + 12;
        let bytes: usize = line + head.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>();
        (bytes > self.max_header_bytes)
            .then(|| format!("a request head of {bytes} bytes; at most {} are accepted", self.max_header_bytes))
    }
}
