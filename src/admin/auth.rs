//! Who may use the admin API: the bearer token (compared in constant time), the Host header
//! allow-list (against DNS rebinding: a web page whose name resolves to 127.0.0.1 still sends its
//! own name), and which requests may change anything (a browser cannot send them across sites
//! without a CORS preflight, which the API never grants).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use subtle::ConstantTimeEq;

use crate::config::Collector;
use crate::config::model::{AdminSection, DEFAULT_ADMIN_TOKEN_ENV};

/// The bearer token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// What the admin API lets through. Reloadable: a reload can change the token and hosts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminAccess {
    /// Every request must carry `Authorization: Bearer <token>` when set.
    pub token: Option<AdminToken>,
    /// Extra Host values (lowercase), `name` or `name:port`.
    pub allowed_hosts: Vec<String>,
}

/// The token a token file holds: its first line, trimmed (`None` when blank).
pub fn token_in_file(text: &str) -> Option<&str> {
    text.lines().next().map(str::trim).filter(|t| !t.is_empty())
}

/// Reads the token (`token_file`, else `token_env`, else `SWITCHYARD_ADMIN_TOKEN` if set) and
/// the host list, and refuses a listener other than loopback without a token.
pub fn resolve(admin: &AdminSection, base_dir: &Path, c: &mut Collector<'_>) -> AdminAccess {
    let mut token = None;
    match (&admin.token_file, &admin.token_env) {
        (Some(_), Some(env)) => c.error(env.span(), "set token_file or token_env, not both"),
        (Some(file), None) => {
            let path = base_dir.join(file.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(text) => match token_in_file(&text) {
                    Some(t) => token = Some(t.to_string()),
                    None => c.error(file.span(), format!("the token file {} is empty", path.display())),
                },
                Err(e) => c.error(file.span(), format!("cannot read the token file {}: {e}", path.display())),
            }
        }
        (None, Some(env)) => match std::env::var(env.get_ref()) {
            Ok(t) if !t.trim().is_empty() => token = Some(t.trim().to_string()),
            _ => c.error(env.span(), format!("the environment variable {} is not set or empty", env.get_ref())),
        },
        (None, None) => {
            token = std::env::var(DEFAULT_ADMIN_TOKEN_ENV).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        }
    }
    if let Some(t) = &token
        && t.len() < 16
    {
        let span = admin.token_file.as_ref().or(admin.token_env.as_ref()).map(|s| s.span());
        c.error(span.unwrap_or(0..0), "the admin token must be at least 16 characters");
    }
    if let Some(listen) = &admin.listen
        && let Ok(addr) = listen.get_ref().parse::<SocketAddr>()
        && !addr.ip().is_loopback()
        && token.is_none()
    {
        c.error(
            listen.span(),
            format!(
                "the admin API on {addr} would be reachable from other machines: set [admin] token_file or token_env, or the {DEFAULT_ADMIN_TOKEN_ENV} environment variable (or listen on 127.0.0.1)"
            ),
        );
    }
    let mut allowed_hosts = Vec::new();
    for host in &admin.allowed_hosts {
        let h = host.get_ref().trim().to_ascii_lowercase();
        if h.is_empty() || h.contains(['/', ' ', '@']) {
            c.error(host.span(), format!("`{}` is not a host name or host:port", host.get_ref()));
        } else {
            allowed_hosts.push(h);
        }
    }
    AdminAccess { token: token.map(AdminToken), allowed_hosts }
}

impl AdminAccess {
    /// Whether an `Authorization` header value carries the token (always, when none is set).
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(AdminToken(token)) = &self.token else { return true };
        let Some(value) = authorization else { return false };
        let Some(given) = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer ")) else {
            return false;
        };
        // Lengths differ → not equal; the comparison of equal lengths takes the same time
        // wherever they differ.
        given.len() == token.len() && bool::from(given.ct_eq(token.as_bytes()))
    }

    /// Whether a request with this Host header may be answered by the listener at `listen`:
    /// loopback names and addresses, the listen address, and `allowed_hosts`. A request without
    /// one (HTTP/1.0, not a browser) is let through.
    pub fn host_allowed(&self, host: Option<&str>, listen: SocketAddr) -> bool {
        let Some(host) = host else { return true };
        let host = host.trim().to_ascii_lowercase();
        let (name, port) = split_host_port(&host);
        let by_default = name == "localhost"
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback() || (ip == listen.ip() && !ip.is_unspecified()));
        by_default
            || self.allowed_hosts.iter().any(|allowed| {
                let (a_name, a_port) = split_host_port(allowed);
                a_name == name && (a_port.is_none() || a_port == port)
            })
    }
}

