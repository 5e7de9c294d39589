//! Strict HTTP/1 request framing: a second, stricter parser in front of Pingora's.
//!
//! Pingora parses what it forwards and re-frames it, but it accepts some things RFC 9112 calls
//! invalid (bare LF line ends, a bare LF in a chunk extension, an empty chunk size, two
//! `Transfer-Encoding` fields, codings it does not know, spaces in the target, which it escapes).
//! A front proxy that reads such a request differently from Switchyard could hide a second
//! request inside it. So every byte a client sends on an HTTP/1 connection first goes through
//! [`StrictStream`], which follows the requests' framing itself ([`head`], [`chunked`]) and
//! hands Pingora only what it has checked:
//!
//! - a head that breaks a rule is answered here, `4xx` with `Connection: close`, and Pingora
//!   never sees it (nor anything after it);
//! - a body that breaks a rule ends its request with an error that the proxy answers 400
//!   (when no response has started) and the connection closes;
//! - bytes after a request that asks for an `Upgrade` are held until the backend answers: they
//!   become the tunnel's after a 101, and the next request otherwise.
//!
//! Listeners named in `[server] lenient_listeners` skip this and get Pingora's own parsing.
//! HTTP/2 connections skip it too: their framing is the `h2` crate's.

pub mod chunked;
pub mod head;
pub mod stream;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::OnceLock;

use prometheus::{IntCounterVec, Opts};

pub use stream::{ConnectionProgress, StrictStream};

/// Why a request was refused: the status it gets, a short label for the metric, and the
/// detail the client and the log see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub status: u16,
    pub label: &'static str,
    pub detail: Cow<'static, str>,
}

impl Violation {
    /// A violation answered with `status`.
    pub fn new(status: u16, label: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Violation { status, label, detail: detail.into() }
    }

    /// A violation answered 400.
    pub fn bad(label: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Violation::new(400, label, detail)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed request ({}): {}", self.label, self.detail)
    }
}

impl std::error::Error for Violation {}

/// The status and message for a request that failed on a [`Violation`] found in its body, if
/// `error` (a Pingora error's cause) is one.
pub fn body_violation<'a>(error: &'a (dyn std::error::Error + Send + Sync + 'static)) -> Option<&'a Violation> {
    let io = error.downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref::<Violation>()
}

/// `switchyard_http_rejected_total{reason}`: requests refused by the strict parser.
pub fn rejected_metric() -> &'static IntCounterVec {
    static REJECTED: OnceLock<IntCounterVec> = OnceLock::new();
    REJECTED.get_or_init(|| {
        IntCounterVec::new(
            Opts::new("switchyard_http_rejected_total", "HTTP/1 requests refused by the strict parser, by reason"),
            &["reason"],
        )
        .unwrap_or_else(|e| panic!("the rejection metric is malformed: {e}"))
    })
}

/// Whether a connection that arrived at `local` came through one of the `lenient` listeners
/// (matching the port, and the address unless the listener's is unspecified).
pub fn is_lenient(lenient: &[SocketAddr], local: Option<SocketAddr>) -> bool {
    let Some(local) = local else { return false };
    lenient.iter().any(|l| l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_listeners_match_by_port_and_address() {
        let lenient: Vec<SocketAddr> = vec!["0.0.0.0:8081".parse().unwrap(), "127.0.0.2:8082".parse().unwrap()];
        assert!(is_lenient(&lenient, Some("127.0.0.1:8081".parse().unwrap())));
        assert!(is_lenient(&lenient, Some("127.0.0.2:8082".parse().unwrap())));
        assert!(!is_lenient(&lenient, Some("127.0.0.1:8082".parse().unwrap())));
        assert!(!is_lenient(&lenient, Some("127.0.0.1:8080".parse().unwrap())));
        assert!(!is_lenient(&lenient, None));
    }

    #[test]
    fn a_body_violation_is_found_inside_an_io_error() {
        let violation = Violation::bad("chunked", "x");
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, violation.clone());
        assert_eq!(body_violation(&io), Some(&violation));
        let other = std::io::Error::other("no");
        assert_eq!(body_violation(&other), None);
    }
}
