//! An example request filter, written with the SDK as a user would: an access policy a platform
//! team can put in front of other teams' services. It refuses requests by client address,
//! method and required headers, and tidies the requests it lets through.
//!
//! # What it does
//!
//! For every request on a chain it is part of, the filter checks, in this order:
//!
//! 1. **`deny`**: a client inside any listed network is refused, even if `allow` lists it too.
//! 2. **`allow`**: when the list is not empty, only clients inside one of its networks pass.
//! 3. **`methods`**: when the list is not empty, only these methods pass.
//! 4. **`require_headers`**: each listed header must be present (`true`) or equal the given
//!    string. A client that sends the header twice must send that value both times, so it cannot
//!    smuggle a second value past the check to an upstream that reads the other one.
//!
//! A refused request is answered by the proxy itself with `status` and `message` (plain text);
//! nothing reaches the upstream. Each refusal adds 1 to the plugin's counter `refused` and to
//! one counter naming the reason (`refused_denied_ip`, `refused_ip_not_allowed`,
//! `refused_unknown_client`, `refused_method`, `refused_missing_header`,
//! `refused_header_mismatch`), and leaves the reason in the request context under
//! `access_policy.refused` for the access log.
//!
//! An allowed request loses the `strip_headers` (say, a debug switch only the platform may use,
//! or the API key the filter has just checked) and, with `tag_header`, gets that header set to
//! `allowed`. The tag replaces whatever the client sent, so the upstream can trust it.
//!
//! Addresses: networks are CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses
//! (`127.0.0.1`). IPv4 rules match IPv4 clients, IPv6 rules IPv6 clients; a client reported as
//! an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) counts as the IPv4 address. When the policy
//! has address rules and the proxy cannot tell the client's address, the request is refused: an
//! access policy fails closed.
//!
//! # Configuring it
//!
//! Build the plugin (below), declare it in the Switchyard configuration and put it on a chain.
//! Every key is optional; the defaults are no address rules, any method, no required headers,
//! status 403 with the message `forbidden`, nothing stripped and no tag.
//!
//! ```toml
//! [[plugin]]
//! name = "internal-only"
//! path = "tests/fixtures/dist/access-policy.wasm"   # relative to this file
//! failure = "closed"                                 # if the plugin fails, refuse (500)
//!
//! [plugin.config]
//! allow = ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]
//! deny = ["10.1.2.0/24"]
//! methods = ["GET", "POST"]
//! status = 403
//! message = "forbidden"
//! strip_headers = ["x-internal-debug"]
//! tag_header = "x-access-policy"
//!
//! [plugin.config.require_headers]
//! x-api-key = true        # must be present
//! x-tenant = "acme"       # must be exactly "acme"
//!
//! [[site]]
//! name = "internal"
//! hosts = ["internal.example.com"]
//! request_filters = ["internal-only"]   # or [server] request_filters for every request
//! ```
//!
//! The `config` table reaches the plugin as JSON. The configuration is checked once, when it is
//! loaded: an invalid network, a prefix too long for its address family, a status outside
//! 400–599 or a protected header in `strip_headers` fails the load with a message naming every
//! bad entry (`allow[1] "10.0.0.0/33": prefix length 33 is out of range for IPv4 (0 to 32)`),
//! and `switchyard check` shows it without starting the proxy.
//!
//! # Building it
//!
//! `plugins/build.sh` builds every plugin crate under `examples/` for `wasm32-unknown-unknown`,
//! turns it into a component and writes it to `tests/fixtures/dist/<directory name>.wasm`,
//! here `tests/fixtures/dist/access-policy.wasm`. `cargo test -p example-access-policy` runs the
//! unit tests natively against the SDK's test kit.
//!
//! # How it is built
//!
//! [`config`] turns the JSON into a checked [`config::Policy`] once per instance; [`cidr`]
//! parses and matches networks with `std::net` alone (a plugin has no OS underneath, so it
//! keeps to pure Rust). The filter below only compares.

