//! The immutable running state — routes, upstreams, loaded plugins and their chains — and how
//! it is built from a validated configuration.
//!
//! A request takes the current [`Generation`] once, at its start, and keeps it to its end. The
//! proxy holds the current one behind an `ArcSwap`; building a new one happens off the request
//! path and either completes or reports every problem.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use toml::Spanned;

use crate::admin::traffic::{NONE, Recorder, Traffic};
use crate::config::model::{
    DEFAULT_GRACE_PERIOD_S, DEFAULT_LISTEN, DEFAULT_PLUGIN_MEMORY_MB, DEFAULT_PLUGIN_TIMEOUT_MS,
    DEFAULT_UPGRADE_SOCKET, HeaderPolicy, PluginRef, PluginSection,
};
use crate::config::{Collector, ConfigFile, Diagnostics, SourceFile, resolve_address};
use crate::plugin::{
    BalancerRole, Builtin, LoadedPlugin, PluginEngine, PluginSettings, RequestFilterRole, ResponseFilterRole, Role,
    RouterRole, SplitRole, WasmPlugin, builtin_plugin, sha256_hex,
};
use crate::proxy::limits::{ClientLimits, body_limit};
use crate::tls::upstream::UpstreamTlsSettings;
use crate::upstream::{Backend, RetryBudget, Upstream, UpstreamPolicy};

pub use crate::config::model::{DEFAULT_BALANCER, DEFAULT_ROUTER, DEFAULT_SPLIT, HEADER_POLICY_PLUGIN};

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

/// What runs for a route's requests after routing.
pub struct RouteSettings {
    /// The site's name (metrics, stats, access log).
    pub site: Arc<str>,
    /// The figures of the route's requests to its own upstream (a split's other upstreams are
    /// looked up when used).
    pub recorder: Arc<Recorder>,
    /// The header policy's request side, then site and route request filters.
    pub request_filters: Vec<Link<dyn RequestFilterRole>>,
    /// The split's response side (its cookie), route, site and global response filters, then
    /// the header policy's response side.
    pub response_filters: Vec<Link<dyn ResponseFilterRole>>,
    pub split: Option<Link<dyn SplitRole>>,
    /// The largest request body (the route's `max_body_bytes`, else the server's).
    pub max_body_bytes: Option<u64>,
}

/// Routes and upstreams by name, looked up several times per request. The names come from the
/// configuration, so a fast seeded hash serves (the standard SipHash costs ~150 instructions a
/// lookup here, a few hundred per request).
pub type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Everything a request needs, frozen.
pub struct Generation {
    pub router: Link<dyn RouterRole>,
    /// Global request filters, run before routing.
    pub request_filters: Vec<Link<dyn RequestFilterRole>>,
    pub routes: NameMap<RouteSettings>,
    /// For routes a custom router names that the configuration does not know: the server-level
    /// header policy and the global response filters.
    pub fallback_route: RouteSettings,
    pub upstreams: NameMap<Arc<Upstream>>,
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Process-level settings: listeners, threads, admin, lifecycle.
    pub process: ProcessSettings,
    /// What clients may send and hold.
    pub limits: ClientLimits,
    /// Listeners whose HTTP/1 requests skip the strict parser (`[server] lenient_listeners`).
    pub lenient_listeners: Vec<SocketAddr>,
    /// `[[tcp]]` routes: listener → upstream.
    pub tcp_routes: Vec<TcpRoute>,
    /// The configuration file and the plugin files it names (what `watch = true` polls).
    pub watched_files: Vec<PathBuf>,
    /// Which plugins this generation took over from the previous one and which it loaded.
    pub report: BuildReport,
    /// The configuration text this generation was built from (what the admin API edits).
    pub source_text: Arc<str>,
    /// The listeners' strategy and each site's certificate source.
    pub tls: Arc<crate::tls::TlsPlan>,
}

/// A `[[tcp]]` route.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRoute {
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: String,
}

