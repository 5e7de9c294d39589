//! Telling the upstream who the client is: `X-Forwarded-For/-Proto/-Host/-Port` and the RFC 7239
//! `Forwarded` header, with the choice of trusting what a proxy in front already wrote.
//!
//! Chains (`X-Forwarded-For`, `Forwarded`) are rewritten as one comma-separated value with this
//! hop appended, the way proxies conventionally write them. `forwarded_for` hides the client only
//! in `Forwarded`: `X-Forwarded-For` has no notation for it, so switch that header off instead.

use std::borrow::Cow;
use std::net::IpAddr;

use switchyard_sdk::RequestHead;

use crate::target::Target;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PORT: &str = "x-forwarded-port";
const X_FORWARDED_PREFIX: &str = "x-forwarded-";
const FORWARDED: &str = "forwarded";

/// The forwarding headers to write, from the top-level configuration keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forwarding {
    /// Keep and extend what the client sent (a trusted proxy in front wrote it), or drop every
    /// incoming `X-Forwarded-*` and `Forwarded` header first.
    pub(crate) trust_incoming: bool,
    /// Append the client address to `X-Forwarded-For`.
    pub(crate) x_forwarded_for: bool,
    /// Write `X-Forwarded-Proto`.
    pub(crate) x_forwarded_proto: bool,
    /// Write `X-Forwarded-Host`.
    pub(crate) x_forwarded_host: bool,
    /// Write `X-Forwarded-Port`.
    pub(crate) x_forwarded_port: bool,
    /// Append a `Forwarded` element, when enabled.
    pub(crate) forwarded: Option<ForwardedElement>,
}

/// How this hop describes itself in `Forwarded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardedElement {
    /// What goes into `for=`.
    pub(crate) for_node: ForNode,
    /// The `by=` value, already in its wire form.
    pub(crate) by: Option<String>,
}

/// The `for=` parameter: the client's address, or a fixed identifier that hides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ForNode {
    /// The client's IP address.
    ClientAddress,
    /// `unknown` or an obfuscated identifier, written as is.
    Fixed(String),
}

/// Parses the `forwarded_for` setting: `ip`, `unknown` or an obfuscated identifier.
pub(crate) fn parse_for_node(value: &str) -> Result<ForNode, String> {
    match value {
        "ip" => Ok(ForNode::ClientAddress),
        "unknown" => Ok(ForNode::Fixed(value.to_string())),
        _ if is_obfuscated_identifier(value) => Ok(ForNode::Fixed(value.to_string())),
        _ => Err(format!(
            "{value:?} is not \"ip\", \"unknown\" or an obfuscated identifier (\"_\" followed by letters, \
             digits, '.', '_' or '-')"
        )),
    }
}

/// Parses the `forwarded_by` setting (an obfuscated identifier, `unknown` or an IP address) into
/// its wire form.
pub(crate) fn parse_by_node(value: &str) -> Result<String, String> {
    if value == "unknown" || is_obfuscated_identifier(value) {
        return Ok(value.to_string());
    }
    match value.parse::<IpAddr>() {
        Ok(ip) => Ok(ip_node(ip)),
        Err(_) => Err(format!(
            "{value:?} is not an IP address, \"unknown\" or an obfuscated identifier (\"_\" followed by \
             letters, digits, '.', '_' or '-')"
        )),
    }
}

/// RFC 7239 `obfnode`: `_` then one or more of ALPHA, DIGIT, `.`, `_`, `-`.
fn is_obfuscated_identifier(value: &str) -> bool {
    value.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// An address as a `Forwarded` node: IPv4 bare, IPv6 bracketed and quoted (its colons are not
/// token characters).
fn ip_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// The client's address as a `Forwarded` node; `unknown` when the host does not know it. Text
/// that is no plain address (an IPv6 zone, say) is still written, quoted when it must be.
fn client_node(client_ip: &str) -> String {
    if client_ip.is_empty() {
        return "unknown".to_string();
    }
    match client_ip.parse::<IpAddr>() {
        Ok(ip) => ip_node(ip),
        Err(_) if client_ip.contains(':') => quoted(&format!("[{client_ip}]")),
        Err(_) => parameter_value(client_ip).into_owned(),
    }
}

/// A `Forwarded` parameter value: a token as is, anything else as a quoted string.
fn parameter_value(value: &str) -> Cow<'_, str> {
    if !value.is_empty() && value.bytes().all(is_token_char) { Cow::Borrowed(value) } else { Cow::Owned(quoted(value)) }
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// RFC 9110 `tchar`.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The incoming values of a list header as one comma-separated chain; empty when there are none.
fn incoming_chain(req: &dyn RequestHead, name: &str) -> String {
    let values = req.header_all(name);
    let parts: Vec<&str> = values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).collect();
    parts.join(", ")
}

/// `chain` with `hop` appended.
fn extended(chain: String, hop: &str) -> String {
    if chain.is_empty() { hop.to_string() } else { format!("{chain}, {hop}") }
}

