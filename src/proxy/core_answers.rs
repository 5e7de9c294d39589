//! Answers the core gives before any plugin runs: ACME HTTP-01 challenges, and the redirect of
//! plain HTTP requests to HTTPS that the TLS strategy (or the site) asks for.

use pingora::http::RequestHeader;

use crate::plugin::LocalResponse;
use crate::tls::{TlsPlan, TlsRuntime};

/// Where ACME HTTP-01 validators fetch their token (RFC 8555 section 8.3).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The core's answer to `request`, if it gives one. `https`: the request came over TLS.
pub fn answer(plan: &TlsPlan, runtime: &TlsRuntime, request: &RequestHeader, https: bool) -> Option<LocalResponse> {
    let path = request.uri.path();
    if let Some(token) = path.strip_prefix(ACME_CHALLENGE_PREFIX)
        && let Some(key_authorization) = runtime.http_challenge(token)
    {
        return Some(LocalResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: key_authorization.into_bytes(),
        });
    }
    if https {
        return None;
    }
    // Without an HTTPS listener there is nothing to redirect to (checked before the Host
    // lookup, which it spares every plain request).
    let port = plan.https_port?;
    let host = request_host(request)?;
    if !plan.redirects(host) {
        return None;
    }
    let authority = match (port, host.contains(':')) {
        (443, false) => host.to_string(),
        (443, true) => format!("[{host}]"),
        (p, false) => format!("{host}:{p}"),
        (p, true) => format!("[{host}]:{p}"),
    };
    let target = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{authority}{target}");
    // 301 keeps GET and HEAD as they are; other methods need 308 to keep their method and body.
    let status = if matches!(request.method, http::Method::GET | http::Method::HEAD) { 301 } else { 308 };
    Some(LocalResponse {
        status,
        headers: vec![
            ("location".into(), location.clone()),
            ("content-type".into(), "text/plain; charset=utf-8".into()),
        ],
        body: format!("moved to {location}\n").into_bytes(),
    })
}

/// The host a request names (absolute-form URI first, else the Host header), without its
/// port or IPv6 brackets.
pub fn request_host(request: &RequestHeader) -> Option<&str> {
    let raw = match request.uri.authority() {
        Some(authority) => authority.as_str(),
        None => request.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h)?
    } else {
        raw.split_once(':').map_or(raw, |(h, _)| h)
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> TlsPlan {
        let dir = tempfile::tempdir().unwrap();
        let source = crate::config::SourceFile::new(dir.path().join("c.toml"), text);
        let config = crate::config::load_source(&source).unwrap();
        let mut c = crate::config::Collector::new(&source);
        let plan = crate::tls::plan::build(&config, dir.path(), &mut c);
        c.finish().unwrap();
        plan
    }

    fn request(method: &str, uri: &str, host: &str) -> RequestHeader {
        let mut r = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        r.insert_header("host", host).unwrap();
        r
    }

    const SITES: &str = r#"
[server]
listen = ["127.0.0.1:1"]
tls_listen = ["127.0.0.1:8443"]
[tls]
self_signed = true
[[upstream]]
name = "u"
backends = [{ address = "127.0.0.1:2" }]
[[site]]
hosts = ["secure.test"]
[[site.route]]
upstream = "u"
[[site]]
hosts = ["plain.test"]
tls = "none"
[[site.route]]
upstream = "u"
[[site]]
hosts = ["optout.test"]
http_to_https = false
[[site.route]]
upstream = "u"
"#;

    #[test]
    fn https_only_redirects_with_host_path_query_and_port() {
        let plan = plan(SITES);
        let runtime = TlsRuntime::default();
        let get = answer(&plan, &runtime, &request("GET", "/a/b?x=1&y=2", "Secure.test:8080"), false).unwrap();
        assert_eq!(get.status, 301);
        assert_eq!(get.headers[0], ("location".into(), "https://Secure.test:8443/a/b?x=1&y=2".into()));
        let post = answer(&plan, &runtime, &request("POST", "/form", "secure.test"), false).unwrap();
        assert_eq!(post.status, 308);
        // Over TLS, for a site without a certificate, and for a site that opted out: no answer.
        assert!(answer(&plan, &runtime, &request("GET", "/", "secure.test"), true).is_none());
        assert!(answer(&plan, &runtime, &request("GET", "/", "plain.test"), false).is_none());
        assert!(answer(&plan, &runtime, &request("GET", "/", "optout.test"), false).is_none());
        // A host no site serves still goes to HTTPS under https-only.
        assert_eq!(answer(&plan, &runtime, &request("GET", "/", "other.test"), false).unwrap().status, 301);
    }

    #[test]
    fn acme_challenges_are_answered_before_the_redirect() {
        let plan = plan(SITES);
        let runtime = TlsRuntime::default();
        runtime.add_http_challenge("tok", "tok.thumb");
        let reply =
            answer(&plan, &runtime, &request("GET", "/.well-known/acme-challenge/tok", "secure.test"), false).unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (200, b"tok.thumb".as_slice()));
        // An unknown token is not the core's: the redirect (or the routes) handle it.
        let other = answer(&plan, &runtime, &request("GET", "/.well-known/acme-challenge/nope", "secure.test"), false);
        assert_eq!(other.unwrap().status, 301);
    }

    #[test]
    fn both_redirects_only_sites_that_ask() {
        let text = SITES
            .replace("tls_listen = [\"127.0.0.1:8443\"]", "tls_listen = [\"127.0.0.1:443\"]\nstrategy = \"both\"")
            .replace("http_to_https = false", "http_to_https = true");
        let plan = plan(&text);
        let runtime = TlsRuntime::default();
        assert!(answer(&plan, &runtime, &request("GET", "/", "secure.test"), false).is_none());
        let reply = answer(&plan, &runtime, &request("GET", "/p", "optout.test"), false).unwrap();
        assert_eq!(reply.headers[0].1, "https://optout.test/p");
    }

    #[test]
    fn http_only_never_redirects() {
        let text = SITES.replace("tls_listen = [\"127.0.0.1:8443\"]", "strategy = \"http-only\"");
        let plan = plan(&text);
        assert_eq!(plan.https_port, None);
        let runtime = TlsRuntime::default();
        for host in ["secure.test", "plain.test", "other.test"] {
            assert!(answer(&plan, &runtime, &request("GET", "/", host), false).is_none(), "{host}");
        }
    }

    #[test]
    fn hosts_are_read_without_ports() {
        assert_eq!(request_host(&request("GET", "/", "a.test:80")), Some("a.test"));
        assert_eq!(request_host(&request("GET", "/", "[::1]:80")), Some("::1"));
    }
}
