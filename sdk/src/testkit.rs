//! A native stand-in for the proxy, so plugin logic is unit-tested with plain `cargo test`.
//!
//! [`TestRequest`] and [`TestResponse`] implement the head traits with the same rules the proxy
//! applies (case-insensitive names, protected framing headers, exactly one request `Host`);
//! [`TestHost`] serves the [`crate::host`] functions for the current thread and records what the
//! plugin did.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use crate::{LogLevel, RequestHead, ResponseHead};

/// What the [`crate::host`] functions see and record on the current thread in native tests.
#[derive(Debug, Clone)]
pub struct TestHost {
    /// Log lines written by the plugin, in order.
    pub logs: Vec<(LogLevel, String)>,
    /// Counters by name.
    pub counters: HashMap<String, u64>,
    /// Histogram observations by name.
    pub histograms: HashMap<String, Vec<f64>>,
    /// What `now_unix_ms` returns; set it to script time.
    pub now_unix_ms: u64,
    /// What `monotonic_ns` returns; set it to script time.
    pub monotonic_ns: u64,
    /// The key-value store.
    pub kv: HashMap<String, String>,
    /// State of the deterministic generator behind `random_u64`.
    pub random_state: u64,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost {
            logs: Vec::new(),
            counters: HashMap::new(),
            histograms: HashMap::new(),
            now_unix_ms: 1_700_000_000_000,
            monotonic_ns: 0,
            kv: HashMap::new(),
            random_state: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl TestHost {
    /// The next number of a splitmix64 sequence: deterministic, so tests are repeatable.
    pub fn next_random(&mut self) -> u64 {
        self.random_state = self.random_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

thread_local! {
    static TEST_HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

/// Runs `f` with the current thread's test host.
pub fn with_test_host<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    TEST_HOST.with(|h| f(&mut h.borrow_mut()))
}

/// Replaces the current thread's test host with a fresh one and returns the old one.
pub fn reset_test_host() -> TestHost {
    TEST_HOST.with(|h| std::mem::take(&mut *h.borrow_mut()))
}

/// Headers a plugin may not change: framing and hop-by-hop headers. The proxy enforces the
/// same list.
pub const PROTECTED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// The limits of the shared key-value store (see the WIT `host.kv-set`); the proxy enforces
/// the same numbers.
pub const KV_MAX_KEYS: usize = 1024;
/// The longest key the key-value store accepts, in bytes.
pub const KV_MAX_KEY_BYTES: usize = 256;
/// The longest value the key-value store accepts, in bytes.
pub const KV_MAX_VALUE_BYTES: usize = 4096;

/// What a plugin asks to do to a header, for [`refused_header_change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderChange {
    /// Replace every value (`set-header`).
    Set,
    /// Add one more value (`append-header`).
    Append,
    /// Remove every value (`remove-header`).
    Remove,
}

/// Why the proxy refuses `change` to the header `lower_name` (lowercase) of a request
/// (`is_request`) or a response, or `None` when it allows it. The proxy calls this same function,
/// so native tests refuse exactly what the proxy refuses.
///
/// Framing and hop-by-hop headers ([`PROTECTED_HEADERS`]) never change. A request's `host` may be
/// replaced (rewriting the Host the upstream sees is legitimate) but not removed, and never given
/// a second value: a request with two Host headers is malformed (RFC 9112 §3.2), and a front end
/// and a back end that each pick a different one is the classic request-smuggling setup.
pub fn refused_header_change(lower_name: &str, change: HeaderChange, is_request: bool) -> Option<String> {
    if PROTECTED_HEADERS.contains(&lower_name) {
        return Some(format!("header {lower_name} is protected"));
    }
    if is_request && lower_name == "host" && change != HeaderChange::Set {
        return Some(
            "header host is protected: it can only be replaced with set-header, never removed or given a \
             second value"
                .to_string(),
        );
    }
    None
}

fn check_header_change(
    name: &str,
    value: Option<&str>,
    change: HeaderChange,
    is_request: bool,
) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if lower.is_empty() || !lower.bytes().all(token) {
        return Err(format!("invalid header name {name:?}"));
    }
    if let Some(refusal) = refused_header_change(&lower, change, is_request) {
        return Err(refusal);
    }
    // The proxy's rule: no control character but tab (obs-text is allowed).
    if let Some(v) = value
        && v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(format!("invalid value for header {lower}"));
    }
    Ok(lower)
}

#[derive(Debug, Clone, Default)]
struct Headers(Vec<(String, String)>);

impl Headers {
    fn first(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (n, _) in &self.0 {
            let lower = n.to_ascii_lowercase();
            if !names.contains(&lower) {
                names.push(lower);
            }
        }
        names
    }
    fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    fn set(&mut self, name: String, value: &str) {
        self.remove(&name);
        self.0.push((name, value.to_string()));
    }
}

#[derive(Debug, Clone)]
struct RequestState {
    method: String,
    scheme: String,
    host: String,
    path_and_query: String,
    headers: Headers,
    client_ip: String,
    server_port: u16,
    context: HashMap<String, String>,
}

/// A request head for native tests, built like `TestRequest::get("/path").with_host("a.example")`.
#[derive(Debug, Clone)]
pub struct TestRequest(RefCell<RequestState>);

impl TestRequest {
    /// A request with `method` for `path_and_query` (e.g. `/a?b=c`), scheme `http`, no host,
    /// client `127.0.0.1`.
    pub fn new(method: &str, path_and_query: &str) -> Self {
        TestRequest(RefCell::new(RequestState {
            method: method.to_string(),
            scheme: "http".to_string(),
            host: String::new(),
            path_and_query: path_and_query.to_string(),
            headers: Headers::default(),
            client_ip: "127.0.0.1".to_string(),
            server_port: 8080,
            context: HashMap::new(),
        }))
    }
    /// A `GET` request for `path_and_query`.
    pub fn get(path_and_query: &str) -> Self {
        Self::new("GET", path_and_query)
    }
    /// Sets the host (as the proxy reports it: lowercased, no port) and the `Host` header.
    pub fn with_host(self, host: &str) -> Self {
        {
            let mut s = self.0.borrow_mut();
            let bare = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()));
            s.host = bare.map_or(host, |(h, _)| h).to_ascii_lowercase();
            s.headers.set("host".to_string(), host);
        }
        self
    }
    /// Adds a header.
    pub fn with_header(self, name: &str, value: &str) -> Self {
        self.0.borrow_mut().headers.0.push((name.to_string(), value.to_string()));
        self
    }
    /// Sets the scheme (`http` or `https`).
    pub fn with_scheme(self, scheme: &str) -> Self {
        self.0.borrow_mut().scheme = scheme.to_string();
        self
    }
    /// Sets the client's IP address.
    pub fn with_client_ip(self, ip: &str) -> Self {
        self.0.borrow_mut().client_ip = ip.to_string();
        self
    }
    /// Sets the port of the listener the client connected to (default 8080).
    pub fn with_server_port(self, port: u16) -> Self {
        self.0.borrow_mut().server_port = port;
        self
    }
    /// The path and query as the plugin left them.
    pub fn path_and_query(&self) -> String {
        self.0.borrow().path_and_query.clone()
    }
    /// All headers as the plugin left them, in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.0.borrow().headers.0.clone()
    }
}