impl Forwarding {
    /// Writes the forwarding headers onto `req`: first the trust handling, then
    /// `X-Forwarded-*`, then `Forwarded`.
    pub(crate) fn apply(&self, req: &dyn RequestHead) {
        let target = Target::Request(req);
        if !self.trust_incoming {
            drop_incoming(req, &target);
        }
        // Only ask the host for what some enabled header needs.
        let wants_client =
            self.x_forwarded_for || self.forwarded.as_ref().is_some_and(|f| f.for_node == ForNode::ClientAddress);
        let client_ip = if wants_client { req.client_ip() } else { String::new() };
        let wants_host = self.x_forwarded_host || self.forwarded.is_some();
        let host = if wants_host { received_host(req) } else { None };
        let wants_scheme = self.x_forwarded_proto || self.forwarded.is_some();
        let scheme = if wants_scheme { req.scheme() } else { String::new() };

        if self.x_forwarded_for && !client_ip.is_empty() {
            let chain = if self.trust_incoming { incoming_chain(req, X_FORWARDED_FOR) } else { String::new() };
            target.set(X_FORWARDED_FOR, &extended(chain, &client_ip));
        }
        if self.x_forwarded_proto && !self.keeps_incoming(req, X_FORWARDED_PROTO) {
            target.set(X_FORWARDED_PROTO, &scheme);
        }
        if self.x_forwarded_host
            && let Some(host) = &host
            && !self.keeps_incoming(req, X_FORWARDED_HOST)
        {
            target.set(X_FORWARDED_HOST, host);
        }
        if self.x_forwarded_port && !self.keeps_incoming(req, X_FORWARDED_PORT) {
            let port = req.server_port();
            if port != 0 {
                target.set(X_FORWARDED_PORT, &port.to_string());
            }
        }
        if let Some(element) = &self.forwarded {
            let hop = element.render(&client_ip, host.as_deref(), &scheme);
            let chain = if self.trust_incoming { incoming_chain(req, FORWARDED) } else { String::new() };
            target.set(FORWARDED, &extended(chain, &hop));
        }
    }

    /// Whether a trusted proxy in front already wrote `name`, which then stays as it is.
    fn keeps_incoming(&self, req: &dyn RequestHead, name: &str) -> bool {
        self.trust_incoming && req.header(name).is_some()
    }
}

impl ForwardedElement {
    /// This hop's element: `for=...;host=...;proto=...` and `;by=...` when configured. `host` is
    /// left out when the request named none.
    fn render(&self, client_ip: &str, host: Option<&str>, scheme: &str) -> String {
        let for_node = match &self.for_node {
            ForNode::ClientAddress => client_node(client_ip),
            ForNode::Fixed(node) => node.clone(),
        };
        let mut element = format!("for={for_node}");
        if let Some(host) = host {
            element.push_str(";host=");
            element.push_str(&parameter_value(host));
        }
        element.push_str(";proto=");
        element.push_str(&parameter_value(scheme));
        if let Some(by) = &self.by {
            element.push_str(";by=");
            element.push_str(by);
        }
        element
    }
}

/// The `Host` header as the client sent it, port included; without one (HTTP/2 sends
/// `:authority`), the host the proxy resolved, which has no port.
fn received_host(req: &dyn RequestHead) -> Option<String> {
    req.header("host").filter(|h| !h.is_empty()).or_else(|| {
        let host = req.host();
        (!host.is_empty()).then(|| host.into_owned())
    })
}

/// Removes every incoming `X-Forwarded-*` and `Forwarded` header: nothing in front is trusted,
/// so whatever the client wrote there is a claim, not a fact.
fn drop_incoming(req: &dyn RequestHead, target: &Target<'_>) {
    for name in req.header_names() {
        let lower = name.to_ascii_lowercase();
        if lower == FORWARDED || lower.starts_with(X_FORWARDED_PREFIX) {
            target.remove(&lower);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_nodes() {
        assert_eq!(client_node("192.0.2.60"), "192.0.2.60");
        assert_eq!(client_node("2001:db8::1"), "\"[2001:db8::1]\"");
        assert_eq!(client_node(""), "unknown");
        assert_eq!(client_node("fe80::1%eth0"), "\"[fe80::1%eth0]\"");
    }

    #[test]
    fn parameter_values_are_quoted_only_when_needed() {
        assert_eq!(parameter_value("example.com"), "example.com");
        assert_eq!(parameter_value("example.com:8080"), "\"example.com:8080\"");
        assert_eq!(parameter_value("[::1]:443"), "\"[::1]:443\"");
        assert_eq!(parameter_value("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(parameter_value(""), "\"\"");
    }

    #[test]
    fn node_settings_are_checked() {
        assert_eq!(parse_for_node("ip"), Ok(ForNode::ClientAddress));
        assert_eq!(parse_for_node("unknown"), Ok(ForNode::Fixed("unknown".into())));
        assert_eq!(parse_for_node("_hidden-1.a"), Ok(ForNode::Fixed("_hidden-1.a".into())));
        assert!(parse_for_node("_").is_err());
        assert!(parse_for_node("_bad!").is_err());
        assert!(parse_for_node("hidden").is_err());
        assert_eq!(parse_by_node("_edge"), Ok("_edge".into()));
        assert_eq!(parse_by_node("203.0.113.43"), Ok("203.0.113.43".into()));
        assert_eq!(parse_by_node("2001:db8::7"), Ok("\"[2001:db8::7]\"".into()));
        assert!(parse_by_node("edge one").is_err());
        assert!(parse_by_node("proxy.example").is_err());
    }
}
