//! The built-in header policy: forwarding headers (`X-Forwarded-*`, RFC 7239 `Forwarded`) and
//! configured header edits on requests, header edits and a security preset on responses.
//!
//! One type serves both the request-filter and the response-filter role; the host configures
//! each with the same JSON, the merge of the server, site and route `header_policy` tables, so
//! both validate all of it and a mistake anywhere fails the load. The work is split by concern:
//! `config` (format and validation), `forwarded` (who the client is), `edits` (rename,
//! remove, set, add), `security` (the response preset), over `target` (a head whose refused
//! changes are logged).

mod config;
mod edits;
mod forwarded;
mod security;
mod target;

use switchyard_sdk::{FilterAction, RequestFilter, RequestHead, ResponseFilter, ResponseHead, export_plugin};

use crate::config::Policy;
use crate::target::Target;

/// The configured header policy.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    policy: Policy,
}

impl RequestFilter for HeaderPolicy {
    /// Parses and validates the whole policy, response keys included. An error names every
    /// offending key and fails the configuration load.
    fn configure(config: &str) -> Result<Self, String> {
        Policy::from_json(config).map(|policy| HeaderPolicy { policy })
    }

    /// Runs for every request the policy is chained on. Writes the forwarding headers (after
    /// dropping incoming ones when `trust_incoming` is off), then applies `request` rename,
    /// remove, set and add. Always returns [`FilterAction::Continue`]: a header the host refuses
    /// is logged at `warn` and skipped, never a reason to fail the request.
    fn on_request(&self, req: &dyn RequestHead) -> FilterAction {
        self.policy.forwarding.apply(req);
        self.policy.request.apply(&Target::Request(req));
        FilterAction::Continue
    }
}

impl ResponseFilter for HeaderPolicy {
    /// Same as the request role's `configure`: one policy, validated in full.
    fn configure(config: &str) -> Result<Self, String> {
        Policy::from_json(config).map(|policy| HeaderPolicy { policy })
    }

    /// Runs for every response of a request the policy is chained on. Applies `response` rename,
    /// remove, set and add, then the security preset (when `security_headers` is on), which
    /// only fills headers still missing. Refused changes are logged at `warn`.
    fn on_response(&self, req: &dyn RequestHead, resp: &dyn ResponseHead) {
        let target = Target::Response(resp);
        self.policy.response.apply(&target);
        if let Some(preset) = &self.policy.security {
            preset.apply(req, &target);
        }
    }
}

