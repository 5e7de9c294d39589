//! The request and response heads as plugins see them: the live Pingora headers, moved into the
//! plugin's store for the duration of a call, plus the per-request facts plugins may read.
//!
//! Heads are moved with `std::mem::swap`, never copied: a plugin call costs what the plugin
//! reads, not the size of the request. Every change goes through the same checks, so no plugin
//! can alter framing or hop-by-hop headers, or give a request a second Host.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
// The rule for every header change (framing and hop-by-hop headers never change, a request keeps
// exactly one Host) lives in the SDK's test kit, so plugin unit tests refuse exactly what the
// proxy refuses.
use switchyard_sdk::testkit::{HeaderChange, refused_header_change};

/// A request head and what plugins may know about the request it belongs to.
#[derive(Debug)]
pub struct RequestView {
    /// The head as it will be sent upstream. Boxed so that moving a view in and out of a
    /// plugin's store per call moves a pointer, not the whole head.
    pub head: Box<RequestHeader>,
    /// The client's address, when known.
    pub client_ip: Option<IpAddr>,
    /// The port of the listener the client connected to; 0 when unknown.
    pub server_port: u16,
    /// Whether the client connected over TLS.
    pub https: bool,
    /// Values plugins left for later plugins and the access log (`set-context`).
    pub context: Vec<(String, String)>,
}

/// An empty head to hold a place while the real one is elsewhere.
pub fn placeholder_request_head() -> RequestHeader {
    let (parts, ()) = http::Request::new(()).into_parts();
    RequestHeader::from(parts)
}

/// An empty response head to hold a place while the real one is elsewhere.
pub fn placeholder_response_head() -> ResponseHeader {
    let (parts, ()) = http::Response::new(()).into_parts();
    ResponseHeader::from(parts)
}

impl Default for RequestView {
    fn default() -> Self {
        RequestView {
            head: Box::new(placeholder_request_head()),
            client_ip: None,
            server_port: 0,
            https: false,
            context: Vec::new(),
        }
    }
}

fn lossy(value: &HeaderValue) -> String {
    match value.to_str() {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
    }
}

/// Validates a header change a plugin asked for; `value` is `None` for a removal.
pub fn checked_header(
    name: &str,
    value: Option<&str>,
    change: HeaderChange,
    is_request: bool,
) -> Result<(HeaderName, Option<HeaderValue>), String> {
    let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
    let lower = header_name.as_str();
    if let Some(refusal) = refused_header_change(lower, change, is_request) {
        return Err(refusal);
    }
    let header_value = match value {
        Some(v) => Some(HeaderValue::from_str(v).map_err(|_| format!("invalid value for header {lower}"))?),
        None => None,
    };
    Ok((header_name, header_value))
}

impl RequestView {
    /// The method as text.
    pub fn method(&self) -> &str {
        self.head.method.as_str()
    }

    /// The requested host: the target's authority, else the `Host` header; lowercased, without
    /// port or trailing dot.
    pub fn host(&self) -> String {
        self.host_unnormalized().to_ascii_lowercase()
    }

