//! Hop-by-hop headers a sender names in `Connection` (RFC 9110 §7.6.1): they concern one
//! connection only and are removed before a message is forwarded. `Upgrade` stays: Pingora carries
//! protocol upgrades (WebSockets) itself.

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, UPGRADE};

/// The headers `Connection` names in `headers`, to be removed before forwarding. Framing headers
/// (`Content-Length`, `Transfer-Encoding`), `Host` and `Upgrade` are never among them.
pub fn connection_nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    let Some(connection) = headers.get(CONNECTION) else { return Vec::new() };
    connection
        .to_str()
        .unwrap_or("")
        .split(',')
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| {
            *name != UPGRADE
                && *name != CONNECTION
                && *name != http::header::CONTENT_LENGTH
                && *name != http::header::TRANSFER_ENCODING
                && *name != http::header::HOST
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominated_headers_go_and_framing_and_upgrade_stay() {
        let mut headers = HeaderMap::new();
        for (n, v) in [
            ("connection", "Upgrade, X-Hop, content-length, close"),
            ("x-hop", "secret"),
            ("upgrade", "websocket"),
            ("content-length", "3"),
            ("x-kept", "1"),
        ] {
            headers.append(HeaderName::from_static(n), v.parse().unwrap_or_else(|e| panic!("{e}")));
        }
        for name in connection_nominated(&headers) {
            headers.remove(name);
        }
        assert!(headers.get("x-hop").is_none());
        assert!(headers.get("upgrade").is_some());
        assert!(headers.get("content-length").is_some());
        assert!(headers.get("x-kept").is_some());
    }
}