/// Settings of the process rather than of requests. Some only take effect at start (see
/// [`ProcessSettings::restart_needed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSettings {
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners.
    pub tls_listen: Vec<SocketAddr>,
    pub threads: Option<usize>,
    pub admin_listen: Option<SocketAddr>,
    /// The admin API's token and Host allow-list (a reload applies them).
    pub admin_access: crate::admin::auth::AdminAccess,
    pub pid_file: Option<PathBuf>,
    pub upgrade_socket: PathBuf,
    /// How long a stopping process lets in-flight requests finish.
    pub grace_period: Duration,
    /// Reload when a watched file changes.
    pub watch: bool,
    /// The `[[tcp]]` listeners.
    pub tcp_listen: Vec<SocketAddr>,
    /// `[log]`.
    pub log: crate::admin::logs::LogSettings,
}

impl ProcessSettings {
    /// The configuration keys whose value in `next` differs from `self` but which a reload
    /// cannot apply (the sockets, threads and files are set up at start).
    pub fn restart_needed(&self, next: &ProcessSettings) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != next.listen {
            keys.push("server.listen");
        }
        if self.tls_listen != next.tls_listen {
            keys.push("server.tls_listen");
        }
        if self.threads != next.threads {
            keys.push("server.threads");
        }
        if self.pid_file != next.pid_file {
            keys.push("server.pid_file");
        }
        if self.upgrade_socket != next.upgrade_socket {
            keys.push("server.upgrade_socket");
        }
        if self.admin_listen != next.admin_listen {
            keys.push("admin.listen");
        }
        if self.tcp_listen != next.tcp_listen {
            keys.push("tcp.listen");
        }
        if self.log != next.log {
            keys.push("log");
        }
        keys
    }

    /// `next` with this process's values of the settings only a restart applies, so the
    /// running generation always describes what is actually running.
    pub fn carry_restart_only(&self, next: &mut ProcessSettings) {
        next.listen = self.listen.clone();
        next.tls_listen = self.tls_listen.clone();
        next.threads = self.threads;
        next.pid_file = self.pid_file.clone();
        next.upgrade_socket = self.upgrade_socket.clone();
        next.admin_listen = self.admin_listen;
        next.tcp_listen = self.tcp_listen.clone();
        next.log = self.log.clone();
    }
}

/// How a generation's plugins were obtained.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// Plugins kept from the previous generation (same bytes, same settings).
    pub reused: Vec<String>,
    /// Plugins loaded for this generation, with where their compiled code came from.
    pub loaded: Vec<(String, crate::plugin::CompileSource)>,
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
    /// Whether this is a built-in used as shipped (not replaced by a `[[plugin]]` of its name).
    builtin: bool,
}

/// Where a plugin comes from and how it runs, before its configuration is final.
struct PluginSource<'a> {
    bytes: std::borrow::Cow<'static, [u8]>,
    /// The configuration the plugin starts from: a built-in's own, with a `[[plugin]]` table's
    /// `config` merged over it.
    config: serde_json::Value,
    section: Option<&'a PluginSection>,
    /// Where errors about loading it point.
    span: Range<usize>,
}

/// Loads plugins on demand (built-ins on first reference) and hands out their roles. A plugin
/// referenced with an inline table is loaded once more with the merged configuration, once per
/// distinct configuration.
struct PluginCatalog<'a> {
    engine: &'a Arc<PluginEngine>,
    declared: HashMap<String, &'a Spanned<PluginSection>>,
    loaded: HashMap<String, Option<PluginEntry>>,
    /// Plugins loaded with an inline configuration, by (plugin, configuration JSON).
    configured: HashMap<(String, String), Option<PluginEntry>>,
    base_dir: std::path::PathBuf,
    /// The previous generation's plugins by name, reused when bytes and settings are the same.
    previous: HashMap<&'a str, &'a Arc<LoadedPlugin>>,
    report: RefCell<BuildReport>,
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