    /// [`RequestView::host`] before lowercasing.
    pub fn host_unnormalized(&self) -> &str {
        let raw: &str = match self.head.uri.host() {
            Some(h) => h,
            None => match self.head.headers.get(http::header::HOST) {
                // A Host value that is not visible ASCII cannot name a host we route.
                Some(v) => v.to_str().unwrap_or(""),
                None => "",
            },
        };
        let without_port = if let Some(v6) = raw.strip_prefix('[') {
            v6.split_once(']').map_or(v6, |(h, _)| h)
        } else {
            match raw.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => raw,
            }
        };
        without_port.trim_end_matches('.')
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        self.head.uri.path()
    }

    /// The query of the target, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.head.uri.query()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.headers.get(name).map(lossy)
    }

    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.head.headers.get_all(name).iter().map(lossy).collect()
    }

    /// Lowercased header names, each once.
    pub fn header_names(&self) -> Vec<String> {
        self.head.headers.keys().map(|k| k.as_str().to_string()).collect()
    }

    /// Replaces a header's values.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        let (name, value) = checked_header(name, Some(value), HeaderChange::Set, true)?;
        let value = value.ok_or("missing value")?;
        self.set_checked_header(name, value)
    }

    /// Adds a header value.
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        let (name, value) = checked_header(name, Some(value), HeaderChange::Append, true)?;
        let value = value.ok_or("missing value")?;
        self.append_checked_header(name, value)
    }

    /// [`RequestView::set_header`] for a name and value [`checked_header`] has let through.
    pub(crate) fn set_checked_header(&mut self, name: HeaderName, value: HeaderValue) -> Result<(), String> {
        self.head.insert_header(name, value).map_err(|e| e.to_string())
    }

    /// [`RequestView::append_header`] for a name and value [`checked_header`] has let through.
    pub(crate) fn append_checked_header(&mut self, name: HeaderName, value: HeaderValue) -> Result<(), String> {
        self.head.append_header(name, value).map(|_| ()).map_err(|e| e.to_string())
    }

    /// Removes a header.
    pub fn remove_header(&mut self, name: &str) -> Result<(), String> {
        let (name, _) = checked_header(name, None, HeaderChange::Remove, true)?;
        self.head.remove_header(&name);
        Ok(())
    }

    /// Replaces path and query: visible ASCII only (percent-encode the rest), starting with
    /// `/`, without a `#fragment` (the same rules the strict parser applies to clients).
    pub fn set_path_and_query(&mut self, path_and_query: &str) -> Result<(), String> {
        if !path_and_query.starts_with('/') {
            return Err(format!("path must start with '/': {path_and_query:?}"));
        }
        if let Some(b) = path_and_query.bytes().find(|b| !(0x21..=0x7e).contains(b) || *b == b'#') {
            return Err(format!(
                "path {path_and_query:?} has {}: only visible ASCII without a fragment is allowed (percent-encode the rest)",
                if b == b'#' { "a fragment".to_string() } else { format!("the byte 0x{b:02x}") }
            ));
        }
        let mut parts = self.head.uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse().map_err(|_| format!("invalid path {path_and_query:?}"))?);
        let uri = http::Uri::from_parts(parts).map_err(|e| e.to_string())?;
        self.head.set_uri(uri);
        Ok(())
    }

    /// A context value.
    pub fn context(&self, key: &str) -> Option<&str> {
        self.context.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets a context value.
    pub fn set_context(&mut self, key: &str, value: &str) {
        match self.context.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.context.push((key.to_string(), value.to_string())),
        }
    }
}

/// Response-head operations with the plugin checks applied.
pub mod response {
    use super::*;

    /// The first value of a header.
    pub fn header(head: &ResponseHeader, name: &str) -> Option<String> {
        head.headers.get(name).map(lossy)
    }

    /// All values of a header.
    pub fn header_all(head: &ResponseHeader, name: &str) -> Vec<String> {
        head.headers.get_all(name).iter().map(lossy).collect()
    }

    /// Replaces a header's values.
    pub fn set_header(head: &mut ResponseHeader, name: &str, value: &str) -> Result<(), String> {
        let (name, value) = checked_header(name, Some(value), HeaderChange::Set, false)?;
        set_checked_header(head, name, value.ok_or("missing value")?)
    }

    /// Adds a header value.
    pub fn append_header(head: &mut ResponseHeader, name: &str, value: &str) -> Result<(), String> {
        let (name, value) = checked_header(name, Some(value), HeaderChange::Append, false)?;
        append_checked_header(head, name, value.ok_or("missing value")?)
    }

    /// [`set_header`] for a name and value [`checked_header`] has let through.
    pub(crate) fn set_checked_header(
        head: &mut ResponseHeader,
        name: HeaderName,
        value: HeaderValue,
    ) -> Result<(), String> {
        head.insert_header(name, value).map_err(|e| e.to_string())
    }

    /// [`append_header`] for a name and value [`checked_header`] has let through.
    pub(crate) fn append_checked_header(
        head: &mut ResponseHeader,
        name: HeaderName,
        value: HeaderValue,
    ) -> Result<(), String> {
        head.append_header(name, value).map(|_| ()).map_err(|e| e.to_string())
    }