pub mod cidr;
pub mod config;

use std::net::IpAddr;

use switchyard_sdk::{FilterAction, LogLevel, RequestFilter, RequestHead, export_plugin, host};

use crate::config::{HeaderRequirement, Policy};

/// Why a request was refused; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client is inside a `deny` network.
    DeniedIp,
    /// `allow` is not empty and the client is in none of its networks.
    IpNotAllowed,
    /// The policy has address rules but the client's address is unknown.
    UnknownClient,
    /// The method is not in `methods`.
    Method,
    /// A required header is absent.
    MissingHeader,
    /// A required header has a different value.
    HeaderMismatch,
}

impl Refusal {
    /// The reason as it appears in the request context.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::DeniedIp => "denied_ip",
            Refusal::IpNotAllowed => "ip_not_allowed",
            Refusal::UnknownClient => "unknown_client",
            Refusal::Method => "method",
            Refusal::MissingHeader => "missing_header",
            Refusal::HeaderMismatch => "header_mismatch",
        }
    }

    /// The counter this reason adds to, next to the total `refused`.
    pub fn counter(self) -> &'static str {
        match self {
            Refusal::DeniedIp => "refused_denied_ip",
            Refusal::IpNotAllowed => "refused_ip_not_allowed",
            Refusal::UnknownClient => "refused_unknown_client",
            Refusal::Method => "refused_method",
            Refusal::MissingHeader => "refused_missing_header",
            Refusal::HeaderMismatch => "refused_header_mismatch",
        }
    }
}

/// The access-policy request filter.
#[derive(Debug)]
pub struct AccessPolicy {
    policy: Policy,
}

impl AccessPolicy {
    /// Checks `req` against the policy: `Ok` lets it through, `Err` says why not.
    pub fn check(&self, req: &dyn RequestHead) -> Result<(), Refusal> {
        self.check_client(req)?;
        self.check_method(req)?;
        self.check_headers(req)
    }

    fn check_client(&self, req: &dyn RequestHead) -> Result<(), Refusal> {
        let policy = &self.policy;
        if policy.deny.is_empty() && policy.allow.is_empty() {
            // Without address rules the address is not needed: skip the call into the host.
            return Ok(());
        }
        let client: IpAddr = req.client_ip().parse().map_err(|_| Refusal::UnknownClient)?;
        if policy.deny.iter().any(|n| n.contains(client)) {
            return Err(Refusal::DeniedIp);
        }
        if !policy.allow.is_empty() && !policy.allow.iter().any(|n| n.contains(client)) {
            return Err(Refusal::IpNotAllowed);
        }
        Ok(())
    }

    fn check_method(&self, req: &dyn RequestHead) -> Result<(), Refusal> {
        if self.policy.methods.is_empty() {
            return Ok(());
        }
        // Methods are case-sensitive (RFC 9110); the configured ones were uppercased at load.
        let method = req.method();
        if self.policy.methods.contains(&method) { Ok(()) } else { Err(Refusal::Method) }
    }

    fn check_headers(&self, req: &dyn RequestHead) -> Result<(), Refusal> {
        for (name, requirement) in &self.policy.required_headers {
            let values = req.header_all(name);
            if values.is_empty() {
                return Err(Refusal::MissingHeader);
            }
            if let HeaderRequirement::Equals(expected) = requirement
                && values.iter().any(|v| v != expected)
            {
                return Err(Refusal::HeaderMismatch);
            }
        }
        Ok(())
    }

    /// Strips and tags an allowed request. The names were checked at load, so the proxy should
    /// accept every change; if it does not, the request still goes on (the policy said yes) and
    /// the failure is logged.
    fn prepare_for_upstream(&self, req: &dyn RequestHead) {
        for name in &self.policy.strip_headers {
            if let Err(e) = req.remove_header(name) {
                host::log(LogLevel::Warn, &format!("cannot strip header {name}: {e}"));
            }
        }
        if let Some(name) = &self.policy.tag_header
            && let Err(e) = req.set_header(name, "allowed")
        {
            host::log(LogLevel::Warn, &format!("cannot set header {name}: {e}"));
        }
    }
}