export_plugin!(HeaderPolicy: request_filter, response_filter);
// A header policy's changes depend only on its configuration and on what it reads, so the proxy may
// make them again from memory for requests and responses that read the same.
switchyard_sdk::declare_deterministic!();

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::LogLevel;
    use switchyard_sdk::testkit::{TestRequest, TestResponse, reset_test_host};

    fn policy(json: serde_json::Value) -> HeaderPolicy {
        <HeaderPolicy as RequestFilter>::configure(&json.to_string()).unwrap_or_else(|e| panic!("configure: {e}"))
    }

    /// Runs the request role of `json` on `req` and returns the headers it left.
    fn filtered(json: serde_json::Value, req: TestRequest) -> Vec<(String, String)> {
        let action = policy(json).on_request(&req);
        assert!(matches!(action, FilterAction::Continue));
        req.headers()
    }

    /// Runs the response role of `json` on `resp` for `req` and returns the headers it left.
    fn filtered_response(json: serde_json::Value, req: TestRequest, resp: TestResponse) -> Vec<(String, String)> {
        let plugin =
            <HeaderPolicy as ResponseFilter>::configure(&json.to_string()).unwrap_or_else(|e| panic!("configure: {e}"));
        plugin.on_response(&req, &resp);
        resp.headers()
    }

    fn values(headers: &[(String, String)], name: &str) -> Vec<String> {
        headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }

    fn value(headers: &[(String, String)], name: &str) -> Option<String> {
        match values(headers, name).as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => panic!("{name} has {} values: {many:?}", many.len()),
        }
    }

    fn no_forwarding() -> serde_json::Value {
        serde_json::json!({
            "x_forwarded_for": false, "x_forwarded_proto": false,
            "x_forwarded_host": false, "x_forwarded_port": false,
        })
    }

    #[test]
    fn x_forwarded_for_is_created_when_absent() {
        reset_test_host();
        let headers = filtered(serde_json::json!({}), TestRequest::get("/").with_client_ip("198.51.100.7"));
        assert_eq!(value(&headers, "x-forwarded-for").as_deref(), Some("198.51.100.7"));
    }

    #[test]
    fn x_forwarded_for_extends_an_incoming_chain() {
        reset_test_host();
        let headers = filtered(serde_json::json!({}), TestRequest::get("/").with_header("X-Forwarded-For", "1.2.3.4"));
        assert_eq!(value(&headers, "x-forwarded-for").as_deref(), Some("1.2.3.4, 127.0.0.1"));

        // Several incoming lines become one chain, in order.
        let req = TestRequest::get("/")
            .with_header("x-forwarded-for", "1.2.3.4, 5.6.7.8")
            .with_header("x-forwarded-for", "9.9.9.9")
            .with_client_ip("2001:db8::1");
        let headers = filtered(serde_json::json!({}), req);
        assert_eq!(value(&headers, "x-forwarded-for").as_deref(), Some("1.2.3.4, 5.6.7.8, 9.9.9.9, 2001:db8::1"));
    }

    #[test]
    fn untrusted_incoming_forwarding_headers_are_replaced() {
        reset_test_host();
        let req = TestRequest::get("/")
            .with_host("shop.example")
            .with_header("X-Forwarded-For", "6.6.6.6")
            .with_header("Forwarded", "for=6.6.6.6")
            .with_header("X-Forwarded-Proto", "https")
            .with_header("X-Forwarded-Server", "spoofed")
            .with_header("x-other", "kept");
        let headers = filtered(serde_json::json!({"trust_incoming": false}), req);
        assert_eq!(value(&headers, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(value(&headers, "x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(value(&headers, "forwarded"), None);
        assert_eq!(value(&headers, "x-forwarded-server"), None);
        assert_eq!(value(&headers, "x-other").as_deref(), Some("kept"));

        // With the headers switched off, the spoofed values still go.
        let req = TestRequest::get("/").with_header("X-Forwarded-Proto", "https").with_header("Forwarded", "for=x");
        let mut config = no_forwarding();
        config["trust_incoming"] = false.into();
        let headers = filtered(config, req);
        assert_eq!(value(&headers, "x-forwarded-proto"), None);
        assert_eq!(value(&headers, "forwarded"), None);
    }

    #[test]
    fn proto_host_and_port_describe_the_client_connection() {
        reset_test_host();
        let req = TestRequest::get("/").with_scheme("https").with_host("Shop.Example:8443").with_server_port(8443);
        let headers = filtered(serde_json::json!({}), req);
        assert_eq!(value(&headers, "x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(value(&headers, "x-forwarded-host").as_deref(), Some("Shop.Example:8443"));
        assert_eq!(value(&headers, "x-forwarded-port").as_deref(), Some("8443"));
    }

    #[test]
    fn trusted_incoming_proto_host_and_port_are_kept() {
        reset_test_host();
        let req = TestRequest::get("/")
            .with_host("internal:8080")
            .with_header("X-Forwarded-Proto", "https")
            .with_header("X-Forwarded-Host", "shop.example")
            .with_header("X-Forwarded-Port", "443");
        let headers = filtered(serde_json::json!({}), req);
        assert_eq!(value(&headers, "x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(value(&headers, "x-forwarded-host").as_deref(), Some("shop.example"));
        assert_eq!(value(&headers, "x-forwarded-port").as_deref(), Some("443"));
    }

    #[test]
    fn an_unknown_port_is_not_written() {
        reset_test_host();
        let headers = filtered(serde_json::json!({}), TestRequest::get("/").with_server_port(0));
        assert_eq!(value(&headers, "x-forwarded-port"), None);
        assert_eq!(value(&headers, "x-forwarded-proto").as_deref(), Some("http"));
    }

    #[test]
    fn each_forwarding_switch_really_omits_its_header() {
        let all = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"];
        for off in all {
            reset_test_host();
            let key = off.replace('-', "_");
            let req = TestRequest::get("/").with_host("a.example");
            let headers = filtered(serde_json::json!({ key.as_str(): false }), req);
            for name in all {
                assert_eq!(value(&headers, name).is_some(), name != off, "{key}: false, looking at {name}");
            }
        }
    }

    #[test]
    fn forwarded_describes_an_ipv4_client() {
        reset_test_host();
        let req = TestRequest::get("/").with_client_ip("192.0.2.60").with_host("shop.example");
        let headers = filtered(serde_json::json!({"forwarded": true}), req);
        assert_eq!(value(&headers, "forwarded").as_deref(), Some("for=192.0.2.60;host=shop.example;proto=http"));
    }

    #[test]
    fn forwarded_quotes_and_brackets_ipv6_and_quotes_host_with_port() {
        reset_test_host();
        let req =
            TestRequest::get("/").with_client_ip("2001:db8::1").with_host("shop.example:8443").with_scheme("https");
        let headers = filtered(serde_json::json!({"forwarded": true}), req);
        assert_eq!(
            value(&headers, "forwarded").as_deref(),
            Some("for=\"[2001:db8::1]\";host=\"shop.example:8443\";proto=https")
        );
    }

    #[test]
    fn forwarded_can_hide_the_client_and_name_this_proxy() {
        reset_test_host();
        let config = serde_json::json!({"forwarded": true, "forwarded_for": "_hidden", "forwarded_by": "_edge-1"});
        let headers = filtered(config, TestRequest::get("/").with_client_ip("192.0.2.60").with_host("a.example"));
        assert_eq!(value(&headers, "forwarded").as_deref(), Some("for=_hidden;host=a.example;proto=http;by=_edge-1"));

        reset_test_host();
        let config = serde_json::json!({"forwarded": true, "forwarded_for": "unknown", "forwarded_by": "2001:db8::9"});
        let headers = filtered(config, TestRequest::get("/").with_host("a.example"));
        assert_eq!(
            value(&headers, "forwarded").as_deref(),
            Some("for=unknown;host=a.example;proto=http;by=\"[2001:db8::9]\"")
        );
    }

    #[test]
    fn forwarded_appends_after_an_incoming_element() {
        reset_test_host();
        let req = TestRequest::get("/").with_host("a.example").with_header("Forwarded", "for=192.0.2.43;proto=https");
        let headers = filtered(serde_json::json!({"forwarded": true}), req);
        assert_eq!(
            value(&headers, "forwarded").as_deref(),
            Some("for=192.0.2.43;proto=https, for=127.0.0.1;host=a.example;proto=http")
        );
    }

    #[test]
    fn request_set_replaces_every_value() {
        reset_test_host();
        let mut config = no_forwarding();
        config["request"] = serde_json::json!({"set": {"X-Env": "prod"}});
        let req = TestRequest::get("/").with_header("x-env", "dev").with_header("X-ENV", "test");
        let headers = filtered(config, req);
        assert_eq!(values(&headers, "x-env"), vec!["prod"]);
    }

    #[test]
    fn request_add_appends_one_value_or_a_list() {
        reset_test_host();
        let mut config = no_forwarding();
        config["request"] = serde_json::json!({"add": {"X-Tag": "one", "X-List": ["a", "b"]}});
        let headers = filtered(config, TestRequest::get("/").with_header("x-tag", "zero"));
        assert_eq!(values(&headers, "x-tag"), vec!["zero", "one"]);
        assert_eq!(values(&headers, "x-list"), vec!["a", "b"]);
    }

    #[test]
    fn request_remove_drops_every_value() {
        reset_test_host();
        let mut config = no_forwarding();
        config["request"] = serde_json::json!({"remove": ["Cookie", "x-absent"]});
        let req =
            TestRequest::get("/").with_header("cookie", "a=1").with_header("COOKIE", "b=2").with_header("x-k", "v");
        let headers = filtered(config, req);
        assert_eq!(values(&headers, "cookie"), Vec::<String>::new());
        assert_eq!(value(&headers, "x-k").as_deref(), Some("v"));
    }

    #[test]
    fn request_rename_moves_every_value() {
        reset_test_host();
        let mut config = no_forwarding();
        config["request"] = serde_json::json!({"rename": {"X-User": "X-Auth-User"}});
        let req = TestRequest::get("/").with_header("x-user", "ann").with_header("X-User", "bob");
        let headers = filtered(config.clone(), req);
        assert_eq!(values(&headers, "x-user"), Vec::<String>::new());
        assert_eq!(values(&headers, "x-auth-user"), vec!["ann", "bob"]);

        // Nothing to rename: an existing target stays as it is.
        let headers = filtered(config, TestRequest::get("/").with_header("x-auth-user", "own"));
        assert_eq!(values(&headers, "x-auth-user"), vec!["own"]);
    }

    #[test]
    fn request_edits_run_after_the_forwarding_headers() {
        reset_test_host();
        let config = serde_json::json!({"request": {
            "remove": ["x-forwarded-port"],
            "set": {"x-forwarded-proto": "https"},
            "rename": {"x-forwarded-host": "x-original-host"},
        }});
        let headers = filtered(config, TestRequest::get("/").with_host("a.example"));
        assert_eq!(value(&headers, "x-forwarded-port"), None);
        assert_eq!(value(&headers, "x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(value(&headers, "x-forwarded-host"), None);
        assert_eq!(value(&headers, "x-original-host").as_deref(), Some("a.example"));
    }

    #[test]
    fn response_remove_and_set() {
        reset_test_host();
        let config = serde_json::json!({"response": {"remove": ["Server"], "set": {"Cache-Control": "no-store"}}});
        let resp = TestResponse::new(200)
            .with_header("Server", "nginx/1.25")
            .with_header("cache-control", "max-age=60")
            .with_header("content-type", "text/html");
        let headers = filtered_response(config, TestRequest::get("/"), resp);
        assert_eq!(value(&headers, "server"), None);
        assert_eq!(value(&headers, "cache-control").as_deref(), Some("no-store"));
        assert_eq!(value(&headers, "content-type").as_deref(), Some("text/html"));
    }

    #[test]
    fn response_rename_and_add() {
        reset_test_host();
        let config =
            serde_json::json!({"response": {"rename": {"X-Powered-By": "X-Backend"}, "add": {"Vary": "Origin"}}});
        let resp = TestResponse::new(200).with_header("x-powered-by", "php").with_header("vary", "Accept-Encoding");
        let headers = filtered_response(config, TestRequest::get("/"), resp);
        assert_eq!(value(&headers, "x-powered-by"), None);
        assert_eq!(value(&headers, "x-backend").as_deref(), Some("php"));
        assert_eq!(values(&headers, "vary"), vec!["Accept-Encoding", "Origin"]);
    }

    #[test]
    fn security_preset_adds_hsts_only_on_https() {
        reset_test_host();
        let config = serde_json::json!({"security_headers": true, "hsts_max_age": 600});
        let https =
            filtered_response(config.clone(), TestRequest::get("/").with_scheme("https"), TestResponse::new(200));
        assert_eq!(value(&https, "strict-transport-security").as_deref(), Some("max-age=600; includeSubDomains"));
        assert_eq!(value(&https, "x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(value(&https, "x-frame-options").as_deref(), Some("SAMEORIGIN"));
        assert_eq!(value(&https, "referrer-policy").as_deref(), Some("strict-origin-when-cross-origin"));

        let http = filtered_response(config, TestRequest::get("/"), TestResponse::new(200));
        assert_eq!(value(&http, "strict-transport-security"), None);
        assert_eq!(value(&http, "x-content-type-options").as_deref(), Some("nosniff"));
    }

    #[test]
    fn security_preset_keeps_the_upstreams_own_values() {
        reset_test_host();
        let resp = TestResponse::new(200)
            .with_header("X-Frame-Options", "DENY")
            .with_header("Strict-Transport-Security", "max-age=5");
        let req = TestRequest::get("/").with_scheme("https");
        let headers = filtered_response(serde_json::json!({"security_headers": true}), req, resp);
        assert_eq!(value(&headers, "x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(value(&headers, "strict-transport-security").as_deref(), Some("max-age=5"));
        assert_eq!(value(&headers, "referrer-policy").as_deref(), Some("strict-origin-when-cross-origin"));
    }

    #[test]
    fn security_preset_is_off_by_default() {
        reset_test_host();
        let headers = filtered_response(
            serde_json::json!({}),
            TestRequest::get("/").with_scheme("https"),
            TestResponse::new(200).with_header("server", "x"),
        );
        assert_eq!(headers, vec![("server".to_string(), "x".to_string())]);
    }

    #[test]
    fn both_roles_reject_a_bad_policy_naming_the_key() {
        reset_test_host();
        let bad = [
            (r#"{"request": {"remove": ["Content-Length"]}}"#, "request.remove: header content-length is protected"),
            (r#"{"response": {"set": {"Transfer-Encoding": "chunked"}}}"#, "response.set: header transfer-encoding"),
            (r#"{"request": {"set": {"bad header": "1"}}}"#, "invalid header name \"bad header\""),
            (r#"{"x_forwarded_prot": true}"#, "unknown field `x_forwarded_prot`"),
            (r#"{"forwarded_by": "_no/slash"}"#, "forwarded_by: \"_no/slash\""),
        ];
        for (json, expected) in bad {
            for error in [
                <HeaderPolicy as RequestFilter>::configure(json).err(),
                <HeaderPolicy as ResponseFilter>::configure(json).err(),
            ] {
                assert!(error.as_deref().is_some_and(|e| e.contains(expected)), "{json}: {error:?}");
            }
        }
    }

    #[test]
    fn a_refused_header_is_logged_and_the_request_goes_on() {
        reset_test_host();
        // A Host value the host cannot copy into X-Forwarded-Host.
        let req = TestRequest::get("/").with_header("Host", "a.example\nx-evil: 1");
        let headers = filtered(serde_json::json!({}), req);
        assert_eq!(value(&headers, "x-forwarded-host"), None);
        assert_eq!(value(&headers, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
        let logs = reset_test_host().logs;
        assert!(
            logs.iter().any(|(level, line)| matches!(level, LogLevel::Warn)
                && line.contains("could not set request header x-forwarded-host")),
            "{logs:?}"
        );
    }
}