/// Merges `over` into `base`: tables merge key by key, recursively; anything else is replaced.
pub fn merge_json(base: &mut serde_json::Value, over: &serde_json::Map<String, serde_json::Value>) {
    if !base.is_object() {
        *base = serde_json::Value::Object(Default::default());
    }
    let Some(target) = base.as_object_mut() else { return };
    for (key, value) in over {
        match (target.get_mut(key), value) {
            (Some(existing @ serde_json::Value::Object(_)), serde_json::Value::Object(inner)) => {
                merge_json(existing, inner)
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

impl<'a> PluginCatalog<'a> {
    /// The plugin `settings.name` running `bytes`: the previous generation's if it runs the
    /// same bytes with the same settings, else loaded now.
    fn load_plugin(&self, bytes: &[u8], settings: PluginSettings) -> anyhow::Result<Arc<LoadedPlugin>> {
        let sha256 = sha256_hex(bytes);
        if let Some(previous) = self.previous.get(settings.name.as_str())
            && previous.runs(&sha256, &settings)
        {
            self.report.borrow_mut().reused.push(settings.name.clone());
            return Ok(Arc::clone(previous));
        }
        let plugin = LoadedPlugin::load_hashed(self.engine, bytes, sha256, settings)?;
        self.report.borrow_mut().loaded.push((plugin.name().to_string(), plugin.compiled_from()));
        Ok(plugin)
    }

    /// The bytes and starting configuration of plugin `name`: a `[[plugin]]` table of that name
    /// (which replaces a built-in of the same name), else the built-in.
    fn source(&self, name: &str, span: Range<usize>, c: &mut Collector<'_>) -> Option<PluginSource<'a>> {
        let Some(section) = self.declared.get(name).map(|s| s.get_ref()) else {
            let Some(builtin) = builtin_plugin(name) else {
                c.error(span, format!("unknown plugin `{name}`"));
                return None;
            };
            return Some(PluginSource {
                bytes: builtin.bytes.into(),
                config: starting_config(builtin_config(builtin), None),
                section: None,
                span,
            });
        };
        let (bytes, base, span): (std::borrow::Cow<'static, [u8]>, _, _) = match (&section.path, &section.builtin) {
            (Some(path), _) => {
                let full = self.base_dir.join(path.get_ref());
                match std::fs::read(&full) {
                    Ok(b) => (b.into(), json!({}), path.span()),
                    Err(e) => {
                        c.error(path.span(), format!("plugin `{name}`: cannot read {}: {e}", full.display()));
                        return None;
                    }
                }
            }
            (None, Some(b)) => {
                // Validation reported unknown built-ins.
                let builtin = builtin_plugin(b.get_ref())?;
                (builtin.bytes.into(), builtin_config(builtin), b.span())
            }
            (None, None) => return None,
        };
        if let Some(pin) = &section.sha256 {
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(pin.get_ref()) {
                c.error(pin.span(), format!("plugin `{name}`: sha256 mismatch: the file has {actual}"));
                return None;
            }
        }
        Some(PluginSource { bytes, config: starting_config(base, Some(section)), section: Some(section), span })
    }

    /// The built-in whose code plugin `name` runs: the built-in of that name, or the `builtin` of
    /// a `[[plugin]]` table of that name. `None` for a component file or an unknown name.
    fn builtin_code(&self, name: &str) -> Option<&'static Builtin> {
        match self.declared.get(name).map(|s| s.get_ref()) {
            None => builtin_plugin(name),
            Some(section) if section.path.is_none() => {
                section.builtin.as_ref().and_then(|b| builtin_plugin(b.get_ref()))
            }
            Some(_) => None,
        }
    }

    /// The configuration a split reference is loaded with, when it runs the built-in split's
    /// code (whose format the host knows); `None` for any other split. Reports nothing: loading
    /// the plugin reports its problems.
    fn builtin_split_config(&self, reference: &PluginRef) -> Option<serde_json::Value> {
        let name = reference.plugin_name(DEFAULT_SPLIT);
        // The default split is the built-in one.
        let builtin = self.builtin_code(name).filter(|b| b.name == DEFAULT_SPLIT)?;
        let section = self.declared.get(name).map(|s| s.get_ref());
        Some(referenced_config(starting_config(builtin_config(builtin), section), reference))
    }

    /// Compiles and configures `source` as `instance_name` with `config`.
    fn load(
        &self,
        instance_name: &str,
        source: &PluginSource<'_>,
        config: &serde_json::Value,
        c: &mut Collector<'_>,
    ) -> Option<PluginEntry> {
        let mut settings = default_settings(instance_name, config.to_string());
        if let Some(section) = source.section {
            settings.failure = section.failure;
            if let Some(t) = &section.timeout_ms {
                settings.timeout = Duration::from_millis(*t.get_ref());
            }
            if let Some(m) = &section.memory_limit_mb {
                settings.memory_limit_bytes = (*m.get_ref() as usize) << 20;
            }
        }
        let plugin = match self.load_plugin(&source.bytes, settings) {
            Ok(p) => p,
            Err(e) => {
                c.error(source.span.clone(), format!("plugin `{instance_name}`: {e:#}"));
                return None;
            }
        };
        let enabled = match source.section.and_then(|s| s.roles.as_ref()) {
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
                                "plugin `{instance_name}` does not export the {role} role (it exports: {})",
                                exported.join(", ")
                            ),
                        );
                    }
                }
                enabled
            }
        };
        Some(PluginEntry { plugin, enabled, builtin: source.section.is_none() })
    }

    /// The plugin `name` (declared or built-in) with its own configuration, loading it on first
    /// use; `None` after an error (already reported).
    fn get(&mut self, name: &str, span: Range<usize>, c: &mut Collector<'_>) -> Option<&PluginEntry> {
        if !self.loaded.contains_key(name) {
            let entry = self.source(name, span, c).and_then(|source| self.load(name, &source, &source.config, c));
            self.loaded.insert(name.to_string(), entry);
        }
        self.loaded.get(name).and_then(Option::as_ref)
    }

    /// The plugin a [`PluginRef`] names, configured as it says: with its own configuration, or
    /// with an inline table merged over it, once per distinct configuration. An inline instance
    /// is named `<plugin>@<place>` (`hash@upstream:pool`), or plain `<plugin>` without a place
    /// (the server-level header policy).
    fn get_ref(
        &mut self,
        reference: &PluginRef,
        default: &str,
        place: Option<&str>,
        span: Range<usize>,
        c: &mut Collector<'_>,
    ) -> Option<(String, &PluginEntry)> {
        let name = reference.plugin_name(default).to_string();
        match reference {
            PluginRef::Named(_) => self.get(&name, span, c).map(|e| (name, e)),
            PluginRef::Inline { .. } => {
                let source = self.source(&name, span, c)?;
                let config = referenced_config(source.config.clone(), reference);
                let key = (name.clone(), config.to_string());
                if !self.configured.contains_key(&key) {
                    let instance_name = place.map_or_else(|| name.clone(), |place| format!("{name}@{place}"));
                    let entry = self.load(&instance_name, &source, &config, c);
                    self.configured.insert(key.clone(), entry);
                }
                let entry = self.configured.get(&key).and_then(Option::as_ref)?;
                Some((entry.plugin.name().to_string(), entry))
            }
        }
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
        entry_role(name, entry, role, span, c)
    }

    /// Every plugin loaded so far, sorted by name.
    fn into_plugins(self) -> Vec<Arc<LoadedPlugin>> {
        let mut plugins: Vec<Arc<LoadedPlugin>> =
            self.loaded.into_values().chain(self.configured.into_values()).flatten().map(|e| e.plugin).collect();
        plugins.sort_by(|a, b| a.name().cmp(b.name()));
        plugins
    }
}