impl RequestFilter for AccessPolicy {
    /// Runs once per instance when the configuration is loaded; an error fails that load.
    fn configure(config: &str) -> Result<Self, String> {
        Ok(AccessPolicy { policy: Policy::from_json(config)? })
    }

    /// Runs for every request on a chain the filter is part of. Returns `Continue` for an
    /// allowed request (after stripping and tagging it), or the configured refusal.
    fn on_request(&self, req: &dyn RequestHead) -> FilterAction {
        match self.check(req) {
            Ok(()) => {
                self.prepare_for_upstream(req);
                FilterAction::Continue
            }
            Err(refusal) => {
                host::counter_add("refused", 1);
                host::counter_add(refusal.counter(), 1);
                req.set_context("access_policy.refused", refusal.reason());
                FilterAction::Respond(self.policy.refusal.clone())
            }
        }
    }
}

export_plugin!(AccessPolicy: request_filter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::{TestRequest, reset_test_host, with_test_host};
    use switchyard_sdk::{Header, LocalResponse};

    fn filter(config: &str) -> AccessPolicy {
        AccessPolicy::configure(config).unwrap_or_else(|e| panic!("{config}: {e}"))
    }

    fn from(ip: &str) -> TestRequest {
        TestRequest::get("/").with_client_ip(ip)
    }

    /// The example policy from the module documentation.
    fn platform_policy() -> AccessPolicy {
        filter(
            r#"{"allow": ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"], "deny": ["10.1.2.0/24"],
                "require_headers": {"x-api-key": true, "x-tenant": "acme"}, "methods": ["GET", "POST"],
                "status": 403, "message": "forbidden", "strip_headers": ["x-internal-debug"],
                "tag_header": "x-access-policy"}"#,
        )
    }

    fn with_credentials(req: TestRequest) -> TestRequest {
        req.with_header("X-Api-Key", "k").with_header("x-tenant", "acme")
    }

    #[test]
    fn deny_wins_over_allow() {
        let f = filter(r#"{"allow": ["10.0.0.0/8"], "deny": ["10.1.2.0/24"]}"#);
        assert_eq!(f.check(&from("10.1.2.3")), Err(Refusal::DeniedIp));
        assert_eq!(f.check(&from("10.1.3.3")), Ok(()));
        assert_eq!(f.check(&from("11.0.0.1")), Err(Refusal::IpNotAllowed));
    }

    #[test]
    fn an_empty_allow_list_admits_everyone_not_denied() {
        let f = filter(r#"{"deny": ["192.0.2.0/24", "2001:db8::/32"]}"#);
        assert_eq!(f.check(&from("198.51.100.1")), Ok(()));
        assert_eq!(f.check(&from("2001:db9::1")), Ok(()));
        assert_eq!(f.check(&from("192.0.2.200")), Err(Refusal::DeniedIp));
        assert_eq!(f.check(&from("2001:db8:1::1")), Err(Refusal::DeniedIp));
    }

    #[test]
    fn v4_v6_and_mapped_clients() {
        let f = filter(r#"{"allow": ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]}"#);
        assert_eq!(f.check(&from("10.200.0.1")), Ok(()));
        assert_eq!(f.check(&from("2001:db8:abcd::7")), Ok(()));
        assert_eq!(f.check(&from("127.0.0.1")), Ok(()));
        assert_eq!(f.check(&from("::ffff:10.0.0.1")), Ok(()), "an IPv4-mapped client matches IPv4 rules");
        assert_eq!(f.check(&from("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(f.check(&from("127.0.0.2")), Err(Refusal::IpNotAllowed));
        assert_eq!(f.check(&from("::1")), Err(Refusal::IpNotAllowed));
        assert_eq!(f.check(&from("::ffff:11.0.0.1")), Err(Refusal::IpNotAllowed));
    }

    #[test]
    fn mapped_clients_are_denied_by_ipv4_rules_too() {
        let f = filter(r#"{"deny": ["10.1.2.0/24"]}"#);
        assert_eq!(f.check(&from("::ffff:10.1.2.9")), Err(Refusal::DeniedIp));
    }

    #[test]
    fn zero_prefixes_cover_one_family_each() {
        let v4_only = filter(r#"{"allow": ["0.0.0.0/0"]}"#);
        assert_eq!(v4_only.check(&from("203.0.113.9")), Ok(()));
        assert_eq!(v4_only.check(&from("2001:db8::1")), Err(Refusal::IpNotAllowed));
        let deny_all_v6 = filter(r#"{"deny": ["::/0"]}"#);
        assert_eq!(deny_all_v6.check(&from("2001:db8::1")), Err(Refusal::DeniedIp));
        assert_eq!(deny_all_v6.check(&from("203.0.113.9")), Ok(()));
    }

    #[test]
    fn single_address_rules_match_exactly() {
        let f = filter(r#"{"allow": ["192.0.2.7/32", "2001:db8::7/128"]}"#);
        assert_eq!(f.check(&from("192.0.2.7")), Ok(()));
        assert_eq!(f.check(&from("2001:db8::7")), Ok(()));
        assert_eq!(f.check(&from("192.0.2.8")), Err(Refusal::IpNotAllowed));
        assert_eq!(f.check(&from("2001:db8::8")), Err(Refusal::IpNotAllowed));
    }

    #[test]
    fn unknown_clients_fail_closed_only_when_addresses_matter() {
        let with_rules = filter(r#"{"deny": ["10.0.0.0/8"]}"#);
        assert_eq!(with_rules.check(&from("")), Err(Refusal::UnknownClient));
        assert_eq!(with_rules.check(&from("not-an-ip")), Err(Refusal::UnknownClient));
        let without_rules = filter(r#"{"methods": ["GET"]}"#);
        assert_eq!(without_rules.check(&from("")), Ok(()));
    }

    #[test]
    fn methods_are_limited_when_listed() {
        let f = filter(r#"{"methods": ["get", "POST"]}"#);
        assert_eq!(f.check(&TestRequest::new("GET", "/")), Ok(()));
        assert_eq!(f.check(&TestRequest::new("POST", "/")), Ok(()));
        assert_eq!(f.check(&TestRequest::new("DELETE", "/")), Err(Refusal::Method));
        // Methods are case-sensitive on the wire.
        assert_eq!(f.check(&TestRequest::new("get", "/")), Err(Refusal::Method));
        assert_eq!(filter("{}").check(&TestRequest::new("PATCH", "/")), Ok(()));
    }

    #[test]
    fn required_headers_must_be_present_or_equal() {
        let f = filter(r#"{"require_headers": {"x-api-key": true, "x-tenant": "acme"}}"#);
        let req = || TestRequest::get("/");
        assert_eq!(f.check(&req().with_header("x-api-key", "").with_header("X-TENANT", "acme")), Ok(()));
        assert_eq!(f.check(&req().with_header("x-tenant", "acme")), Err(Refusal::MissingHeader));
        assert_eq!(f.check(&req().with_header("x-api-key", "k")), Err(Refusal::MissingHeader));
        assert_eq!(
            f.check(&req().with_header("x-api-key", "k").with_header("x-tenant", "Acme")),
            Err(Refusal::HeaderMismatch),
            "values are compared exactly"
        );
    }

    #[test]
    fn a_second_conflicting_value_is_refused() {
        let f = filter(r#"{"require_headers": {"x-tenant": "acme"}}"#);
        let twice = TestRequest::get("/").with_header("x-tenant", "acme").with_header("x-tenant", "globex");
        assert_eq!(f.check(&twice), Err(Refusal::HeaderMismatch));
        let same_twice = TestRequest::get("/").with_header("x-tenant", "acme").with_header("x-tenant", "acme");
        assert_eq!(f.check(&same_twice), Ok(()));
    }

    #[test]
    fn a_refusal_is_a_local_reply_and_is_counted() {
        reset_test_host();
        let f = filter(r#"{"deny": ["10.1.2.0/24"], "methods": ["GET"], "status": 451, "message": "go away"}"#);
        let req = from("10.1.2.3");
        let expected = LocalResponse {
            status: 451,
            headers: vec![Header { name: "content-type".into(), value: "text/plain".into() }],
            body: b"go away\n".to_vec(),
        };
        assert_eq!(f.on_request(&req), FilterAction::Respond(expected));
        assert_eq!(req.context("access_policy.refused").as_deref(), Some("denied_ip"));
        assert_eq!(f.on_request(&TestRequest::new("PUT", "/")), FilterAction::Respond(f.policy.refusal.clone()));

        let host = reset_test_host();
        assert_eq!(host.counters.get("refused"), Some(&2));
        assert_eq!(host.counters.get("refused_denied_ip"), Some(&1));
        assert_eq!(host.counters.get("refused_method"), Some(&1));
    }

    #[test]
    fn allowed_requests_are_stripped_and_tagged() {
        reset_test_host();
        let f = platform_policy();
        let req = with_credentials(from("10.9.9.9"))
            .with_header("X-Internal-Debug", "1")
            .with_header("x-access-policy", "forged-by-client");
        assert_eq!(f.on_request(&req), FilterAction::Continue);
        assert_eq!(req.header("x-internal-debug"), None);
        assert_eq!(req.header_all("x-access-policy"), ["allowed"], "the client's own value is replaced");
        assert_eq!(req.header("x-api-key").as_deref(), Some("k"), "only listed headers are stripped");
        assert_eq!(req.context("access_policy.refused"), None);
        assert!(with_test_host(|h| h.counters.is_empty()), "allowed requests count nothing");
    }

    #[test]
    fn refused_requests_are_left_untouched() {
        let f = platform_policy();
        let req = with_credentials(from("10.1.2.3")).with_header("x-internal-debug", "1");
        assert!(matches!(f.on_request(&req), FilterAction::Respond(_)));
        assert_eq!(req.header("x-internal-debug").as_deref(), Some("1"));
        assert_eq!(req.header("x-access-policy"), None);
    }

    #[test]
    fn the_documented_policy_end_to_end() {
        reset_test_host();
        let f = platform_policy();
        let outcomes = [
            (with_credentials(from("10.0.0.1")), None),
            (with_credentials(from("2001:db8::5")), None),
            (with_credentials(from("::ffff:127.0.0.1")), None),
            (with_credentials(from("10.1.2.200")), Some("denied_ip")),
            (with_credentials(from("192.168.0.1")), Some("ip_not_allowed")),
            (with_credentials(TestRequest::new("DELETE", "/").with_client_ip("10.0.0.1")), Some("method")),
            (from("10.0.0.1").with_header("x-tenant", "acme"), Some("missing_header")),
            (from("10.0.0.1").with_header("x-api-key", "k").with_header("x-tenant", "other"), Some("header_mismatch")),
        ];
        for (req, refused) in &outcomes {
            let action = f.on_request(req);
            assert_eq!(matches!(action, FilterAction::Respond(_)), refused.is_some(), "{req:?}");
            assert_eq!(req.context("access_policy.refused").as_deref(), *refused, "{req:?}");
        }
        assert_eq!(reset_test_host().counters.get("refused"), Some(&5));
    }

    #[test]
    fn configure_reports_errors() {
        let e = AccessPolicy::configure(r#"{"allow": ["10.0.0.0/8", "10.0.0.0/33"], "deny": ["::1/129"]}"#)
            .err()
            .unwrap_or_default();
        assert!(e.contains(r#"allow[1] "10.0.0.0/33""#), "{e}");
        assert!(e.contains(r#"deny[0] "::1/129""#), "{e}");
        assert!(AccessPolicy::configure(r#"{"unknown": 1}"#).is_err());
    }
}
