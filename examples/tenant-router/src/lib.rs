//! An example custom router, written with the SDK as a user would: requests go to a tenant's
//! upstream, the tenant taken from a header (`x-tenant: acme`) or from the subdomain
//! (`acme.saas.example`). It replaces the built-in router when loaded with the `router` role.
//!
//! ```toml
//! [[plugin]]
//! name = "tenants"
//! path = "tenant-router.wasm"
//! config = { header = "x-tenant", domain = "saas.example", default = "shared",
//!            tenants = { acme = "acme-pool", globex = "globex-pool" } }
//! ```

use std::collections::HashMap;

use serde::Deserialize;
use switchyard_sdk::{RequestHead, RouteDecision, Router, export_plugin, host};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantConfig {
    /// The header naming the tenant; checked first.
    #[serde(default = "default_header")]
    header: String,
    /// Hosts `<tenant>.<domain>` name their tenant by subdomain.
    domain: Option<String>,
    /// Tenant → upstream.
    tenants: HashMap<String, String>,
    /// The upstream for requests with no known tenant; without it they get 404.
    default: Option<String>,
}

fn default_header() -> String {
    "x-tenant".to_string()
}

/// Routes by tenant.
#[derive(Debug)]
pub struct TenantRouter {
    config: TenantConfig,
    domain_suffix: Option<String>,
}

impl TenantRouter {
    fn tenant(&self, req: &dyn RequestHead) -> Option<String> {
        if let Some(t) = req.header(&self.config.header) {
            return Some(t.trim().to_ascii_lowercase());
        }
        let suffix = self.domain_suffix.as_deref()?;
        let host = req.host();
        let sub = host.strip_suffix(suffix)?;
        (!sub.is_empty() && !sub.contains('.')).then(|| sub.to_string())
    }
}

impl Router for TenantRouter {
    fn configure(config: &str) -> Result<Self, String> {
        let config: TenantConfig = switchyard_sdk::parse_config(config)?;
        if config.tenants.is_empty() {
            return Err("tenant-router needs at least one entry in `tenants`".to_string());
        }
        let domain_suffix =
            config.domain.as_ref().map(|d| format!(".{}", d.trim_start_matches('.').to_ascii_lowercase()));
        Ok(TenantRouter { config, domain_suffix })
    }

    fn route(&self, req: &dyn RequestHead) -> Option<RouteDecision> {
        let tenant = self.tenant(req);
        let upstream = match tenant.as_deref().and_then(|t| self.config.tenants.get(t)) {
            Some(u) => u.clone(),
            None => {
                host::counter_add("unknown_tenant", 1);
                self.config.default.clone()?
            }
        };
        let tenant = tenant.unwrap_or_else(|| "-".to_string());
        req.set_context("tenant", &tenant);
        let _ = req.set_header("x-switchyard-tenant", &tenant);
        Some(RouteDecision { name: format!("tenant:{tenant}"), upstream, rewrite: None })
    }
}

export_plugin!(TenantRouter: router);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::{TestRequest, reset_test_host};

    fn router() -> TenantRouter {
        let config = r#"{"domain": "saas.example", "default": "shared",
                         "tenants": {"acme": "acme-pool", "globex": "globex-pool"}}"#;
        TenantRouter::configure(config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn header_wins_over_subdomain() {
        let r = router();
        let req = TestRequest::get("/").with_host("globex.saas.example").with_header("X-Tenant", "ACME");
        let decision = r.route(&req);
        assert_eq!(decision.map(|d| d.upstream).as_deref(), Some("acme-pool"));
        assert_eq!(req.header("x-switchyard-tenant").as_deref(), Some("acme"));
        assert_eq!(req.context("tenant").as_deref(), Some("acme"));
    }

    #[test]
    fn subdomain_names_the_tenant() {
        let r = router();
        let d = r.route(&TestRequest::get("/x").with_host("globex.saas.example:8443"));
        assert_eq!(d.map(|d| (d.name, d.upstream)), Some(("tenant:globex".into(), "globex-pool".into())));
    }

    #[test]
    fn unknown_tenants_go_to_the_default_and_are_counted() {
        reset_test_host();
        let r = router();
        let d = r.route(&TestRequest::get("/").with_host("nobody.saas.example"));
        assert_eq!(d.map(|d| d.upstream).as_deref(), Some("shared"));
        assert_eq!(reset_test_host().counters.get("unknown_tenant"), Some(&1));
    }

    #[test]
    fn without_default_unknown_tenants_get_no_route() {
        let r = TenantRouter::configure(r#"{"tenants": {"a": "u"}}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.route(&TestRequest::get("/").with_host("x.example")).is_none());
    }

    #[test]
    fn an_empty_tenant_table_is_rejected() {
        assert!(TenantRouter::configure(r#"{"tenants": {}}"#).is_err());
        assert!(TenantRouter::configure(r#"{"tenants": {"a": "u"}, "typo": 1}"#).is_err());
    }
}
