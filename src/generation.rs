//! The immutable running state — routes, upstreams, loaded plugins and their chains — and how
//! it is built from a validated configuration.
//!
//! A request takes the current [`Generation`] once, at its start, and keeps it to its end. The
//! proxy holds the current one behind an `ArcSwap`; building a new one happens off the request
//! path and either completes or reports every problem.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use toml::Spanned;

use crate::config::model::{DEFAULT_LISTEN, DEFAULT_PLUGIN_MEMORY_MB, DEFAULT_PLUGIN_TIMEOUT_MS, PluginSection};
use crate::config::{Collector, ConfigFile, Diagnostics, SourceFile, resolve_address};
use crate::plugin::{
    BalancerRole, LoadedPlugin, PluginEngine, PluginSettings, RequestFilterRole, ResponseFilterRole, Role, RouterRole,
    SplitRole, WasmPlugin, builtin_plugin, sha256_hex,
};
use crate::upstream::{Backend, Upstream};

/// The built-in plugin that routes when no `[[plugin]]` takes the router role.
pub const DEFAULT_ROUTER: &str = "router";
/// The built-in balancer of an upstream without `balancer`.
pub const DEFAULT_BALANCER: &str = "round-robin";

/// A plugin in a chain, with its name for errors and logs.
pub struct Link<R: ?Sized> {
    pub name: Arc<str>,
    pub role: Arc<R>,
}

impl<R: ?Sized> Clone for Link<R> {
    fn clone(&self) -> Self {
        Link { name: self.name.clone(), role: self.role.clone() }
    }
}

/// The filters and split a route adds to the global chains.
#[derive(Default)]
pub struct RouteSettings {
    /// Site then route request filters, run after routing.
    pub request_filters: Vec<Link<dyn RequestFilterRole>>,
    /// Route, site, then global response filters.
    pub response_filters: Vec<Link<dyn ResponseFilterRole>>,
    pub split: Option<Link<dyn SplitRole>>,
}

/// Everything a request needs, frozen.
pub struct Generation {
    pub router: Link<dyn RouterRole>,
    /// Global request filters, run before routing.
    pub request_filters: Vec<Link<dyn RequestFilterRole>>,
    /// Global response filters, for requests whose route is unknown to the configuration.
    pub response_filters: Vec<Link<dyn ResponseFilterRole>>,
    pub routes: HashMap<String, RouteSettings>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub plugins: Vec<Arc<LoadedPlugin>>,
    pub listen: Vec<SocketAddr>,
    pub threads: Option<usize>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("routes", &self.routes.len())
            .field("upstreams", &self.upstreams)
            .field("plugins", &self.plugins)
            .finish_non_exhaustive()
    }
}

struct PluginEntry {
    plugin: Arc<LoadedPlugin>,
    /// Roles the configuration allows (a subset of the exports).
    enabled: Vec<Role>,
}

/// Loads plugins on demand (built-ins on first reference) and hands out their roles.
struct PluginCatalog<'a> {
    engine: &'a Arc<PluginEngine>,
    declared: HashMap<String, &'a Spanned<PluginSection>>,
    loaded: HashMap<String, Option<PluginEntry>>,
    base_dir: std::path::PathBuf,
}

fn default_settings(name: &str, config_json: String) -> PluginSettings {
    PluginSettings {
        name: name.to_string(),
        config_json,
        failure: Default::default(),
        timeout: Duration::from_millis(DEFAULT_PLUGIN_TIMEOUT_MS),
        memory_limit_bytes: (DEFAULT_PLUGIN_MEMORY_MB as usize) << 20,
        pool_size: pool_size(),
    }
}

fn pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

