//! The built-in router: host (exact, `*.wildcard`, `*` catch-all) + longest path prefix, with
//! optional method, header and query matchers and prefix stripping.
//!
//! `configure` compiles the site list into lookup tables once: a map from exact host to site, a
//! list of wildcard suffixes longest first, and per site a map from prefix to the routes sharing
//! it, plus the set of prefix lengths in use. A request then costs one host lookup and one map
//! lookup per segment boundary whose length some prefix has (FxHash: keys are short and
//! configuration-defined, so a DoS-resistant hasher buys nothing here).

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use serde::Deserialize;
use switchyard_sdk::{RequestHead, RouteDecision, Router, export_plugin};

/// The router's configuration; the proxy generates it from the `[[site]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterConfig {
    #[serde(default)]
    sites: Vec<SiteConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteConfig {
    name: String,
    hosts: Vec<String>,
    routes: Vec<RouteConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    name: String,
    #[serde(default = "root_prefix")]
    path_prefix: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    headers: HashMap<String, ValueMatch>,
    #[serde(default)]
    query: HashMap<String, ValueMatch>,
    upstream: String,
    #[serde(default)]
    strip_prefix: bool,
}

fn root_prefix() -> String {
    "/".to_string()
}

/// `"value"` matches exactly that value; `true` matches presence with any value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ValueMatch {
    Exact(String),
    Present(bool),
}

#[derive(Debug)]
struct CompiledRoute {
    name: String,
    prefix: String,
    methods: Vec<String>,
    headers: Vec<(String, Option<String>)>,
    query: Vec<(String, Option<String>)>,
    upstream: String,
    strip_prefix: bool,
}

#[derive(Debug, Default)]
struct CompiledSite {
    /// Routes by their exact prefix; each list is ordered most specific first.
    by_prefix: FxHashMap<String, Vec<CompiledRoute>>,
    /// `has_length[n]`: some prefix is `n` bytes long. Cuts of other lengths need no lookup.
    has_length: Vec<bool>,
}

impl CompiledSite {
    fn routes_with_prefix(&self, prefix: &str) -> Option<&Vec<CompiledRoute>> {
        if !self.has_length.get(prefix.len()).copied().unwrap_or(false) {
            return None;
        }
        self.by_prefix.get(prefix)
    }
}

/// The compiled routing table.
#[derive(Debug, Default)]
pub struct HostPrefixRouter {
    sites: Vec<CompiledSite>,
    exact_hosts: FxHashMap<String, usize>,
    /// (`.example.com`, site) for `*.example.com`, longest suffix first.
    wildcard_hosts: Vec<(String, usize)>,
    catch_all: Option<usize>,
}

