//! The plugin's configuration: the JSON the host sends (the server, site and route
//! `header_policy` tables deep-merged into one object) and its validation into the [`Policy`]
//! the filters run.
//!
//! Every check the host would make at run time is made here first, and all problems are reported
//! together, each prefixed with the key it concerns: a policy that cannot work fails the
//! configuration load instead of quietly skipping headers on every request.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use switchyard_sdk::testkit::PROTECTED_HEADERS;

use crate::edits::HeaderEdits;
use crate::forwarded::{ForNode, ForwardedElement, Forwarding, is_token_char, parse_by_node, parse_for_node};
use crate::security::SecurityPreset;

/// The configuration format; every key is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadersConfig {
    #[serde(default = "enabled")]
    x_forwarded_for: bool,
    #[serde(default = "enabled")]
    x_forwarded_proto: bool,
    #[serde(default = "enabled")]
    x_forwarded_host: bool,
    #[serde(default = "enabled")]
    x_forwarded_port: bool,
    #[serde(default)]
    forwarded: bool,
    #[serde(default)]
    forwarded_by: Option<String>,
    #[serde(default = "client_address")]
    forwarded_for: String,
    #[serde(default = "enabled")]
    trust_incoming: bool,
    #[serde(default)]
    request: EditsConfig,
    #[serde(default)]
    response: EditsConfig,
    #[serde(default)]
    security_headers: bool,
    #[serde(default = "one_year")]
    hsts_max_age: u64,
}

fn enabled() -> bool {
    true
}

fn client_address() -> String {
    "ip".to_string()
}

fn one_year() -> u64 {
    31_536_000
}

/// The `request` or `response` table. Maps are sorted so that problems are reported in a stable
/// order; the edits themselves do not depend on it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditsConfig {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, AddValues>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
}

/// An `add` entry: one value, or a list of values added in order.
#[derive(Debug)]
struct AddValues(Vec<String>);

impl<'de> Deserialize<'de> for AddValues {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AddValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value or a list of header values")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<AddValues, E> {
                Ok(AddValues(vec![value.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<AddValues, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<String>()? {
                    values.push(value);
                }
                Ok(AddValues(values))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// What the filters do, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The forwarding headers written on requests.
    pub(crate) forwarding: Forwarding,
    /// Edits to requests, after the forwarding headers.
    pub(crate) request: HeaderEdits,
    /// Edits to responses, before the security preset.
    pub(crate) response: HeaderEdits,
    /// The security preset, when enabled.
    pub(crate) security: Option<SecurityPreset>,
}

impl Policy {
    /// Parses and validates the JSON configuration; the error lists every problem found.
    pub(crate) fn from_json(json: &str) -> Result<Policy, String> {
        let config: HeadersConfig = switchyard_sdk::parse_config(json)?;
        let mut problems = Vec::new();

        // After a problem the placeholder values are never used: the load fails below.
        let for_node = parse_for_node(&config.forwarded_for).unwrap_or_else(|e| {
            problems.push(format!("forwarded_for: {e}"));
            ForNode::ClientAddress
        });
        let by = config
            .forwarded_by
            .as_deref()
            .and_then(|by| parse_by_node(by).map_err(|e| problems.push(format!("forwarded_by: {e}"))).ok());
        let request = config.request.validate(Side::Request, &mut problems);
        let response = config.response.validate(Side::Response, &mut problems);
        if !problems.is_empty() {
            return Err(format!("invalid header policy: {}", problems.join("; ")));
        }
        Ok(Policy {
            forwarding: Forwarding {
                trust_incoming: config.trust_incoming,
                x_forwarded_for: config.x_forwarded_for,
                x_forwarded_proto: config.x_forwarded_proto,
                x_forwarded_host: config.x_forwarded_host,
                x_forwarded_port: config.x_forwarded_port,
                forwarded: config.forwarded.then_some(ForwardedElement { for_node, by }),
            },
            request,
            response,
            security: config.security_headers.then(|| SecurityPreset::new(config.hsts_max_age)),
        })
    }
}

/// Which head a table edits: the rules for `host` differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Request => "request",
            Side::Response => "response",
        })
    }
}

