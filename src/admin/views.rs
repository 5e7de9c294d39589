//! What the admin API's GET endpoints show, read from the serving generation: the configuration
//! as written (secrets redacted), sites, backends with their live figures, plugins with their
//! counters.

use std::sync::{Arc, OnceLock};

use serde_json::{Value as Json, json};

use super::edit::{BackendId, normalize_host};
use crate::generation::Generation;
use crate::upstream::{Upstream, now_ms};

/// `GET /api/v1` lists these.
pub const ENDPOINTS: &[&str] = &[
    "GET /api/v1/health",
    "GET /api/v1/config",
    "POST /api/v1/reload",
    "POST /api/v1/upgrade",
    "GET|POST /api/v1/domains",
    "GET|PUT|DELETE /api/v1/domains/{host}",
    "POST /api/v1/domains/{host}/switch",
    "GET /api/v1/domains/{host}/backends",
    "GET|POST /api/v1/backends",
    "GET|PUT|DELETE /api/v1/backends/{id}",
    "POST /api/v1/backends/{id}/drain",
    "POST /api/v1/backends/{id}/health",
    "GET /api/v1/plugins",
    "GET /api/v1/stats",
    "GET /api/v1/logs/stream",
    "GET /api/v1/certs",
    "GET /api/v1/certs/{host}",
    "POST /api/v1/certs/{host}/renew",
    "GET /api/v1/openapi.json",
    "GET /metrics",
];

/// What replaces a secret's value.
const REDACTED: &str = "<redacted>";

/// Whether a key holds a secret: signing keys, tokens, passwords.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "token", "password", "passwd", "private_key", "api_key", "credential"].iter().any(|s| key.contains(s))
}