/// The configuration a built-in starts from (`{}` if its own does not parse, which the tests of
/// the built-ins rule out).
fn builtin_config(builtin: &Builtin) -> serde_json::Value {
    serde_json::from_str(builtin.config).unwrap_or_else(|_| json!({}))
}

/// A plugin's starting configuration: `base` (a built-in's own, or `{}` for a component file)
/// with the `config` of its `[[plugin]]` table, if any, merged over it.
fn starting_config(mut base: serde_json::Value, section: Option<&PluginSection>) -> serde_json::Value {
    if let Some(serde_json::Value::Object(own)) = section.and_then(|s| s.config.as_ref()) {
        merge_json(&mut base, own);
    }
    base
}

/// The configuration `reference` loads a plugin with: its starting configuration, with an inline
/// table's keys merged over it.
fn referenced_config(mut config: serde_json::Value, reference: &PluginRef) -> serde_json::Value {
    if let PluginRef::Inline { config: extra, .. } = reference {
        merge_json(&mut config, extra);
    }
    config
}

/// Reports, at `span`, every upstream the variants of a built-in split's configuration name that
/// the configuration does not define: the split would send those requests nowhere (a 502 on
/// each). Variants without a usable `upstream` are left to the split's own configuration errors.
fn check_split_upstreams(
    split_config: &serde_json::Value,
    config: &ConfigFile,
    span: Range<usize>,
    c: &mut Collector<'_>,
) {
    let Some(variants) = split_config.get("variants").and_then(serde_json::Value::as_array) else { return };
    let defined: Vec<&str> = config.upstreams.iter().map(|u| u.get_ref().name.get_ref().as_str()).collect();
    for (index, variant) in variants.iter().enumerate() {
        let Some(upstream) = variant.get("upstream").and_then(serde_json::Value::as_str) else { continue };
        if upstream.is_empty() || defined.contains(&upstream) || config.unreadable_names.contains(upstream) {
            continue;
        }
        c.error(
            span.clone(),
            format!(
                "split variants[{index}]: unknown upstream `{upstream}` (defined upstreams: {})",
                defined.join(", ")
            ),
        );
    }
}

