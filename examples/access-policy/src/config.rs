//! The plugin's configuration: `PolicyFile` is the JSON the proxy hands over (the `config`
//! table of the `[[plugin]]`), [`Policy`] is what requests are checked against.
//!
//! Keeping the two apart means every rule is parsed and checked once, at `configure`, and the
//! request path only compares numbers and strings. Validation collects every problem before
//! failing, so an operator fixes a broken policy in one round instead of one error at a time.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use switchyard_sdk::{Header, LocalResponse};

use crate::cidr::IpNetwork;

/// The configuration as written. Every key is optional; `{}` is a policy that lets everything
/// through untouched.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PolicyFile {
    /// Networks (CIDR or single address) allowed in; empty means every client.
    allow: Vec<String>,
    /// Networks refused even if `allow` also lists them.
    deny: Vec<String>,
    /// Header name → `true` (must be present) or a string (must equal it). Kept as raw JSON so
    /// a wrong value is reported next to the other problems instead of alone.
    require_headers: BTreeMap<String, Value>,
    /// Allowed methods; empty means any.
    methods: Vec<String>,
    /// Status of the refusal reply.
    status: u16,
    /// Body of the refusal reply (a newline is added).
    message: String,
    /// Headers removed from allowed requests.
    strip_headers: Vec<String>,
    /// Header set to `allowed` on allowed requests.
    tag_header: Option<String>,
}

impl Default for PolicyFile {
    fn default() -> Self {
        PolicyFile {
            allow: Vec::new(),
            deny: Vec::new(),
            require_headers: BTreeMap::new(),
            methods: Vec::new(),
            status: 403,
            message: "forbidden".to_string(),
            strip_headers: Vec::new(),
            tag_header: None,
        }
    }
}

/// What one required header must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRequirement {
    /// Present, with any value.
    Present,
    /// Present, and every value equal to this one (exact, case-sensitive).
    Equals(String),
}

/// The checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Checked first: a client inside any of these is refused.
    pub deny: Vec<IpNetwork>,
    /// When not empty, a client must be inside one of these.
    pub allow: Vec<IpNetwork>,
    /// Uppercase; empty means any method.
    pub methods: Vec<String>,
    /// Lowercase header names with their requirement, in name order.
    pub required_headers: Vec<(String, HeaderRequirement)>,
    /// Lowercase names removed from allowed requests.
    pub strip_headers: Vec<String>,
    /// Lowercase name set to `allowed` on allowed requests.
    pub tag_header: Option<String>,
    /// The reply to every refused request, built once.
    pub refusal: LocalResponse,
}

impl Policy {
    /// Parses and checks the plugin's JSON configuration, reporting every problem at once.
    pub fn from_json(config: &str) -> Result<Self, String> {
        let file: PolicyFile = switchyard_sdk::parse_config(config)?;
        let mut problems = Vec::new();

        let deny = networks("deny", &file.deny, &mut problems);
        let allow = networks("allow", &file.allow, &mut problems);

        let mut methods = Vec::new();
        for (i, method) in file.methods.iter().enumerate() {
            if is_token(method) {
                methods.push(method.to_ascii_uppercase());
            } else {
                problems.push(format!("methods[{i}] {method:?} is not a valid HTTP method"));
            }
        }

        let mut required_headers: Vec<(String, HeaderRequirement)> = Vec::new();
        for (name, value) in &file.require_headers {
            let lower = name.to_ascii_lowercase();
            if !is_token(name) {
                problems.push(format!("require_headers: {name:?} is not a valid header name"));
                continue;
            }
            if required_headers.iter().any(|(n, _)| *n == lower) {
                problems.push(format!("require_headers: {lower} is listed more than once (names ignore case)"));
                continue;
            }
            match value {
                Value::Bool(true) => required_headers.push((lower, HeaderRequirement::Present)),
                Value::String(s) => required_headers.push((lower, HeaderRequirement::Equals(s.clone()))),
                other => problems.push(format!(
                    "require_headers.{name} is {other}; use true (must be present) or a string (must equal it)"
                )),
            }
        }

        let mut strip_headers = Vec::new();
        for (i, name) in file.strip_headers.iter().enumerate() {
            match changeable_header(name) {
                Ok(lower) => strip_headers.push(lower),
                Err(why) => problems.push(format!("strip_headers[{i}] {name:?} {why}")),
            }
        }

        let tag_header = match &file.tag_header {
            None => None,
            Some(name) => match changeable_header(name) {
                Ok(lower) => Some(lower),
                Err(why) => {
                    problems.push(format!("tag_header {name:?} {why}"));
                    None
                }
            },
        };

        if !(400..=599).contains(&file.status) {
            problems.push(format!("status {} is not an error status (400 to 599)", file.status));
        }

        if !problems.is_empty() {
            return Err(format!("invalid access-policy config: {}", problems.join("; ")));
        }
        let refusal = LocalResponse {
            status: file.status,
            headers: vec![Header { name: "content-type".to_string(), value: "text/plain".to_string() }],
            body: format!("{}\n", file.message).into_bytes(),
        };
        Ok(Policy { deny, allow, methods, required_headers, strip_headers, tag_header, refusal })
    }
}