impl<'a> PluginCatalog<'a> {
    fn load_declared(&self, section: &PluginSection, c: &mut Collector<'_>) -> Option<PluginEntry> {
        let name = section.name.get_ref();
        let (bytes, origin_span): (std::borrow::Cow<'static, [u8]>, Range<usize>) =
            match (&section.path, &section.builtin) {
                (Some(path), _) => {
                    let full = self.base_dir.join(path.get_ref());
                    match std::fs::read(&full) {
                        Ok(b) => (b.into(), path.span()),
                        Err(e) => {
                            c.error(path.span(), format!("plugin `{name}`: cannot read {}: {e}", full.display()));
                            return None;
                        }
                    }
                }
                (None, Some(b)) => (builtin_plugin(b.get_ref())?.into(), b.span()),
                (None, None) => return None,
            };
        if let Some(pin) = &section.sha256 {
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(pin.get_ref()) {
                c.error(pin.span(), format!("plugin `{name}`: sha256 mismatch: the file has {actual}"));
                return None;
            }
        }
        let config_json = section.config.clone().unwrap_or_else(|| json!({})).to_string();
        let settings = PluginSettings {
            failure: section.failure,
            timeout: Duration::from_millis(
                section.timeout_ms.as_ref().map_or(DEFAULT_PLUGIN_TIMEOUT_MS, |t| *t.get_ref()),
            ),
            memory_limit_bytes: (section.memory_limit_mb.as_ref().map_or(DEFAULT_PLUGIN_MEMORY_MB, |m| *m.get_ref())
                as usize)
                << 20,
            ..default_settings(name, config_json)
        };
        let plugin = match LoadedPlugin::load(self.engine, &bytes, settings) {
            Ok(p) => p,
            Err(e) => {
                c.error(origin_span, format!("plugin `{name}`: {e:#}"));
                return None;
            }
        };
        let enabled = match &section.roles {
            None => plugin.roles().to_vec(),
            Some(roles) => {
                let mut enabled = Vec::new();
                for r in roles {
                    let Some(role) = Role::from_config_name(r.get_ref()) else {
                        continue;
                    };
                    if plugin.roles().contains(&role) {
                        enabled.push(role);
                    } else {
                        let exported: Vec<_> = plugin.roles().iter().map(|r| r.config_name()).collect();
                        c.error(
                            r.span(),
                            format!(
                                "plugin `{name}` does not export the {role} role (it exports: {})",
                                exported.join(", ")
                            ),
                        );
                    }
                }
                enabled
            }
        };
        Some(PluginEntry { plugin, enabled })
    }

    /// The plugin `name` (declared or built-in), loading it on first use; `None` after an error
    /// (already reported).
    fn get(&mut self, name: &str, span: Range<usize>, c: &mut Collector<'_>) -> Option<&PluginEntry> {
        if !self.loaded.contains_key(name) {
            let entry = if let Some(section) = self.declared.get(name) {
                self.load_declared(section.get_ref(), c)
            } else if let Some(bytes) = builtin_plugin(name) {
                match LoadedPlugin::load(self.engine, bytes, default_settings(name, "{}".to_string())) {
                    Ok(plugin) => Some(PluginEntry { enabled: plugin.roles().to_vec(), plugin }),
                    Err(e) => {
                        c.error(span, format!("built-in plugin `{name}`: {e:#}"));
                        None
                    }
                }
            } else {
                c.error(span, format!("unknown plugin `{name}`"));
                None
            };
            self.loaded.insert(name.to_string(), entry);
        }
        self.loaded.get(name).and_then(Option::as_ref)
    }

    /// The plugin `name` in `role`, or an error at `span` if it lacks the role.
    fn role(
        &mut self,
        name: &str,
        role: Role,
        span: Range<usize>,
        c: &mut Collector<'_>,
    ) -> Option<(Arc<str>, WasmPlugin)> {
        let entry = self.get(name, span.clone(), c)?;
        if !entry.enabled.contains(&role) {
            let has: Vec<_> = entry.enabled.iter().map(|r| r.config_name()).collect();
            let message = format!("plugin `{name}` cannot be used as a {role} (its roles: {})", has.join(", "));
            c.error(span, message);
            return None;
        }
        Some((Arc::from(name), WasmPlugin(entry.plugin.clone())))
    }
}

macro_rules! link_as {
    ($catalog:expr, $name:expr, $role:expr, $span:expr, $c:expr, $trait:path) => {
        $catalog.role($name, $role, $span, $c).map(|(name, plugin)| {
            let role: Arc<dyn $trait> = Arc::new(plugin);
            Link { name, role }
        })
    };
}

fn request_chain(
    catalog: &mut PluginCatalog<'_>,
    names: &[Spanned<String>],
    c: &mut Collector<'_>,
) -> Vec<Link<dyn RequestFilterRole>> {
    names
        .iter()
        .filter_map(|n| link_as!(catalog, n.get_ref(), Role::RequestFilter, n.span(), c, RequestFilterRole))
        .collect()
}

fn response_chain(
    catalog: &mut PluginCatalog<'_>,
    names: &[Spanned<String>],
    c: &mut Collector<'_>,
) -> Vec<Link<dyn ResponseFilterRole>> {
    names
        .iter()
        .filter_map(|n| link_as!(catalog, n.get_ref(), Role::ResponseFilter, n.span(), c, ResponseFilterRole))
        .collect()
}

/// The name of a site in route names and logs.
fn site_name(site: &crate::config::model::SiteSection) -> String {
    site.name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .or_else(|| site.hosts.get_ref().first().map(|h| h.get_ref().clone()))
        .unwrap_or_else(|| "site".to_string())
}

/// The built-in router's configuration, generated from the `[[site]]` tables.
fn router_config(config: &ConfigFile) -> serde_json::Value {
    let sites: Vec<_> = config
        .sites
        .iter()
        .map(|site| {
            let site = site.get_ref();
            let name = site_name(site);
            let routes: Vec<_> = site
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let r = r.get_ref();
                    json!({
                        "name": route_name(&name, i, r),
                        "path_prefix": r.path_prefix.as_ref().map_or("/", |p| p.get_ref().as_str()),
                        "methods": r.methods.iter().map(|m| m.get_ref().to_ascii_uppercase()).collect::<Vec<_>>(),
                        "headers": r.headers.iter().map(|(k, v)| (k.clone(), v.get_ref().clone())).collect::<HashMap<_, _>>(),
                        "query": r.query.iter().map(|(k, v)| (k.clone(), v.get_ref().clone())).collect::<HashMap<_, _>>(),
                        "upstream": r.upstream.get_ref(),
                        "strip_prefix": r.strip_prefix,
                    })
                })
                .collect();
            json!({"name": name, "hosts": site.hosts.get_ref().iter().map(|h| h.get_ref()).collect::<Vec<_>>(), "routes": routes})
        })
        .collect();
    json!({ "sites": sites })
}