impl EditsConfig {
    fn validate(self, side: Side, problems: &mut Vec<String>) -> HeaderEdits {
        let mut edits = HeaderEdits::default();

        let key = format!("{side}.rename");
        let mut sources = BTreeSet::new();
        let mut targets = BTreeSet::new();
        for (from, to) in &self.rename {
            let from = checked_name(problems, &key, from, side.guards_host());
            let to = checked_name(problems, &key, to, side.guards_host());
            let (Some(from), Some(to)) = (from, to) else { continue };
            if from == to {
                problems.push(format!("{key}: header {from} is renamed to itself"));
            } else if !sources.insert(from.clone()) {
                problems.push(format!("{key}: header {from} is listed twice (names are case-insensitive)"));
            } else if !targets.insert(to.clone()) {
                problems.push(format!("{key}: more than one header is renamed to {to}"));
            } else {
                edits.rename.push((from, to));
            }
        }
        // A chain (a -> b, b -> c) would depend on the order the renames run in.
        for name in sources.intersection(&targets) {
            problems.push(format!("{key}: header {name} is both renamed and a rename target; rename it directly"));
        }

        let key = format!("{side}.remove");
        for name in &self.remove {
            if let Some(name) = checked_name(problems, &key, name, side.guards_host()) {
                edits.remove.push(name);
            }
        }

        let key = format!("{side}.set");
        let mut seen = BTreeSet::new();
        for (name, value) in &self.set {
            let Some(name) = checked_name(problems, &key, name, false) else { continue };
            if !seen.insert(name.clone()) {
                problems.push(format!("{key}: header {name} is listed twice (names are case-insensitive)"));
            } else if checked_value(problems, &key, &name, value) {
                edits.set.push((name, value.clone()));
            }
        }

        // A second Host header makes a request malformed (RFC 9112 §3.2); `set` replaces it.
        let key = format!("{side}.add");
        let mut seen = BTreeSet::new();
        for (name, AddValues(values)) in &self.add {
            let Some(name) = checked_name(problems, &key, name, side.guards_host()) else { continue };
            if !seen.insert(name.clone()) {
                problems.push(format!("{key}: header {name} is listed twice (names are case-insensitive)"));
                continue;
            }
            for value in values {
                if checked_value(problems, &key, &name, value) {
                    edits.add.push((name.clone(), value.clone()));
                }
            }
        }
        edits
    }
}

impl Side {
    /// Whether `host` is off limits to remove, rename and add: the host refuses to remove a
    /// request's `Host` or to add a second one, and a rename does one or the other.
    fn guards_host(self) -> bool {
        self == Side::Request
    }
}

/// The lowercased `name`, or `None` after recording why it cannot be used under `key`.
fn checked_name(problems: &mut Vec<String>, key: &str, name: &str, guard_host: bool) -> Option<String> {
    if name.is_empty() || !name.bytes().all(is_token_char) {
        problems.push(format!(
            "{key}: invalid header name {name:?} (a header name is letters, digits and !#$%&'*+-.^_`|~)"
        ));
        return None;
    }
    let lower = name.to_ascii_lowercase();
    if PROTECTED_HEADERS.contains(&lower.as_str()) {
        problems.push(format!("{key}: header {lower} is protected (framing or hop-by-hop) and cannot be changed"));
        return None;
    }
    if guard_host && lower == "host" {
        problems.push(format!("{key}: header host cannot be removed, renamed or added here; use request.set"));
        return None;
    }
    Some(lower)
}