fn compile_matches(
    matches: HashMap<String, ValueMatch>,
    lowercase_names: bool,
) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::with_capacity(matches.len());
    for (name, m) in matches {
        let name = if lowercase_names { name.to_ascii_lowercase() } else { name };
        match m {
            ValueMatch::Exact(v) => out.push((name, Some(v))),
            ValueMatch::Present(true) => out.push((name, None)),
            ValueMatch::Present(false) => {
                return Err(format!("matcher {name:?}: use a string value or true"));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl HostPrefixRouter {
    fn compile(config: RouterConfig) -> Result<Self, String> {
        let mut router = HostPrefixRouter::default();
        for (site_index, site) in config.sites.into_iter().enumerate() {
            for host in &site.hosts {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                if host == "*" {
                    if router.catch_all.replace(site_index).is_some() {
                        return Err(format!("site {:?}: more than one site has the catch-all host \"*\"", site.name));
                    }
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    router.wildcard_hosts.push((format!(".{suffix}"), site_index));
                } else if router.exact_hosts.insert(host.clone(), site_index).is_some() {
                    return Err(format!("host {host:?} belongs to more than one site"));
                }
            }
            let mut compiled = CompiledSite::default();
            for route in site.routes {
                if !route.path_prefix.starts_with('/') {
                    return Err(format!("route {:?}: path_prefix must start with '/'", route.name));
                }
                let entry = CompiledRoute {
                    methods: route.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                    headers: compile_matches(route.headers, true)?,
                    query: compile_matches(route.query, false)?,
                    prefix: route.path_prefix.clone(),
                    name: route.name,
                    upstream: route.upstream,
                    strip_prefix: route.strip_prefix,
                };
                let len = route.path_prefix.len();
                if compiled.has_length.len() <= len {
                    compiled.has_length.resize(len + 1, false);
                }
                compiled.has_length[len] = true;
                compiled.by_prefix.entry(route.path_prefix).or_default().push(entry);
            }
            for routes in compiled.by_prefix.values_mut() {
                // Stable sort: more matchers first, declaration order among equals.
                routes.sort_by_key(|r| std::cmp::Reverse(r.methods.len().min(1) + r.headers.len() + r.query.len()));
            }
            router.sites.push(compiled);
        }
        router.wildcard_hosts.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(router)
    }

    fn site_for(&self, host: &str) -> Option<&CompiledSite> {
        let index = self.exact_hosts.get(host).copied().or_else(|| {
            self.wildcard_hosts
                .iter()
                .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                .map(|(_, site)| *site)
        });
        index.or(self.catch_all).and_then(|i| self.sites.get(i))
    }

    /// The prefixes that can match `path`, longest first: the path itself, then the path cut
    /// after and before each `/`, so `/api` matches `/api`, `/api/x` but not `/apix`.
    fn candidate_prefixes(path: &str) -> impl Iterator<Item = &str> {
        let bytes = path.as_bytes();
        let whole = std::iter::once(path.len());
        let cuts = (0..bytes.len()).rev().filter(|&i| bytes[i] == b'/').flat_map(|i| [i + 1, i]);
        let mut last = usize::MAX;
        whole
            .chain(cuts)
            .filter(move |&cut| {
                // Skip repeats (the whole path ending in '/') and the empty prefix.
                let fresh = cut != last && cut > 0;
                last = cut;
                fresh
            })
            .map(move |cut| &path[..cut])
    }

    fn matches(route: &CompiledRoute, req: &dyn RequestHead, query: Option<&str>) -> bool {
        if !route.methods.is_empty() && !route.methods.iter().any(|m| *m == req.method()) {
            return false;
        }
        let headers_ok = route.headers.iter().all(|(name, want)| match (req.header(name), want) {
            (Some(v), Some(want)) => v == *want,
            (Some(_), None) => true,
            (None, _) => false,
        });
        headers_ok
            && route.query.iter().all(|(name, want)| {
                let mut values = query.into_iter().flat_map(|q| q.split('&')).filter_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == name).then_some(v)
                });
                match want {
                    Some(want) => values.any(|v| v == want),
                    None => values.next().is_some(),
                }
            })
    }
}

impl Router for HostPrefixRouter {
    fn configure(config: &str) -> Result<Self, String> {
        let config: RouterConfig = switchyard_sdk::parse_config(config)?;
        HostPrefixRouter::compile(config)
    }

    fn route(&self, req: &dyn RequestHead) -> Option<RouteDecision> {
        let site = self.site_for(&req.host())?;
        let path = req.path();
        let mut query: Option<Option<String>> = None;
        for prefix in Self::candidate_prefixes(&path) {
            let Some(routes) = site.routes_with_prefix(prefix) else {
                continue;
            };
            for route in routes {
                let q = if route.query.is_empty() { None } else { query.get_or_insert_with(|| req.query()).as_deref() };
                if !Self::matches(route, req, q) {
                    continue;
                }
                let rewrite = route.strip_prefix.then(|| {
                    let rest = path[route.prefix.len()..].trim_start_matches('/');
                    let query = query.clone().unwrap_or_else(|| req.query());
                    match query {
                        Some(q) => format!("/{rest}?{q}"),
                        None => format!("/{rest}"),
                    }
                });
                return Some(RouteDecision { name: route.name.clone(), upstream: route.upstream.clone(), rewrite });
            }
        }
        None
    }
}