/// `value` with every secret's value replaced.
pub fn redact(value: &mut Json) {
    match value {
        Json::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret_key(key) && !value.is_object() && !value.is_array() {
                    *value = Json::String(REDACTED.into());
                } else {
                    redact(value);
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The serving configuration as JSON, redacted.
fn config_json(generation: &Generation) -> Json {
    let mut value: Json = toml::from_str(&generation.source_text).unwrap_or(Json::Null);
    redact(&mut value);
    value
}

/// `GET /api/v1/config`.
pub fn config(generation: &Generation) -> Json {
    json!({ "etag": super::reload::etag(&generation.source_text), "config": config_json(generation) })
}

fn site_name(site: &Json) -> String {
    site["name"].as_str().or_else(|| site["hosts"].get(0).and_then(Json::as_str)).unwrap_or("site").to_string()
}

fn site_view(site: &Json) -> Json {
    let name = site_name(site);
    let routes: Vec<Json> = site["route"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    json!({
                        "name": r["name"].as_str().map_or_else(|| format!("{name}/{i}"), str::to_string),
                        "path_prefix": r["path_prefix"].as_str().unwrap_or("/"),
                        "upstream": r["upstream"],
                        "split": r.get("split").cloned().unwrap_or(Json::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({ "name": name, "hosts": site["hosts"], "routes": routes, "config": site })
}

fn sites(generation: &Generation) -> Vec<Json> {
    config_json(generation)["site"].as_array().cloned().unwrap_or_default()
}

/// `GET /api/v1/domains`.
pub fn domains(generation: &Generation) -> Vec<Json> {
    sites(generation).iter().map(site_view).collect()
}

fn find_site(generation: &Generation, host: &str) -> Option<Json> {
    let host = normalize_host(host);
    sites(generation).into_iter().find(|s| {
        s["hosts"]
            .as_array()
            .is_some_and(|hosts| hosts.iter().any(|h| h.as_str().map(normalize_host) == Some(host.clone())))
    })
}

/// `GET /api/v1/domains/{host}`.
pub fn domain(generation: &Generation, host: &str) -> Option<Json> {
    find_site(generation, host).map(|s| site_view(&s))
}

/// `GET /api/v1/domains/{host}/backends`: the backends of every upstream the site's routes and
/// their splits send to.
pub fn domain_backends(generation: &Generation, host: &str) -> Option<Json> {
    let site = find_site(generation, host)?;
    let mut names: Vec<String> = Vec::new();
    for route in site["route"].as_array().into_iter().flatten() {
        names.extend(route["upstream"].as_str().map(str::to_string));
        for variant in route["split"]["variants"].as_array().into_iter().flatten() {
            names.extend(variant["upstream"].as_str().map(str::to_string));
        }
    }
    names.sort();
    names.dedup();
    let upstreams: Vec<Json> = names
        .iter()
        .filter_map(|n| generation.upstreams.get(n))
        .map(|u| json!({ "upstream": u.name, "backends": upstream_backends(u) }))
        .collect();
    Some(json!({ "site": site_name(&site), "upstreams": upstreams }))
}

fn backend_view(upstream: &Upstream, i: usize) -> Json {
    let b = &upstream.backends[i];
    let now = now_ms();
    let figures = b.candidate();
    json!({
        "id": BackendId { upstream: upstream.name.clone(), address: b.label.clone() }.to_string(),
        "upstream": upstream.name,
        "address": b.label,
        "resolved": b.address.to_string(),
        "weight": b.weight,
        "tags": &*b.tags,
        "drain": upstream.draining[i],
        "available": upstream.available(i, now),
        "health_check": if upstream.policy.health_check.is_some() { json!(if b.healthy() { "passing" } else { "failing" }) } else { Json::Null },
        "ejected": b.ejected(now),
        "in_flight": figures.in_flight,
        "latency_ms": f64::from(figures.latency_us) / 1000.0,
        "failures_in_a_row": figures.failures,
    })
}

fn upstream_backends(upstream: &Upstream) -> Vec<Json> {
    (0..upstream.backends.len()).map(|i| backend_view(upstream, i)).collect()
}

/// `GET /api/v1/backends`: every upstream's backends, by upstream name.
pub fn backends(generation: &Generation) -> Vec<Json> {
    let mut upstreams: Vec<_> = generation.upstreams.values().collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    upstreams.into_iter().flat_map(|u| upstream_backends(u)).collect()
}

/// The upstream and index of the backend `id` names.
pub fn find_backend(generation: &Generation, id: &str) -> Option<(Arc<Upstream>, usize)> {
    let id = BackendId::parse(id).ok()?;
    let upstream = generation.upstreams.get(&id.upstream)?;
    let i = upstream.backends.iter().position(|b| b.label == id.address)?;
    Some((upstream.clone(), i))
}

/// `GET /api/v1/backends/{id}`.
pub fn backend(generation: &Generation, id: &str) -> Option<Json> {
    find_backend(generation, id).map(|(u, i)| backend_view(&u, i))
}

/// Built-in plugins' sha256 → the built-in's name, for the plugin list's `version`.
fn builtin_digests() -> &'static std::collections::HashMap<String, &'static str> {
    static DIGESTS: OnceLock<std::collections::HashMap<String, &'static str>> = OnceLock::new();
    DIGESTS.get_or_init(|| {
        crate::plugin::builtin_names()
            .filter_map(crate::plugin::builtin_plugin)
            .map(|b| (crate::plugin::sha256_hex(b.bytes), b.name))
            .collect()
    })
}

/// `GET /api/v1/plugins`: every loaded plugin with its roles, digest and counters.
pub fn plugins(generation: &Generation) -> Json {
    let digests = builtin_digests();
    let list: Vec<Json> = generation
        .plugins
        .iter()
        .map(|p| {
            let stats = p.shared().stats.snapshot();
            let by_role: serde_json::Map<String, Json> = p
                .roles()
                .iter()
                .map(|&role| {
                    let s = p.shared().stats.role_snapshot(role);
                    (
                        role.config_name().to_string(),
                        json!({ "calls": s.calls, "reused": s.reused, "traps": s.traps, "timeouts": s.timeouts, "memory_breaches": s.memory_breaches, "call_seconds": s.nanos as f64 / 1e9 }),
                    )
                })
                .collect();
            let version = digests
                .get(p.sha256())
                .map(|name| format!("built-in {name} {}", env!("CARGO_PKG_VERSION")));
            json!({
                "name": p.name(),
                "roles": p.roles().iter().map(|r| r.config_name()).collect::<Vec<_>>(),
                "sha256": p.sha256(),
                "version": version,
                "compiled_from": format!("{:?}", p.compiled_from()).to_lowercase(),
                "failure": p.failure_policy(),
                "calls": stats.calls,
                "reused": stats.reused,
                "traps": stats.traps,
                "timeouts": stats.timeouts,
                "memory_breaches": stats.memory_breaches,
                "call_seconds": stats.nanos as f64 / 1e9,
                "instances_created": stats.instances_created,
                "by_role": by_role,
            })
        })
        .collect();
    json!({ "plugins": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut value = json!({
            "admin": {"token_file": "/etc/t", "listen": "127.0.0.1:1"},
            "site": [{"route": [{"split": {"cookie_secret": "s3", "variants": [{"tag": "a"}]}}]}],
            "plugin": [{"config": {"api_key": "k", "password": 1}}],
        });
        redact(&mut value);
        assert_eq!(value["admin"]["token_file"], REDACTED);
        assert_eq!(value["admin"]["listen"], "127.0.0.1:1");
        assert_eq!(value["site"][0]["route"][0]["split"]["cookie_secret"], REDACTED);
        assert_eq!(value["site"][0]["route"][0]["split"]["variants"][0]["tag"], "a");
        assert_eq!(value["plugin"][0]["config"]["api_key"], REDACTED);
        assert_eq!(value["plugin"][0]["config"]["password"], REDACTED);
    }
}