fn route_name(site: &str, index: usize, route: &crate::config::model::RouteSection) -> String {
    route.name.as_ref().map_or_else(|| format!("{site}/{index}"), |n| n.get_ref().clone())
}

/// Builds a generation from a validated configuration: loads and configures every plugin it
/// references and wires the chains. Returns every problem found, with its place in the file.
pub fn build(source: &SourceFile, config: &ConfigFile, engine: &Arc<PluginEngine>) -> Result<Generation, Diagnostics> {
    let mut c = Collector::new(source);
    let mut catalog = PluginCatalog {
        engine,
        declared: config.plugins.iter().map(|p| (p.get_ref().name.get_ref().clone(), p)).collect(),
        loaded: HashMap::new(),
        base_dir: source.base_dir().to_path_buf(),
    };

    // Load every declared plugin, used or not, so a broken one is reported.
    for p in &config.plugins {
        catalog.get(p.get_ref().name.get_ref(), p.span(), &mut c);
    }

    // The router: a declared plugin with the router role enabled, else the built-in.
    let custom_routers: Vec<&Spanned<PluginSection>> = config
        .plugins
        .iter()
        .filter(|p| {
            catalog
                .loaded
                .get(p.get_ref().name.get_ref())
                .and_then(Option::as_ref)
                .is_some_and(|e| e.enabled.contains(&Role::Router))
        })
        .collect();
    let router = match custom_routers.as_slice() {
        [] => {
            let settings = default_settings(DEFAULT_ROUTER, router_config(config).to_string());
            match builtin_plugin(DEFAULT_ROUTER).map(|bytes| LoadedPlugin::load(engine, bytes, settings)) {
                Some(Ok(plugin)) => {
                    let role: Arc<dyn RouterRole> = Arc::new(WasmPlugin(plugin.clone()));
                    catalog.loaded.insert(
                        format!("{DEFAULT_ROUTER} (sites)"),
                        Some(PluginEntry { enabled: vec![Role::Router], plugin }),
                    );
                    Some(Link { name: Arc::from(DEFAULT_ROUTER), role })
                }
                Some(Err(e)) => {
                    c.found.push(source.whole(format!("the built-in router rejected the [[site]] tables: {e:#}")));
                    None
                }
                None => {
                    c.found.push(source.whole("the built-in router is missing from this build"));
                    None
                }
            }
        }
        [one] => link_as!(catalog, one.get_ref().name.get_ref(), Role::Router, one.span(), &mut c, RouterRole),
        [_, second, ..] => {
            c.error(second.span(), "only one plugin may take the router role");
            None
        }
    };

    let global_request = request_chain(&mut catalog, &config.server.request_filters, &mut c);
    let global_response = response_chain(&mut catalog, &config.server.response_filters, &mut c);

    let mut upstreams = HashMap::new();
    for u in &config.upstreams {
        let u = u.get_ref();
        let (balancer_name, span) = match &u.balancer {
            Some(b) => (b.get_ref().as_str(), b.span()),
            None => (DEFAULT_BALANCER, u.name.span()),
        };
        let Some((_, plugin)) = catalog.role(balancer_name, Role::Balancer, span, &mut c) else {
            continue;
        };
        let mut backends = Vec::new();
        for b in u.backends.get_ref() {
            let b = b.get_ref();
            // Validation already reported unresolvable addresses.
            let Some(address) = resolve_address(b.address.get_ref()).ok().and_then(|a| a.first().copied()) else {
                continue;
            };
            let weight = b.weight.as_ref().map_or(1, |w| *w.get_ref());
            backends.push(Arc::new(Backend::new(b.address.get_ref().clone(), address, weight, b.tags.clone())));
        }
        let balancer: Arc<dyn BalancerRole> = Arc::new(plugin);
        upstreams.insert(
            u.name.get_ref().clone(),
            Arc::new(Upstream { name: u.name.get_ref().clone(), backends, balancer }),
        );
    }

    let mut routes = HashMap::new();
    for site in &config.sites {
        let site = site.get_ref();
        let name = site_name(site);
        let site_request = request_chain(&mut catalog, &site.request_filters, &mut c);
        let site_response = response_chain(&mut catalog, &site.response_filters, &mut c);
        for (i, r) in site.routes.iter().enumerate() {
            let r = r.get_ref();
            let mut request_filters = site_request.clone();
            request_filters.extend(request_chain(&mut catalog, &r.request_filters, &mut c));
            let mut response_filters = response_chain(&mut catalog, &r.response_filters, &mut c);
            response_filters.extend(site_response.iter().cloned());
            response_filters.extend(global_response.iter().cloned());
            let split =
                r.split.as_ref().and_then(|s| link_as!(catalog, s.get_ref(), Role::Split, s.span(), &mut c, SplitRole));
            routes.insert(route_name(&name, i, r), RouteSettings { request_filters, response_filters, split });
        }
    }

    let listen = if config.server.listen.is_empty() {
        vec![DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8080)))]
    } else {
        config.server.listen.iter().filter_map(|l| l.get_ref().parse().ok()).collect()
    };

    let mut plugins: Vec<Arc<LoadedPlugin>> = catalog.loaded.into_values().flatten().map(|e| e.plugin).collect();
    plugins.sort_by(|a, b| a.name().cmp(b.name()));
    c.finish()?;
    let Some(router) = router else {
        return Err(Diagnostics(vec![source.whole("no router could be loaded")]));
    };
    Ok(Generation {
        router,
        request_filters: global_request,
        response_filters: global_response,
        routes,
        upstreams,
        plugins,
        listen,
        threads: config.server.threads.as_ref().map(|t| *t.get_ref()),
    })
}

/// Reads, checks and builds the configuration at `path`.
pub fn load(path: &std::path::Path, engine: &Arc<PluginEngine>) -> Result<Generation, Diagnostics> {
    let (source, config) = crate::config::load_file(path)?;
    build(&source, &config, engine)
}

/// Checks and builds configuration text (`path` names it in diagnostics and anchors relative
/// plugin paths).
pub fn load_text(path: &std::path::Path, text: &str, engine: &Arc<PluginEngine>) -> Result<Generation, Diagnostics> {
    let source = SourceFile::new(path, text);
    let config = crate::config::load_source(&source)?;
    build(&source, &config, engine)
}
