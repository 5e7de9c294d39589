//! Checks of a parsed [`ConfigFile`] that need no plugin loaded: addresses, names, references
//! between sections, ranges. Every problem is collected.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::diagnostics::Collector;
use super::model::{ConfigFile, DEFAULT_BALANCER, DEFAULT_LISTEN, DEFAULT_SPLIT};
use crate::plugin::{MAX_PLUGIN_MEMORY_BYTES, Role, builtin_names};

/// A setting's value if it is in `min..=max`; otherwise the problem is reported and `default`
/// stands in (so later checks still run).
pub fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    value: &Option<toml::Spanned<T>>,
    name: &str,
    (min, max): (T, T),
    default: T,
    c: &mut Collector<'_>,
) -> T {
    match value {
        None => default,
        Some(v) if (min..=max).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            c.error(v.span(), format!("{name} must be between {min} and {max}"));
            default
        }
    }
}

/// Whether `s` is an HTTP token (a method or header name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_host_pattern(host: &str) -> bool {
    if host == "*" {
        return true;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Resolves `ip:port` or `name:port` to socket addresses.
pub fn resolve_address(address: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    use std::net::ToSocketAddrs;
    match address.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if addrs.is_empty() { Err(format!("`{address}` resolves to no address")) } else { Ok(addrs) }
        }
        Err(e) => Err(format!("`{address}` is not a valid host:port ({e})")),
    }
}

/// Records every problem of `config` in `c`.
pub fn validate(config: &ConfigFile, c: &mut Collector<'_>) {
    validate_server(config, c);
    crate::proxy::limits::ClientLimits::from_config(&config.server.limits, c);
    let plugin_names = validate_plugins(config, c);
    let builtins: HashSet<&str> = builtin_names().collect();
    let unreadable = &config.unreadable_names;
    let known_plugin = |name: &str| plugin_names.contains(name) || builtins.contains(name) || unreadable.contains(name);

    for chain in [&config.server.request_filters, &config.server.response_filters] {
        for f in chain {
            if !known_plugin(f.get_ref()) {
                c.error(f.span(), format!("unknown plugin `{}` in filter chain", f.get_ref()));
            }
        }
    }

    let admin_listen = config.admin.listen.as_ref().and_then(|a| a.get_ref().parse::<SocketAddr>().ok());
    let mut upstreams: HashMap<&str, std::ops::Range<usize>> = HashMap::new();
    for u in &config.upstreams {
        let u = u.get_ref();
        let name = u.name.get_ref();
        if name.is_empty() {
            c.error(u.name.span(), "upstream name must not be empty");
        } else if let Some(first) = upstreams.insert(name, u.name.span()) {
            let line = c.source.at(first, "").line;
            c.error(u.name.span(), format!("upstream `{name}` is already defined on line {line}"));
        }
        if u.backends.get_ref().is_empty() {
            c.error(u.backends.span(), format!("upstream `{name}` has no backends"));
        }
        let mut addresses = HashSet::new();
        for b in u.backends.get_ref() {
            let b = b.get_ref();
            match resolve_address(b.address.get_ref()) {
                Err(e) => c.error(b.address.span(), format!("backend address: {e}")),
                Ok(resolved) => {
                    if let Some(admin) = admin_listen
                        && resolved.iter().any(|a| is_same_listener(*a, admin))
                    {
                        c.error(
                            b.address.span(),
                            format!(
                                "{} is the admin listener: the admin API is never reachable through the proxy",
                                b.address.get_ref()
                            ),
                        );
                    }
                }
            }
            if !addresses.insert(b.address.get_ref().as_str()) {
                c.error(b.address.span(), format!("upstream `{name}` lists {} twice", b.address.get_ref()));
            }
            if let Some(w) = &b.weight
                && *w.get_ref() == 0
            {
                c.error(w.span(), "backend weight must be at least 1");
            }
        }
        crate::upstream::UpstreamPolicy::from_config(u, c);
        if let Some(balancer) = &u.balancer {
            let plugin = balancer.get_ref().plugin_name(DEFAULT_BALANCER);
            if !known_plugin(plugin) {
                c.error(balancer.span(), format!("unknown balancer `{plugin}` (a built-in or a [[plugin]] name)"));
            }
        }
    }

    let mut hosts: HashMap<String, std::ops::Range<usize>> = HashMap::new();
    let mut route_names: HashSet<String> = HashSet::new();
    for site in &config.sites {
        let site = site.get_ref();
        if site.hosts.get_ref().is_empty() {
            c.error(site.hosts.span(), "a site needs at least one host (use \"*\" for any host)");
        }
        for host in site.hosts.get_ref() {
            let h = host.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if !is_host_pattern(&h) {
                c.error(host.span(), format!("invalid host `{}` (exact name, *.domain or *)", host.get_ref()));
            } else if let Some(first) = hosts.insert(h.clone(), host.span()) {
                let line = c.source.at(first, "").line;
                c.error(host.span(), format!("host `{h}` is already used on line {line}"));
            }
        }
        for chain in [&site.request_filters, &site.response_filters] {
            for f in chain {
                if !known_plugin(f.get_ref()) {
                    c.error(f.span(), format!("unknown plugin `{}` in filter chain", f.get_ref()));
                }
            }
        }
        for route in &site.routes {
            let r = route.get_ref();
            crate::proxy::limits::body_limit(&r.max_body_bytes, c);
            if let Some(name) = &r.name
                && !route_names.insert(name.get_ref().clone())
            {
                c.error(name.span(), format!("route name `{}` is used twice", name.get_ref()));
            }
            if let Some(prefix) = &r.path_prefix
                && !prefix.get_ref().starts_with('/')
            {
                c.error(prefix.span(), "path_prefix must start with '/'");
            }
            for m in &r.methods {
                if !is_token(m.get_ref()) {
                    c.error(m.span(), format!("invalid method `{}`", m.get_ref()));
                }
            }
            for name in r.headers.keys() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    c.error(route.span(), format!("invalid header name `{name}` in headers matcher"));
                }
            }
            if !upstreams.contains_key(r.upstream.get_ref().as_str()) && !unreadable.contains(r.upstream.get_ref()) {
                c.error(r.upstream.span(), format!("unknown upstream `{}`", r.upstream.get_ref()));
            }
            if let Some(split) = &r.split {
                let plugin = split.get_ref().plugin_name(DEFAULT_SPLIT);
                if !known_plugin(plugin) {
                    c.error(split.span(), format!("unknown split plugin `{plugin}`"));
                }
            }
            for chain in [&r.request_filters, &r.response_filters] {
                for f in chain {
                    if !known_plugin(f.get_ref()) {
                        c.error(f.span(), format!("unknown plugin `{}` in filter chain", f.get_ref()));
                    }
                }
            }
        }
    }
}