/// `name` and port of `host[:port]`, `[v6]:port` or a bare IPv6 address (brackets removed).
fn split_host_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':')),
            None => (rest, None),
        };
    }
    match host.rsplit_once(':') {
        // More than one colon: an IPv6 address without brackets.
        Some((name, _)) if name.contains(':') => (host, None),
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    }
}

/// Why a request may not change anything, if it may not: changes are POST, PUT or DELETE, and
/// POST and PUT say `Content-Type: application/json` (which a cross-site form cannot send, and
/// `fetch` only after a preflight the API refuses).
pub fn mutation_problem(method: &str, content_type: Option<&str>) -> Option<&'static str> {
    match method {
        "DELETE" => None,
        "POST" | "PUT" => {
            let json = content_type.is_some_and(|t| {
                let t = t.trim().to_ascii_lowercase();
                t == "application/json" || t.starts_with("application/json;")
            });
            (!json).then_some("send changes with Content-Type: application/json (an empty body means {})")
        }
        _ => Some("changes are made with POST, PUT or DELETE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceFile;

    fn access(token: Option<&str>, hosts: &[&str]) -> AdminAccess {
        AdminAccess {
            token: token.map(|t| AdminToken(t.to_string())),
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn the_token_must_match_exactly() {
        let a = access(Some("0123456789abcdef"), &[]);
        assert!(a.authorized(Some(b"Bearer 0123456789abcdef")));
        assert!(!a.authorized(Some(b"Bearer 0123456789abcdeX")));
        assert!(!a.authorized(Some(b"Bearer 0123456789abcde")));
        assert!(!a.authorized(Some(b"0123456789abcdef")));
        assert!(!a.authorized(None));
        assert!(access(None, &[]).authorized(None));
    }

    #[test]
    fn hosts_are_loopback_the_listener_or_listed() {
        let listen: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let a = access(None, &["admin.internal", "ops.example:9000"]);
        for ok in
            ["localhost:9000", "127.0.0.1:9000", "[::1]:9000", "LOCALHOST", "admin.internal:1", "ops.example:9000"]
        {
            assert!(a.host_allowed(Some(ok), listen), "{ok}");
        }
        for refused in ["evil.example:9000", "ops.example:9001", "localhost.evil.example", "10.0.0.1:9000"] {
            assert!(!a.host_allowed(Some(refused), listen), "{refused}");
        }
        let public: SocketAddr = "10.0.0.1:9000".parse().unwrap();
        assert!(a.host_allowed(Some("10.0.0.1:9000"), public));
        assert!(a.host_allowed(None, listen));
    }

    #[test]
    fn changes_need_a_json_post_put_or_delete() {
        assert_eq!(mutation_problem("POST", Some("application/json")), None);
        assert_eq!(mutation_problem("PUT", Some("Application/JSON; charset=utf-8")), None);
        assert_eq!(mutation_problem("DELETE", None), None);
        assert!(mutation_problem("POST", None).is_some());
        assert!(mutation_problem("POST", Some("text/plain")).is_some());
        assert!(mutation_problem("POST", Some("application/x-www-form-urlencoded")).is_some());
        assert!(mutation_problem("PATCH", Some("application/json")).is_some());
    }

    fn resolve_text(text: &str) -> Result<AdminAccess, String> {
        let source = SourceFile::new("c.toml", text);
        let mut c = Collector::new(&source);
        #[derive(serde::Deserialize)]
        struct File {
            admin: AdminSection,
        }
        let file: File = toml::from_str(text).unwrap();
        let access = resolve(&file.admin, Path::new("."), &mut c);
        c.finish().map(|_| access).map_err(|d| d.to_string())
    }

    #[test]
    fn a_public_listener_needs_a_token() {
        let error = resolve_text("[admin]\nlisten = \"0.0.0.0:9000\"\ntoken_env = \"SWITCHYARD_TEST_UNSET_TOKEN\"\n")
            .unwrap_err();
        assert!(error.contains("SWITCHYARD_TEST_UNSET_TOKEN is not set"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "short\n").unwrap();
        let error = resolve_text(&format!("[admin]\nlisten = \"127.0.0.1:9\"\ntoken_file = {:?}\n", file)).unwrap_err();
        assert!(error.contains("at least 16"), "{error}");
        std::fs::write(&file, "0123456789abcdef0123\nignored\n").unwrap();
        let ok = resolve_text(&format!("[admin]\nlisten = \"0.0.0.0:9\"\ntoken_file = {:?}\n", file)).unwrap();
        assert!(ok.authorized(Some(b"Bearer 0123456789abcdef0123")));
    }
}