/// `entry` in `role`, or an error at `span` if it lacks the role.
fn entry_role(
    name: &str,
    entry: &PluginEntry,
    role: Role,
    span: Range<usize>,
    c: &mut Collector<'_>,
) -> Option<(Arc<str>, WasmPlugin)> {
    if !entry.enabled.contains(&role) {
        let has: Vec<_> = entry.enabled.iter().map(|r| r.config_name()).collect();
        let message = format!("plugin `{name}` cannot be used as a {role} (its roles: {})", has.join(", "));
        c.error(span, message);
        return None;
    }
    Some((Arc::from(name), WasmPlugin(entry.plugin.clone())))
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

/// The header policy of one level, with the span of its table (for errors).
type PolicyLevel<'c> = Option<&'c Spanned<HeaderPolicy>>;

/// A header policy level's place in instance names: `None` for the server level (the instance is
/// plain `headers`), `site:NAME` or `route:NAME` below it.
type PolicyPlace = Option<String>;

/// The header policy in force at a place: its merged configuration, the place of the level that
/// last contributed (which names the instance), and the span of that level's table.
type EffectivePolicy = (serde_json::Value, PolicyPlace, Range<usize>);

/// The effective header policy of a place: the levels from the most general to the most specific,
/// each merged over the previous; `false` switches it off until a more specific table. `None` when
/// off.
fn effective_policy(levels: &[(PolicyLevel<'_>, PolicyPlace)]) -> Option<EffectivePolicy> {
    let mut state = Some((json!({}), None, 0..0));
    for (level, place) in levels {
        match level.map(|l| (l.get_ref(), l.span())) {
            None => {}
            Some((HeaderPolicy::Off, _)) => state = None,
            Some((HeaderPolicy::Keys(keys), span)) => {
                let mut config = state.map_or_else(|| json!({}), |(config, _, _)| config);
                merge_json(&mut config, keys);
                state = Some((config, place.clone(), span));
            }
        }
    }
    state
}

/// A header policy's request-side and response-side links.
type PolicyLinks = (Option<Link<dyn RequestFilterRole>>, Option<Link<dyn ResponseFilterRole>>);

/// The header policy plugin's request and response links for `policy`, if any. The response side
/// is left out when the built-in has nothing to do on responses (saves a call per response).
fn policy_links(
    catalog: &mut PluginCatalog<'_>,
    policy: Option<EffectivePolicy>,
    c: &mut Collector<'_>,
) -> PolicyLinks {
    let Some((config, place, span)) = policy else { return (None, None) };
    let serde_json::Value::Object(keys) = &config else { return (None, None) };
    let reference = PluginRef::Inline { plugin: None, config: keys.clone() };
    let Some((name, entry)) = catalog.get_ref(&reference, HEADER_POLICY_PLUGIN, place.as_deref(), span.clone(), c)
    else {
        return (None, None);
    };
    let response_work = !entry.builtin
        || keys.contains_key("response")
        || keys.get("security_headers").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let (plugin, enabled) = (WasmPlugin(entry.plugin.clone()), entry.enabled.clone());
    let name: Arc<str> = Arc::from(name.as_str());
    let request = enabled.contains(&Role::RequestFilter).then(|| {
        let role: Arc<dyn RequestFilterRole> = Arc::new(plugin.clone());
        Link { name: name.clone(), role }
    });
    let response = (response_work && enabled.contains(&Role::ResponseFilter)).then(|| {
        let role: Arc<dyn ResponseFilterRole> = Arc::new(plugin);
        Link { name, role }
    });
    if request.is_none() && response.is_none() {
        c.error(span, format!("the header policy plugin `{HEADER_POLICY_PLUGIN}` exports neither filter role"));
    }
    (request, response)
}

/// Builds a generation from a validated configuration: loads and configures every plugin it
/// references and wires the chains. Returns every problem found, with its place in the file.
///
/// Plugins of `previous` that run the same bytes with the same settings are taken over as they
/// are (compiled code, idle instances, key-value store and counters); others are loaded.
pub fn build(
    source: &SourceFile,
    config: &ConfigFile,
    engine: &Arc<PluginEngine>,
    previous: Option<&Generation>,
) -> Result<Generation, Diagnostics> {
    let mut c = Collector::new(source);
    let mut catalog = PluginCatalog {
        engine,
        declared: config.plugins.iter().map(|p| (p.get_ref().name.get_ref().clone(), p)).collect(),
        loaded: HashMap::new(),
        configured: HashMap::new(),
        base_dir: source.base_dir().to_path_buf(),
        previous: previous.map(|g| g.plugins.iter().map(|p| (p.name(), p)).collect()).unwrap_or_default(),
        report: RefCell::new(BuildReport::default()),
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
            match builtin_plugin(DEFAULT_ROUTER).map(|b| catalog.load_plugin(b.bytes, settings)) {
                Some(Ok(plugin)) => {
                    let role: Arc<dyn RouterRole> = Arc::new(WasmPlugin(plugin.clone()));
                    catalog.loaded.insert(
                        format!("{DEFAULT_ROUTER} (sites)"),
                        Some(PluginEntry { enabled: vec![Role::Router], plugin, builtin: true }),
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

    let mut upstreams = NameMap::default();
    for u in &config.upstreams {
        let u = u.get_ref();
        let name = u.name.get_ref();
        let default_ref = PluginRef::Named(DEFAULT_BALANCER.to_string());
        let (reference, span) = match &u.balancer {
            Some(b) => (b.get_ref(), b.span()),
            None => (&default_ref, u.name.span()),
        };
        let place = format!("upstream:{name}");
        let Some((plugin_name, entry)) =
            catalog.get_ref(reference, DEFAULT_BALANCER, Some(&place), span.clone(), &mut c)
        else {
            continue;
        };
        let Some((_, plugin)) = entry_role(&plugin_name, entry, Role::Balancer, span, &mut c) else {
            continue;
        };
        let mut backends = Vec::new();
        let mut draining = Vec::new();
        for b in u.backends.get_ref() {
            let b = b.get_ref();
            // Validation already reported unresolvable addresses.
            let Some(address) = resolve_address(b.address.get_ref()).ok().and_then(|a| a.first().copied()) else {
                continue;
            };
            let weight = b.weight.as_ref().map_or(1, |w| *w.get_ref());
            // A backend the previous generation had unchanged keeps its live figures (requests
            // in flight, latency, failures), so load-aware balancers see through a reload.
            let carried = previous.and_then(|g| g.upstreams.get(name)).and_then(|u| {
                u.backends
                    .iter()
                    .find(|p| {
                        p.label == *b.address.get_ref()
                            && p.address == address
                            && p.weight == weight
                            && *p.tags == b.tags[..]
                    })
                    .cloned()
            });
            backends.push(carried.unwrap_or_else(|| {
                Arc::new(Backend::new(b.address.get_ref().clone(), address, weight, b.tags.clone()))
            }));
            draining.push(b.drain);
        }
        let balancer: Arc<dyn BalancerRole> = Arc::new(plugin);
        let policy = UpstreamPolicy::from_config(u, &mut c);
        let tls = u.tls.as_ref().filter(|t| t.get_ref().enabled).and_then(|t| {
            UpstreamTlsSettings::from_config(t.get_ref(), source.base_dir())
                .map_err(|e| c.error(t.span(), format!("upstream `{name}` tls: {e}")))
                .ok()
        });
        upstreams.insert(
            name.clone(),
            Arc::new(Upstream {
                name: name.clone(),
                backends,
                draining,
                balancer,
                policy,
                retry_budget: RetryBudget::default(),
                tls,
            }),
        );
    }

    let server_policy: PolicyLevel<'_> = config.server.header_policy.as_ref();
    let (fallback_request, fallback_policy_response) =
        policy_links(&mut catalog, effective_policy(&[(server_policy, None)]), &mut c);
    let mut fallback_response = global_response.clone();
    fallback_response.extend(fallback_policy_response.clone());
    let limits = ClientLimits::from_config(&config.server.limits, &mut c);
    let fallback_route = RouteSettings {
        site: Arc::from(NONE),
        recorder: Traffic::global().recorder(NONE, NONE, NONE),
        request_filters: fallback_request.clone().into_iter().collect(),
        response_filters: fallback_response,
        split: None,
        max_body_bytes: limits.max_body_bytes,
    };

    let mut routes = NameMap::default();
    for site in &config.sites {
        let site = site.get_ref();
        let name = site_name(site);
        let site_request = request_chain(&mut catalog, &site.request_filters, &mut c);
        let site_response = response_chain(&mut catalog, &site.response_filters, &mut c);
        let site_level = (site.header_policy.as_ref(), Some(format!("site:{name}")));
        for (i, r) in site.routes.iter().enumerate() {
            let r = r.get_ref();
            let route = route_name(&name, i, r);
            let levels =
                [(server_policy, None), site_level.clone(), (r.header_policy.as_ref(), Some(format!("route:{route}")))];
            let (policy_request, policy_response) = policy_links(&mut catalog, effective_policy(&levels), &mut c);

            let mut split = None;
            let mut split_response = None;
            if let Some(s) = &r.split {
                if let Some(split_config) = catalog.builtin_split_config(s.get_ref()) {
                    check_split_upstreams(&split_config, config, s.span(), &mut c);
                }
                let place = format!("route:{route}");
                if let Some((plugin_name, entry)) =
                    catalog.get_ref(s.get_ref(), DEFAULT_SPLIT, Some(&place), s.span(), &mut c)
                {
                    let plugin_name = plugin_name.clone();
                    if entry.enabled.contains(&Role::ResponseFilter) {
                        let role: Arc<dyn ResponseFilterRole> = Arc::new(WasmPlugin(entry.plugin.clone()));
                        split_response = Some(Link { name: Arc::from(plugin_name.as_str()), role });
                    }
                    split = entry_role(&plugin_name, entry, Role::Split, s.span(), &mut c).map(|(name, plugin)| {
                        let role: Arc<dyn SplitRole> = Arc::new(plugin);
                        Link { name, role }
                    });
                }
            }

            let mut request_filters: Vec<_> = policy_request.into_iter().collect();
            request_filters.extend(site_request.iter().cloned());
            request_filters.extend(request_chain(&mut catalog, &r.request_filters, &mut c));
            let mut response_filters: Vec<_> = split_response.into_iter().collect();
            response_filters.extend(response_chain(&mut catalog, &r.response_filters, &mut c));
            response_filters.extend(site_response.iter().cloned());
            response_filters.extend(global_response.iter().cloned());
            response_filters.extend(policy_response);
            let max_body_bytes = body_limit(&r.max_body_bytes, &mut c).or(limits.max_body_bytes);
            let recorder = Traffic::global().recorder(&name, &route, r.upstream.get_ref());
            let site = Arc::from(name.as_str());
            routes.insert(
                route,
                RouteSettings { site, recorder, request_filters, response_filters, split, max_body_bytes },
            );
        }
    }

    let tls = crate::tls::plan::build(config, source.base_dir(), &mut c);
    let mut process = process_settings(config, source.base_dir());
    process.admin_access = crate::admin::auth::resolve(&config.admin, source.base_dir(), &mut c);
    let mut watched_files = vec![source.path.clone()];
    for p in &config.plugins {
        if let Some(path) = &p.get_ref().path {
            watched_files.push(source.base_dir().join(path.get_ref()));
        }
    }

    let report = catalog.report.take();
    let plugins = catalog.into_plugins();
    c.finish()?;
    let Some(router) = router else {
        return Err(Diagnostics(vec![source.whole("no router could be loaded")]));
    };
    Ok(Generation {
        router,
        request_filters: global_request,
        routes,
        fallback_route,
        upstreams,
        plugins,
        tcp_routes: tcp_routes(config),
        process,
        limits,
        lenient_listeners: config.server.lenient_listeners.iter().filter_map(|l| l.get_ref().parse().ok()).collect(),
        watched_files,
        report,
        source_text: Arc::from(source.text.as_str()),
        tls: Arc::new(tls),
    })
}

/// The listener addresses `[server] lenient_listeners` may name: the HTTP and HTTPS ones.
pub fn lenient_listener_candidates(config: &ConfigFile) -> Vec<SocketAddr> {
    let mut listeners = process_settings(config, Path::new("")).listen;
    listeners.extend(crate::tls::plan::tls_listen(config));
    listeners
}

/// The process-level settings of `config`, with paths relative to `base_dir`.
fn process_settings(config: &ConfigFile, base_dir: &Path) -> ProcessSettings {
    let listen = if config.server.listen.is_empty() {
        vec![DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8080)))]
    } else {
        config.server.listen.iter().filter_map(|l| l.get_ref().parse().ok()).collect()
    };
    let server = &config.server;
    ProcessSettings {
        listen,
        tls_listen: crate::tls::plan::tls_listen(config),
        threads: server.threads.as_ref().map(|t| *t.get_ref()),
        admin_listen: config.admin.listen.as_ref().and_then(|a| a.get_ref().parse().ok()),
        admin_access: Default::default(),
        pid_file: server.pid_file.as_ref().map(|p| base_dir.join(p.get_ref())),
        upgrade_socket: server
            .upgrade_socket
            .as_ref()
            .map_or_else(|| PathBuf::from(DEFAULT_UPGRADE_SOCKET), |p| base_dir.join(p.get_ref())),
        grace_period: Duration::from_secs(
            server.grace_period_s.as_ref().map_or(DEFAULT_GRACE_PERIOD_S, |g| *g.get_ref()),
        ),
        watch: server.watch,
        tcp_listen: tcp_routes(config).into_iter().map(|r| r.listen).collect(),
        log: config.log.settings(base_dir),
    }
}

/// The `[[tcp]]` routes of a validated `config`.
fn tcp_routes(config: &ConfigFile) -> Vec<TcpRoute> {
    config
        .tcp_routes
        .iter()
        .filter_map(|t| {
            let t = t.get_ref();
            let listen: SocketAddr = t.listen.get_ref().parse().ok()?;
            let name = t.name.as_ref().map_or_else(|| listen.to_string(), |n| n.get_ref().clone());
            Some(TcpRoute { name, listen, upstream: t.upstream.get_ref().clone() })
        })
        .collect()
}

/// Reads, checks and builds the configuration at `path`.
pub fn load(path: &std::path::Path, engine: &Arc<PluginEngine>) -> Result<Generation, Diagnostics> {
    load_next(path, engine, None)
}

/// Reads, checks and builds the configuration at `path` as the successor of `previous`, whose
/// unchanged plugins it takes over.
pub fn load_next(
    path: &std::path::Path,
    engine: &Arc<PluginEngine>,
    previous: Option<&Generation>,
) -> Result<Generation, Diagnostics> {
    let (source, config) = crate::config::load_file(path)?;
    build(&source, &config, engine, previous)
}

/// Checks and builds configuration text (`path` names it in diagnostics and anchors relative
/// plugin paths).
pub fn load_text(path: &std::path::Path, text: &str, engine: &Arc<PluginEngine>) -> Result<Generation, Diagnostics> {
    load_text_next(path, text, engine, None)
}

/// [`load_text`] as the successor of `previous`, whose unchanged plugins it takes over.
pub fn load_text_next(
    path: &std::path::Path,
    text: &str,
    engine: &Arc<PluginEngine>,
    previous: Option<&Generation>,
) -> Result<Generation, Diagnostics> {
    let source = SourceFile::new(path, text);
    let config = crate::config::load_source(&source)?;
    build(&source, &config, engine, previous)
}