fn networks(key: &str, entries: &[String], problems: &mut Vec<String>) -> Vec<IpNetwork> {
    let mut parsed = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match IpNetwork::parse(entry.trim()) {
            Ok(network) => parsed.push(network),
            Err(why) => problems.push(format!("{key}[{i}] {entry:?}: {why}")),
        }
    }
    parsed
}

/// An HTTP token (RFC 9110 §5.6.2): what header names and methods are made of.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks that the plugin may remove or set header `name`, returning it lowercased. The proxy
/// refuses changes to framing and hop-by-hop headers (and to `host`); catching them here turns a
/// per-request failure into a configuration error.
fn changeable_header(name: &str) -> Result<String, &'static str> {
    if !is_token(name) {
        return Err("is not a valid header name");
    }
    let lower = name.to_ascii_lowercase();
    if lower == "host" || switchyard_sdk::testkit::PROTECTED_HEADERS.contains(&lower.as_str()) {
        return Err("is protected by the proxy and cannot be changed by a plugin");
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(config: &str) -> Policy {
        Policy::from_json(config).unwrap_or_else(|e| panic!("{config}: {e}"))
    }

    fn error(config: &str) -> String {
        match Policy::from_json(config) {
            Ok(p) => panic!("{config} was accepted: {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn an_empty_config_gets_the_defaults() {
        let p = policy("{}");
        assert!(p.allow.is_empty() && p.deny.is_empty() && p.methods.is_empty());
        assert!(p.required_headers.is_empty() && p.strip_headers.is_empty());
        assert_eq!(p.tag_header, None);
        assert_eq!(p.refusal.status, 403);
        assert_eq!(p.refusal.body, b"forbidden\n");
        assert_eq!(p.refusal.headers, vec![Header { name: "content-type".into(), value: "text/plain".into() }]);
    }

    #[test]
    fn names_and_methods_are_normalised() {
        let p = policy(
            r#"{"methods": ["get", "Post"], "require_headers": {"X-Api-Key": true, "X-Tenant": "Acme"},
                "strip_headers": ["X-Internal-Debug"], "tag_header": "X-Access-Policy",
                "status": 401, "message": "who are you?"}"#,
        );
        assert_eq!(p.methods, ["GET", "POST"]);
        assert_eq!(
            p.required_headers,
            [
                ("x-api-key".to_string(), HeaderRequirement::Present),
                // Values are compared exactly, so their case is kept.
                ("x-tenant".to_string(), HeaderRequirement::Equals("Acme".to_string())),
            ]
        );
        assert_eq!(p.strip_headers, ["x-internal-debug"]);
        assert_eq!(p.tag_header.as_deref(), Some("x-access-policy"));
        assert_eq!((p.refusal.status, p.refusal.body.as_slice()), (401, b"who are you?\n".as_slice()));
    }

    #[test]
    fn a_bad_network_is_named_by_key_and_index() {
        let e = error(r#"{"allow": ["10.0.0.0/8", "10.0.0.0/33"]}"#);
        assert!(e.contains(r#"allow[1] "10.0.0.0/33": prefix length 33 is out of range"#), "{e}");
        let e = error(r#"{"deny": ["fe80::/200"]}"#);
        assert!(e.contains(r#"deny[0] "fe80::/200""#), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = error(
            r#"{"allow": ["nope"], "deny": ["1.2.3.4/40"], "methods": ["GE T"],
                "require_headers": {"x-a": false, "x-b": 7, "bad name": true},
                "strip_headers": ["content-length"], "tag_header": "Transfer-Encoding", "status": 200}"#,
        );
        for expected in [
            r#"allow[0] "nope""#,
            r#"deny[0] "1.2.3.4/40""#,
            r#"methods[0] "GE T" is not a valid HTTP method"#,
            "require_headers.x-a is false; use true",
            "require_headers.x-b is 7",
            r#"require_headers: "bad name" is not a valid header name"#,
            r#"strip_headers[0] "content-length" is protected"#,
            r#"tag_header "Transfer-Encoding" is protected"#,
            "status 200 is not an error status (400 to 599)",
        ] {
            assert!(e.contains(expected), "{e:?} does not mention {expected:?}");
        }
    }

    #[test]
    fn duplicate_header_requirements_are_refused() {
        let e = error(r#"{"require_headers": {"x-tenant": "a", "X-Tenant": "b"}}"#);
        assert!(e.contains("x-tenant is listed more than once"), "{e}");
    }

    #[test]
    fn host_cannot_be_stripped() {
        assert!(error(r#"{"strip_headers": ["Host"]}"#).contains("is protected"));
    }

    #[test]
    fn status_bounds() {
        assert_eq!(policy(r#"{"status": 400}"#).refusal.status, 400);
        assert_eq!(policy(r#"{"status": 599}"#).refusal.status, 599);
        assert!(error(r#"{"status": 399}"#).contains("status 399"));
        assert!(error(r#"{"status": 600}"#).contains("status 600"));
    }

    #[test]
    fn format_errors_come_from_serde_with_the_key() {
        assert!(error(r#"{"alow": []}"#).contains("unknown field `alow`"));
        assert!(error(r#"{"allow": "10.0.0.0/8"}"#).contains("invalid type"));
        assert!(error(r#"{"status": 70000}"#).contains("invalid value"));
        assert!(error("not json").contains("invalid plugin config"));
    }
}