fn validate_server(config: &ConfigFile, c: &mut Collector<'_>) {
    for listen in &config.server.listen {
        if listen.get_ref().parse::<SocketAddr>().is_err() {
            c.error(
                listen.span(),
                format!("listen address `{}` is not ip:port (e.g. {DEFAULT_LISTEN})", listen.get_ref()),
            );
        }
    }
    let listeners = crate::generation::lenient_listener_candidates(config);
    for lenient in &config.server.lenient_listeners {
        match lenient.get_ref().parse::<SocketAddr>() {
            Ok(addr) if listeners.contains(&addr) => {}
            Ok(_) => c.error(
                lenient.span(),
                format!("lenient_listeners names `{}`, which is not in listen or tls_listen", lenient.get_ref()),
            ),
            Err(_) => c.error(lenient.span(), format!("lenient listener `{}` is not ip:port", lenient.get_ref())),
        }
    }
    if let Some(threads) = &config.server.threads
        && (*threads.get_ref() == 0 || *threads.get_ref() > 1024)
    {
        c.error(threads.span(), "threads must be between 1 and 1024");
    }
    if let Some(grace) = &config.server.grace_period_s
        && *grace.get_ref() > 3600
    {
        c.error(grace.span(), "grace_period_s must be at most 3600");
    }
    for path in [&config.server.pid_file, &config.server.upgrade_socket].into_iter().flatten() {
        if path.get_ref().is_empty() {
            c.error(path.span(), "the path must not be empty");
        }
    }
    if let Some(admin) = &config.admin.listen {
        match admin.get_ref().parse::<SocketAddr>() {
            Err(_) => c.error(admin.span(), format!("admin listen address `{}` is not ip:port", admin.get_ref())),
            Ok(addr) if config.server.listen.iter().any(|l| l.get_ref().parse::<SocketAddr>() == Ok(addr)) => {
                c.error(admin.span(), format!("the admin API cannot share the proxy listener {addr}"))
            }
            Ok(_) => {}
        }
    }
    validate_tcp_routes(config, c);
    validate_log(config, c);
}