    /// Removes a header.
    pub fn remove_header(head: &mut ResponseHeader, name: &str) -> Result<(), String> {
        let (name, _) = checked_header(name, None, HeaderChange::Remove, false)?;
        head.remove_header(&name);
        Ok(())
    }

    /// Changes the status.
    pub fn set_status(head: &mut ResponseHeader, status: u16) -> Result<(), String> {
        if !(100..=999).contains(&status) {
            return Err(format!("invalid status {status}"));
        }
        head.set_status(status).map_err(|e| e.to_string())
    }
}

/// Validates a header of a reply a plugin composed (same rules as `append-header` on a response:
/// the reply's headers are added one by one).
pub fn checked_response_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = checked_header(name, Some(value), HeaderChange::Append, false)?;
    Ok((name, value.ok_or("missing value")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(target: &str, headers: &[(&str, &str)]) -> RequestView {
        let mut head = match RequestHeader::build("GET", target.as_bytes(), None) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        };
        for (n, v) in headers {
            let _ = head.append_header(n.to_string(), *v);
        }
        RequestView { head: Box::new(head), ..RequestView::default() }
    }

    #[test]
    fn host_comes_from_authority_or_host_header_without_port() {
        assert_eq!(view("/", &[("Host", "Example.COM:8080")]).host(), "example.com");
        assert_eq!(view("/", &[("Host", "[::1]:80")]).host(), "::1");
        // Pingora keeps an absolute-form target's authority out of the Uri and reconciles it
        // with Host itself, so Host is what the proxy routes on.
        assert_eq!(view("http://a.example/x", &[("Host", "B.example")]).host(), "b.example");
        assert_eq!(view("/", &[("Host", "trailing.example.")]).host(), "trailing.example");
        assert_eq!(view("/", &[]).host(), "");
    }

    #[test]
    fn framing_headers_cannot_be_changed() {
        let mut v = view("/", &[("Content-Length", "5")]);
        assert!(v.set_header("content-length", "0").is_err());
        assert!(v.remove_header("Transfer-Encoding").is_err());
        assert!(v.remove_header("host").is_err());
        assert!(v.set_header("x-a", "b\nc").is_err());
        assert!(v.set_header("bad name", "x").is_err());
        assert_eq!(v.header("content-length").as_deref(), Some("5"));
    }

    #[test]
    fn the_host_header_can_be_replaced_but_never_doubled_or_removed() {
        let mut v = view("/", &[("Host", "a.example")]);
        // Two Host headers let the proxy and the upstream disagree on the target: smuggling.
        assert!(v.append_header("host", "b.example").is_err());
        assert!(v.append_header("Host", "a.example").is_err());
        assert!(v.remove_header("HOST").is_err());
        assert_eq!(v.header_all("host"), ["a.example"]);
        // Rewriting the Host the upstream sees is legitimate.
        assert!(v.set_header("host", "internal.example").is_ok());
        assert_eq!(v.header_all("host"), ["internal.example"]);
        assert_eq!(v.host(), "internal.example");
    }

    #[test]
    fn path_rewrite_keeps_a_valid_uri() {
        let mut v = view("/api/users?x=1", &[]);
        assert!(v.set_path_and_query("/users?x=1").is_ok());
        assert_eq!(v.path(), "/users");
        assert_eq!(v.query(), Some("x=1"));
        assert!(v.set_path_and_query("relative").is_err());
    }

    /// Found by the plugin_boundary fuzz target: a fragment (with control bytes after it) was
    /// dropped silently, and non-ASCII went through; both are refused now.
    #[test]
    fn path_rewrite_refuses_fragments_controls_and_non_ascii() {
        let mut v = view("/a", &[]);
        for bad in ["/QL\u{fffd}L/", "/x#\u{1}\u{0}", "/x#frag", "/a b", "/a\u{7f}", "/\u{e9}"] {
            assert!(v.set_path_and_query(bad).is_err(), "{bad:?}");
        }
        assert_eq!(v.path(), "/a", "a refused rewrite changes nothing");
        assert!(v.set_path_and_query("/caf%C3%A9?q=%23").is_ok());
    }
}