impl RequestHead for TestRequest {
    fn method(&self) -> String {
        self.0.borrow().method.clone()
    }
    fn scheme(&self) -> String {
        self.0.borrow().scheme.clone()
    }
    fn host(&self) -> Cow<'_, str> {
        Cow::Owned(self.0.borrow().host.clone())
    }
    fn path(&self) -> Cow<'_, str> {
        let s = self.0.borrow();
        let path = s.path_and_query.split_once('?').map_or(s.path_and_query.as_str(), |(p, _)| p);
        Cow::Owned(path.to_string())
    }
    fn query(&self) -> Option<String> {
        self.0.borrow().path_and_query.split_once('?').map(|(_, q)| q.to_string())
    }
    fn header(&self, name: &str) -> Option<String> {
        self.0.borrow().headers.first(name)
    }
    fn header_all(&self, name: &str) -> Vec<String> {
        self.0.borrow().headers.all(name)
    }
    fn header_names(&self) -> Vec<String> {
        self.0.borrow().headers.names()
    }
    fn client_ip(&self) -> String {
        self.0.borrow().client_ip.clone()
    }
    fn server_port(&self) -> u16 {
        self.0.borrow().server_port
    }
    fn set_header(&self, name: &str, value: &str) -> Result<(), String> {
        let name = check_header_change(name, Some(value), HeaderChange::Set, true)?;
        self.0.borrow_mut().headers.set(name, value);
        Ok(())
    }
    fn append_header(&self, name: &str, value: &str) -> Result<(), String> {
        let name = check_header_change(name, Some(value), HeaderChange::Append, true)?;
        self.0.borrow_mut().headers.0.push((name, value.to_string()));
        Ok(())
    }
    fn remove_header(&self, name: &str) -> Result<(), String> {
        let name = check_header_change(name, None, HeaderChange::Remove, true)?;
        self.0.borrow_mut().headers.remove(&name);
        Ok(())
    }
    fn set_path_and_query(&self, path_and_query: &str) -> Result<(), String> {
        if !path_and_query.starts_with('/') {
            return Err(format!("path must start with '/': {path_and_query:?}"));
        }
        self.0.borrow_mut().path_and_query = path_and_query.to_string();
        Ok(())
    }
    fn context(&self, key: &str) -> Option<String> {
        self.0.borrow().context.get(key).cloned()
    }
    fn set_context(&self, key: &str, value: &str) {
        self.0.borrow_mut().context.insert(key.to_string(), value.to_string());
    }
}