/// Checks `[log]`: a known format, a filter `tracing` accepts, a non-empty file name.
fn validate_log(config: &ConfigFile, c: &mut Collector<'_>) {
    let log = &config.log;
    if let Some(format) = &log.format
        && !["text", "json"].contains(&format.get_ref().as_str())
    {
        c.error(format.span(), format!("log format `{}` is not text or json", format.get_ref()));
    }
    if let Some(level) = &log.level
        && let Err(e) = tracing_subscriber::EnvFilter::try_new(level.get_ref())
    {
        c.error(level.span(), format!("log level `{}`: {e}", level.get_ref()));
    }
    if let Some(file) = &log.file
        && file.get_ref().is_empty()
    {
        c.error(file.span(), "the log file name must not be empty");
    }
}

/// Whether a connection to `backend` would reach the listener bound to `listener` (the same
/// port, and the same address or a wildcard bind, or loopback on both sides).
fn is_same_listener(backend: SocketAddr, listener: SocketAddr) -> bool {
    backend.port() == listener.port()
        && (backend.ip() == listener.ip()
            || listener.ip().is_unspecified()
            || (backend.ip().is_loopback() && listener.ip().is_loopback()))
}

/// Checks the `[[tcp]]` tables: addresses no other listener uses, names used once, known
/// upstreams.
fn validate_tcp_routes(config: &ConfigFile, c: &mut Collector<'_>) {
    let mut taken: HashSet<SocketAddr> = config.server.listen.iter().filter_map(|l| l.get_ref().parse().ok()).collect();
    taken.extend(config.admin.listen.as_ref().and_then(|a| a.get_ref().parse::<SocketAddr>().ok()));
    let mut names = HashSet::new();
    let upstreams: HashSet<&str> = config.upstreams.iter().map(|u| u.get_ref().name.get_ref().as_str()).collect();
    for t in &config.tcp_routes {
        let t = t.get_ref();
        match t.listen.get_ref().parse::<SocketAddr>() {
            Err(_) => c.error(t.listen.span(), format!("tcp listen address `{}` is not ip:port", t.listen.get_ref())),
            Ok(addr) if !taken.insert(addr) => {
                c.error(t.listen.span(), format!("{addr} is already a listener of this configuration"))
            }
            Ok(_) => {}
        }
        if let Some(name) = &t.name
            && !names.insert(name.get_ref().clone())
        {
            c.error(name.span(), format!("tcp route name `{}` is used twice", name.get_ref()));
        }
        let upstream = t.upstream.get_ref();
        if !upstreams.contains(upstream.as_str()) && !config.unreadable_names.contains(upstream) {
            c.error(t.upstream.span(), format!("unknown upstream `{upstream}`"));
        }
    }
}

/// Checks the `[[plugin]]` tables and returns their names.
fn validate_plugins(config: &ConfigFile, c: &mut Collector<'_>) -> HashSet<String> {
    let builtins: HashSet<&str> = builtin_names().collect();
    let mut names = HashSet::new();
    for p in &config.plugins {
        let span = p.span();
        let p = p.get_ref();
        let name = p.name.get_ref();
        if name.is_empty() {
            c.error(p.name.span(), "plugin name must not be empty");
        } else if !names.insert(name.clone()) {
            c.error(p.name.span(), format!("plugin `{name}` is defined twice"));
        }
        match (&p.path, &p.builtin) {
            (Some(_), Some(b)) => c.error(b.span(), "set either `path` or `builtin`, not both"),
            (None, None) => c.error(span, format!("plugin `{name}` needs `path` (a component file) or `builtin`")),
            (None, Some(b)) if !builtins.contains(b.get_ref().as_str()) => {
                let known: Vec<_> = builtin_names().collect();
                c.error(b.span(), format!("unknown built-in `{}` (built-ins: {})", b.get_ref(), known.join(", ")));
            }
            _ => {}
        }
        if let Some(sha) = &p.sha256 {
            let s = sha.get_ref();
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                c.error(sha.span(), "sha256 must be 64 hexadecimal digits");
            }
        }
        for role in p.roles.iter().flatten() {
            if Role::from_config_name(role.get_ref()).is_none() {
                c.error(
                    role.span(),
                    format!(
                        "unknown role `{}` (router, request_filter, response_filter, split, balancer)",
                        role.get_ref()
                    ),
                );
            }
        }
        if let Some(t) = &p.timeout_ms
            && (*t.get_ref() == 0 || *t.get_ref() > 60_000)
        {
            c.error(t.span(), "timeout_ms must be between 1 and 60000");
        }
        if let Some(m) = &p.memory_limit_mb {
            let max = (MAX_PLUGIN_MEMORY_BYTES >> 20) as u64;
            if *m.get_ref() == 0 || *m.get_ref() > max {
                c.error(m.span(), format!("memory_limit_mb must be between 1 and {max}"));
            }
        }
    }
    names
}