export_plugin!(HostPrefixRouter: router);
// Routes depend only on the configuration and on what is read from the request.
switchyard_sdk::declare_deterministic!();

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::TestRequest;

    fn router(json: serde_json::Value) -> HostPrefixRouter {
        match HostPrefixRouter::configure(&json.to_string()) {
            Ok(r) => r,
            Err(e) => panic!("configure failed: {e}"),
        }
    }

    fn sample() -> HostPrefixRouter {
        router(serde_json::json!({"sites": [
            {"name": "api", "hosts": ["api.example.com"], "routes": [
                {"name": "users", "path_prefix": "/users", "upstream": "users", "strip_prefix": true},
                {"name": "users-post", "path_prefix": "/users", "methods": ["POST"], "upstream": "writers"},
                {"name": "beta", "path_prefix": "/", "headers": {"x-beta": "1"}, "upstream": "beta"},
                {"name": "root", "path_prefix": "/", "upstream": "api"},
            ]},
            {"name": "wild", "hosts": ["*.example.com"], "routes": [
                {"name": "wild", "path_prefix": "/", "upstream": "wild"},
            ]},
            {"name": "deep", "hosts": ["*.eu.example.com"], "routes": [
                {"name": "deep", "path_prefix": "/", "query": {"debug": true}, "upstream": "debug"},
                {"name": "deep-root", "upstream": "eu"},
            ]},
            {"name": "default", "hosts": ["*"], "routes": [
                {"name": "fallback", "upstream": "default"},
            ]},
        ]}))
    }

    fn upstream(r: &HostPrefixRouter, req: TestRequest) -> Option<String> {
        r.route(&req).map(|d| d.upstream)
    }

    #[test]
    fn exact_host_and_longest_prefix() {
        let r = sample();
        assert_eq!(upstream(&r, TestRequest::get("/users/7").with_host("api.example.com")).as_deref(), Some("users"));
        assert_eq!(upstream(&r, TestRequest::get("/users").with_host("api.example.com")).as_deref(), Some("users"));
        assert_eq!(upstream(&r, TestRequest::get("/usersx").with_host("api.example.com")).as_deref(), Some("api"));
        assert_eq!(upstream(&r, TestRequest::get("/").with_host("api.example.com")).as_deref(), Some("api"));
    }

    #[test]
    fn matchers_are_tried_before_plain_routes() {
        let r = sample();
        let post = TestRequest::new("POST", "/users/1").with_host("api.example.com");
        assert_eq!(upstream(&r, post).as_deref(), Some("writers"));
        let beta = TestRequest::get("/x").with_host("api.example.com").with_header("X-Beta", "1");
        assert_eq!(upstream(&r, beta).as_deref(), Some("beta"));
        let not_beta = TestRequest::get("/x").with_host("api.example.com").with_header("X-Beta", "2");
        assert_eq!(upstream(&r, not_beta).as_deref(), Some("api"));
    }

    #[test]
    fn wildcards_prefer_the_longest_suffix_and_fall_back_to_catch_all() {
        let r = sample();
        assert_eq!(upstream(&r, TestRequest::get("/").with_host("www.example.com")).as_deref(), Some("wild"));
        assert_eq!(upstream(&r, TestRequest::get("/").with_host("a.b.example.com")).as_deref(), Some("wild"));
        assert_eq!(upstream(&r, TestRequest::get("/").with_host("x.eu.example.com")).as_deref(), Some("eu"));
        assert_eq!(upstream(&r, TestRequest::get("/?debug").with_host("x.eu.example.com")).as_deref(), Some("debug"));
        assert_eq!(upstream(&r, TestRequest::get("/").with_host("example.com")).as_deref(), Some("default"));
        assert_eq!(upstream(&r, TestRequest::get("/")).as_deref(), Some("default"));
    }

    #[test]
    fn strip_prefix_keeps_the_query() {
        let r = sample();
        let d = r.route(&TestRequest::get("/users/7/posts?page=2").with_host("api.example.com"));
        assert_eq!(d.and_then(|d| d.rewrite).as_deref(), Some("/7/posts?page=2"));
        let d = r.route(&TestRequest::get("/users").with_host("api.example.com"));
        assert_eq!(d.and_then(|d| d.rewrite).as_deref(), Some("/"));
    }

    #[test]
    fn no_site_means_no_route() {
        let r = router(serde_json::json!({"sites": [
            {"name": "only", "hosts": ["only.example"], "routes": [{"name": "r", "path_prefix": "/a", "upstream": "u"}]}
        ]}));
        assert!(r.route(&TestRequest::get("/a").with_host("other.example")).is_none());
        assert!(r.route(&TestRequest::get("/b").with_host("only.example")).is_none());
    }

    #[test]
    fn bad_configs_are_rejected_with_a_reason() {
        let dup = serde_json::json!({"sites": [
            {"name": "a", "hosts": ["x.example"], "routes": []},
            {"name": "b", "hosts": ["x.example"], "routes": []},
        ]});
        let err = HostPrefixRouter::configure(&dup.to_string()).err();
        assert!(err.is_some_and(|e| e.contains("more than one site")));
        let err = HostPrefixRouter::configure("{\"sites\": 3}").err();
        assert!(err.is_some_and(|e| e.contains("invalid plugin config")));
    }
}