/// A response head for native tests.
#[derive(Debug, Clone)]
pub struct TestResponse(RefCell<(u16, Headers)>);

impl TestResponse {
    /// A response with `status` and no headers.
    pub fn new(status: u16) -> Self {
        TestResponse(RefCell::new((status, Headers::default())))
    }
    /// Adds a header.
    pub fn with_header(self, name: &str, value: &str) -> Self {
        self.0.borrow_mut().1.0.push((name.to_string(), value.to_string()));
        self
    }
    /// All headers as the plugin left them, in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.0.borrow().1.0.clone()
    }
}

impl ResponseHead for TestResponse {
    fn status(&self) -> u16 {
        self.0.borrow().0
    }
    fn set_status(&self, status: u16) -> Result<(), String> {
        if !(100..=999).contains(&status) {
            return Err(format!("invalid status {status}"));
        }
        self.0.borrow_mut().0 = status;
        Ok(())
    }
    fn header(&self, name: &str) -> Option<String> {
        self.0.borrow().1.first(name)
    }
    fn header_all(&self, name: &str) -> Vec<String> {
        self.0.borrow().1.all(name)
    }
    fn set_header(&self, name: &str, value: &str) -> Result<(), String> {
        let name = check_header_change(name, Some(value), HeaderChange::Set, false)?;
        self.0.borrow_mut().1.set(name, value);
        Ok(())
    }
    fn append_header(&self, name: &str, value: &str) -> Result<(), String> {
        let name = check_header_change(name, Some(value), HeaderChange::Append, false)?;
        self.0.borrow_mut().1.0.push((name, value.to_string()));
        Ok(())
    }
    fn remove_header(&self, name: &str) -> Result<(), String> {
        let name = check_header_change(name, None, HeaderChange::Remove, false)?;
        self.0.borrow_mut().1.remove(&name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reports_host_path_and_query() {
        let req = TestRequest::get("/a/b?x=1").with_host("Api.Example.com:8080");
        assert_eq!(req.host(), "api.example.com");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query().as_deref(), Some("x=1"));
        assert_eq!(req.header("HOST").as_deref(), Some("Api.Example.com:8080"));
    }

    #[test]
    fn framing_headers_are_protected() {
        let req = TestRequest::get("/");
        assert!(req.set_header("Content-Length", "5").is_err());
        assert!(req.remove_header("transfer-encoding").is_err());
        assert!(req.set_header("x-ok", "bad\r\nvalue").is_err());
        assert!(req.set_header("x-ok", "fine").is_ok());
        assert_eq!(req.header("X-OK").as_deref(), Some("fine"));
    }

    #[test]
    fn values_with_control_characters_are_refused_as_the_proxy_refuses_them() {
        let req = TestRequest::get("/");
        for bad in ["a\rb", "a\nb", "a\u{0}b", "a\u{1}b", "a\u{1f}b", "a\u{7f}b"] {
            assert!(req.set_header("x-a", bad).is_err(), "{bad:?}");
        }
        assert!(req.set_header("x-a", "tab\tand caf\u{e9}").is_ok(), "tab and obs-text are allowed");
    }

    #[test]
    fn a_request_host_can_be_replaced_but_not_removed_or_doubled() {
        let req = TestRequest::get("/").with_host("a.example");
        assert!(req.append_header("Host", "b.example").is_err(), "a second Host value is refused");
        assert!(req.remove_header("host").is_err());
        assert_eq!(req.header_all("host"), ["a.example"]);
        assert!(req.set_header("HOST", "internal.example").is_ok());
        assert_eq!(req.header_all("host"), ["internal.example"]);
        // A response has no Host to protect.
        let resp = TestResponse::new(200);
        assert!(resp.append_header("host", "x").is_ok() && resp.remove_header("host").is_ok());
    }

    #[test]
    fn host_functions_are_recorded() {
        reset_test_host();
        crate::host::counter_add("hits", 2);
        crate::host::counter_add("hits", 3);
        assert_eq!(crate::host::kv_increment("rr", 1), 1);
        assert_eq!(crate::host::kv_increment("rr", 1), 2);
        let host = reset_test_host();
        assert_eq!(host.counters["hits"], 5);
        assert_eq!(host.kv["rr"], "2");
    }
}