/// Whether `value` is a valid value for `name`, recording why not under `key`. The host accepts
/// visible ASCII, spaces and tabs, so anything else would fail on every request.
fn checked_value(problems: &mut Vec<String>, key: &str, name: &str, value: &str) -> bool {
    let valid = value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    if !valid {
        problems.push(format!(
            "{key}: invalid value {value:?} for header {name} (visible ASCII, spaces and tabs only: no CR, LF, \
             NUL or other control characters)"
        ));
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(json: serde_json::Value) -> String {
        match Policy::from_json(&json.to_string()) {
            Ok(policy) => panic!("accepted {json}: {policy:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_config_gives_the_defaults() {
        let policy = Policy::from_json("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            policy.forwarding,
            Forwarding {
                trust_incoming: true,
                x_forwarded_for: true,
                x_forwarded_proto: true,
                x_forwarded_host: true,
                x_forwarded_port: true,
                forwarded: None,
            }
        );
        assert_eq!(policy.request, HeaderEdits::default());
        assert_eq!(policy.response, HeaderEdits::default());
        assert_eq!(policy.security, None);
    }

    #[test]
    fn names_are_lowercased_and_lists_flattened() {
        let policy = Policy::from_json(
            &serde_json::json!({
                "forwarded": true,
                "forwarded_for": "_hidden",
                "request": {"add": {"X-Tag": ["a", "b"], "X-One": "1"}, "rename": {"X-Old": "X-New"}},
                "response": {"remove": ["Server"]},
            })
            .to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            policy.request.add,
            vec![("x-one".into(), "1".into()), ("x-tag".into(), "a".into()), ("x-tag".into(), "b".into())]
        );
        assert_eq!(policy.request.rename, vec![("x-old".into(), "x-new".into())]);
        assert_eq!(policy.response.remove, vec!["server".to_string()]);
        let element = policy.forwarding.forwarded.unwrap_or_else(|| panic!("forwarded is on"));
        assert_eq!(element.for_node, ForNode::Fixed("_hidden".into()));
    }

    #[test]
    fn protected_headers_are_rejected_with_their_key() {
        let e = rejected(serde_json::json!({"request": {"set": {"Content-Length": "0"}}}));
        assert!(e.contains("request.set: header content-length is protected"), "{e}");
        let e = rejected(serde_json::json!({"response": {"remove": ["Transfer-Encoding"]}}));
        assert!(e.contains("response.remove: header transfer-encoding is protected"), "{e}");
        let e = rejected(serde_json::json!({"request": {"rename": {"x-a": "connection"}}}));
        assert!(e.contains("request.rename: header connection is protected"), "{e}");
        let e = rejected(serde_json::json!({"response": {"add": {"upgrade": "h2c"}}}));
        assert!(e.contains("response.add: header upgrade is protected"), "{e}");
    }

    #[test]
    fn request_host_may_be_set_but_not_removed_renamed_or_added() {
        for (edit, value) in [
            ("remove", serde_json::json!(["Host"])),
            ("rename", serde_json::json!({"host": "x-original-host"})),
            ("add", serde_json::json!({"host": "b.example"})),
        ] {
            let e = rejected(serde_json::json!({"request": {edit: value}}));
            assert!(e.contains(&format!("request.{edit}: header host cannot be")), "{e}");
        }
        assert!(Policy::from_json(r#"{"request": {"set": {"host": "internal.example"}}}"#).is_ok());
        assert!(Policy::from_json(r#"{"response": {"remove": ["host"]}}"#).is_ok());
    }

    #[test]
    fn invalid_names_and_values_are_rejected() {
        let e = rejected(serde_json::json!({"request": {"set": {"x bad": "1"}}}));
        assert!(e.contains("request.set: invalid header name \"x bad\""), "{e}");
        let e = rejected(serde_json::json!({"response": {"remove": [""]}}));
        assert!(e.contains("response.remove: invalid header name \"\""), "{e}");
        let e = rejected(serde_json::json!({"request": {"set": {"x-a": "one\r\nx-injected: two"}}}));
        assert!(e.contains("request.set: invalid value") && e.contains("header x-a"), "{e}");
        let e = rejected(serde_json::json!({"response": {"add": {"x-b": ["fine", "nul\u{0}"]}}}));
        assert!(e.contains("response.add: invalid value \"nul\\0\" for header x-b"), "{e}");
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_are_rejected() {
        let e = rejected(serde_json::json!({"x_forwarded_fro": false}));
        assert!(e.contains("unknown field `x_forwarded_fro`"), "{e}");
        let e = rejected(serde_json::json!({"request": {"delete": ["x-a"]}}));
        assert!(e.contains("unknown field `delete`"), "{e}");
        let e = rejected(serde_json::json!({"request": {"add": {"x-a": 3}}}));
        assert!(e.contains("a header value or a list of header values"), "{e}");
    }

    #[test]
    fn bad_forwarded_nodes_are_rejected() {
        let e = rejected(serde_json::json!({"forwarded_for": "_bad!id"}));
        assert!(e.contains("forwarded_for: \"_bad!id\" is not"), "{e}");
        let e = rejected(serde_json::json!({"forwarded_by": "edge proxy"}));
        assert!(e.contains("forwarded_by: \"edge proxy\" is not"), "{e}");
        assert!(Policy::from_json(r#"{"forwarded_by": "10.0.0.1"}"#).is_ok());
    }

    #[test]
    fn ambiguous_renames_are_rejected() {
        let e = rejected(serde_json::json!({"response": {"rename": {"x-a": "x-b", "x-b": "x-c"}}}));
        assert!(e.contains("response.rename: header x-b is both renamed and a rename target"), "{e}");
        let e = rejected(serde_json::json!({"response": {"rename": {"x-a": "x-c", "x-b": "X-C"}}}));
        assert!(e.contains("more than one header is renamed to x-c"), "{e}");
        let e = rejected(serde_json::json!({"request": {"rename": {"X-A": "x-a"}}}));
        assert!(e.contains("renamed to itself"), "{e}");
        let e = rejected(serde_json::json!({"request": {"set": {"X-A": "1", "x-a": "2"}}}));
        assert!(e.contains("request.set: header x-a is listed twice"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = rejected(serde_json::json!({
            "forwarded_for": "nobody",
            "request": {"remove": ["content-length"]},
            "response": {"set": {"x-a": "\n"}},
        }));
        assert!(e.starts_with("invalid header policy: "), "{e}");
        assert!(e.contains("forwarded_for:"), "{e}");
        assert!(e.contains("request.remove:"), "{e}");
        assert!(e.contains("response.set:"), "{e}");
    }
}
