//! The configuration file format, as serde types. This is the public TOML shape, not the
//! running state: `crate::generation` builds that from a validated [`ConfigFile`].
//!
//! Values that later checks point at are `Spanned`, so every problem names its file:line:col.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::plugin::FailurePolicy;

/// The default HTTP listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// The built-in plugin that routes when no `[[plugin]]` takes the router role.
pub const DEFAULT_ROUTER: &str = "router";
/// The balancer of an upstream without `balancer`, and of inline balancer tables without `plugin`.
pub const DEFAULT_BALANCER: &str = "round-robin";
/// The split plugin of inline `split` tables without `plugin`.
pub const DEFAULT_SPLIT: &str = "split";
/// The plugin that applies `header_policy` tables (a `[[plugin]]` of this name replaces it).
pub const HEADER_POLICY_PLUGIN: &str = "headers";

/// The default deadline of one plugin call.
pub const DEFAULT_PLUGIN_TIMEOUT_MS: u64 = 5;
/// The default memory cap of one plugin instance.
pub const DEFAULT_PLUGIN_MEMORY_MB: u64 = 32;
/// How long a stopping or upgraded-away process lets in-flight requests finish, by default.
pub const DEFAULT_GRACE_PERIOD_S: u64 = 30;
/// Where a running process hands its listening sockets to its successor, by default.
pub const DEFAULT_UPGRADE_SOCKET: &str = "/tmp/switchyard-upgrade.sock";

/// A whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub server: ServerSection,
    pub admin: AdminSection,
    pub upstreams: Vec<Spanned<UpstreamSection>>,
    pub sites: Vec<Spanned<SiteSection>>,
    pub plugins: Vec<Spanned<PluginSection>>,
    pub tcp_routes: Vec<Spanned<TcpSection>>,
    pub log: LogSection,
    pub tls: TlsSection,
    /// Names of upstreams and plugins whose tables could not be read (already reported), so
    /// references to them are not reported again.
    pub unreadable_names: std::collections::HashSet<String>,
}

/// `[server]`: listeners, threads and the global filter chains.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerSection {
    /// HTTP listener addresses (`ip:port`). Default `0.0.0.0:8080`.
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    /// HTTPS listener addresses (`ip:port`): TLS with each site's certificate chosen by SNI,
    /// HTTP/2 or HTTP/1.1 by ALPN. Default: none.
    #[serde(default)]
    pub tls_listen: Vec<Spanned<String>>,
    /// Listeners (from `listen` or `tls_listen`) whose HTTP/1 requests get Pingora's own
    /// parsing instead of the strict one: an escape hatch for clients that cannot be fixed.
    #[serde(default)]
    pub lenient_listeners: Vec<Spanned<String>>,
    /// `https-only` (the default with `tls_listen`: plain HTTP answers ACME challenges and
    /// redirects everything else), `both` (both serve) or `http-only` (no TLS).
    pub strategy: Option<Spanned<String>>,
    /// The port redirects to HTTPS name (when clients reach the TLS listener through another
    /// port than it listens on). Default: the first `tls_listen` port.
    pub https_port: Option<Spanned<u16>>,
    /// Worker threads. Default: the number of CPUs.
    pub threads: Option<Spanned<usize>>,
    /// Request filters run on every request, before routing, in this order.
    #[serde(default)]
    pub request_filters: Vec<Spanned<String>>,
    /// Response filters run on every proxied response, after site and route filters.
    #[serde(default)]
    pub response_filters: Vec<Spanned<String>>,
    /// The header policy every site starts from (the built-in `headers` plugin's keys), or
    /// `false` for none. Default: the plugin's defaults (`X-Forwarded-*` on).
    pub header_policy: Option<Spanned<HeaderPolicy>>,
    /// Seconds a stopping process (SIGTERM, or the old one in an upgrade) lets in-flight
    /// requests and WebSockets finish before closing them. Default 30.
    pub grace_period_s: Option<Spanned<u64>>,
    /// Reload when the configuration file or a plugin file it names changes. Default false.
    #[serde(default)]
    pub watch: bool,
    /// A file the process writes its pid to, so `switchyard reload` can signal it.
    pub pid_file: Option<Spanned<String>>,
    /// The Unix socket a new process (`run --upgrade`) takes the listening sockets over from.
    /// Default `/tmp/switchyard-upgrade.sock`.
    pub upgrade_socket: Option<Spanned<String>>,
    /// Limits on what clients may send and hold.
    #[serde(default)]
    pub limits: LimitsSection,
}

/// `[server] limits = { … }`: what a client may send and hold.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LimitsSection {
    /// Milliseconds a new connection has to deliver its first request head (a client sending
    /// one byte at a time is cut off). Default 10000.
    pub head_timeout_ms: Option<Spanned<u64>>,
    /// Milliseconds a kept-alive connection may wait for its next request (plus the head
    /// timeout to deliver it). Default 60000.
    pub idle_timeout_ms: Option<Spanned<u64>>,
    /// The largest request head (request line and headers), in bytes; larger gets 431.
    /// Default 65536.
    pub max_header_bytes: Option<Spanned<u64>>,
    /// The most request headers; more gets 431. Default 100.
    pub max_headers: Option<Spanned<u64>>,
    /// Client connections open at once; more are closed at accept. Default 10000.
    pub max_connections: Option<Spanned<u64>>,
    /// The largest request body, in bytes, for routes without their own; larger gets 413.
    /// Default: no limit.
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Streams an HTTP/2 client may have open at once on one connection. Default 100. Read at
    /// start (a reload does not change it).
    pub h2_max_concurrent_streams: Option<Spanned<u64>>,
}

/// `[log]`: how the process logs. Only a restart applies changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (default) or `json` (one JSON object per line).
    pub format: Option<Spanned<String>>,
    /// Append to this file (relative to the configuration file) instead of writing to stderr.
    pub file: Option<Spanned<String>>,
    /// A `tracing` filter such as `info` or `warn,switchyard=debug`; the `SWITCHYARD_LOG`
    /// environment variable overrides it. Default `info`.
    pub level: Option<Spanned<String>>,
    /// One line per request (target `switchyard::access`). Default true.
    pub access_log: Option<bool>,
}

impl LogSection {
    /// The settings this section asks for, with `file` relative to `base_dir`.
    pub fn settings(&self, base_dir: &std::path::Path) -> crate::admin::logs::LogSettings {
        crate::admin::logs::LogSettings {
            json: self.format.as_ref().is_some_and(|f| f.get_ref() == "json"),
            file: self.file.as_ref().map(|f| base_dir.join(f.get_ref())),
            level: self.level.as_ref().map(|l| l.get_ref().clone()),
            access_log: self.access_log.unwrap_or(true),
        }
    }
}

/// `[tls]`: where certificates come from when a site does not name its own files.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsSection {
    /// Where ACME accounts, issued certificates and the local CA are kept (relative to the
    /// configuration file). Default `switchyard-data`.
    pub storage_dir: Option<Spanned<String>>,
    /// Sites without `tls` get a certificate from a local CA created once in the storage
    /// directory (development; `run --dev` turns it on). Default false.
    #[serde(default)]
    pub self_signed: bool,
    /// The host whose certificate answers a handshake naming no configured host (or none).
    /// Default: such handshakes fail.
    pub default_host: Option<Spanned<String>>,
    /// The contact address of the ACME account. Setting it (or `acme_directory`) makes ACME the
    /// certificate source of sites without `tls`.
    pub acme_email: Option<Spanned<String>>,
    /// `letsencrypt` (default), `letsencrypt-staging`, or an ACME directory URL.
    pub acme_directory: Option<Spanned<String>>,
    /// A PEM file with the root CA of a private ACME server's own HTTPS certificate.
    pub acme_ca_root: Option<Spanned<String>>,
    /// `http-01` (default: answered on the HTTP listener) or `tls-alpn-01` (answered on the
    /// HTTPS listener, for hosts whose port 80 is closed).
    pub acme_challenge: Option<Spanned<String>>,
}

/// A site's certificate: `tls = "acme"`, `"self-signed"`, `"none"`, or
/// `tls = { cert = "chain.pem", key = "key.pem" }`.
#[derive(Debug, Clone, PartialEq)]
pub enum SiteTls {
    Acme,
    SelfSigned,
    None,
    Files { cert: String, key: String },
}

impl<'de> Deserialize<'de> for SiteTls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Files {
            cert: String,
            key: String,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SiteTls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#""acme", "self-signed", "none" or { cert = "…", key = "…" }"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SiteTls, E> {
                match v {
                    "acme" => Ok(SiteTls::Acme),
                    "self-signed" => Ok(SiteTls::SelfSigned),
                    "none" => Ok(SiteTls::None),
                    other => Err(E::custom(format!(
                        r#"unknown certificate source `{other}` (expected "acme", "self-signed", "none" or {{ cert, key }})"#
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SiteTls, A::Error> {
                let files: Files = Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SiteTls::Files { cert: files.cert, key: files.key })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// An upstream's TLS: `tls = true`, or `tls = { sni = "…", ca = "ca.pem", verify = false }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamTls {
    pub enabled: bool,
    /// The name sent and verified. Default: the backend address's host.
    pub sni: Option<String>,
    /// A PEM file of the CAs to trust instead of the system's.
    pub ca: Option<String>,
    /// Verify the backend's certificate. Default true.
    pub verify: bool,
}

impl<'de> Deserialize<'de> for UpstreamTls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            sni: Option<String>,
            ca: Option<String>,
            verify: Option<bool>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UpstreamTls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table { sni, ca, verify }")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<UpstreamTls, E> {
                Ok(UpstreamTls { enabled: v, verify: true, ..Default::default() })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<UpstreamTls, A::Error> {
                let t: Table = Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(UpstreamTls { enabled: true, sni: t.sni, ca: t.ca, verify: t.verify.unwrap_or(true) })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The environment variable the admin API's bearer token is read from, by default.
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

/// `[admin]`: the management listener.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AdminSection {
    /// Where the management API listens (`ip:port`). Default: no listener. An address other
    /// than loopback needs a token.
    pub listen: Option<Spanned<String>>,
    /// A file whose first line is the bearer token every API request must carry.
    pub token_file: Option<Spanned<String>>,
    /// The environment variable holding the token (when `token_file` is not set). Default
    /// `SWITCHYARD_ADMIN_TOKEN`; a variable named here must be set.
    pub token_env: Option<Spanned<String>>,
    /// Host header values the API answers besides `localhost`, loopback addresses and the
    /// listen address (a guard against DNS rebinding). A port, if given, must match too.
    #[serde(default)]
    pub allowed_hosts: Vec<Spanned<String>>,
}

/// `[[upstream]]`: a named group of backends and how one is picked.
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamSection {
    pub name: Spanned<String>,
    pub backends: Spanned<Vec<Spanned<BackendSection>>>,
    /// A built-in balancer or a `[[plugin]]` with the balancer role, by name or as an inline
    /// table `{ plugin = "hash", key = "cookie:session" }`. Default `round-robin`.
    pub balancer: Option<Spanned<PluginRef>>,
    /// Connect, read, write, idle and whole-request timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// Active health checks. Default: none (backends are only judged by their answers).
    pub health_check: Option<Spanned<HealthCheckSection>>,
    /// Passive health: ejecting backends that fail in a row. On by default.
    #[serde(default)]
    pub outlier: OutlierSection,
    /// Which failed attempts are tried again on another backend.
    #[serde(default)]
    pub retries: RetriesSection,
    /// Connect to the backends over TLS. Default: plain HTTP.
    pub tls: Option<Spanned<UpstreamTls>>,
}

/// `timeouts = { … }` of an upstream, in milliseconds.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TimeoutsSection {
    /// Establishing a connection to a backend. Default 5000.
    pub connect_ms: Option<Spanned<u64>>,
    /// Waiting for each read from a backend (the response head, then each piece of the body).
    /// Default 60000.
    pub read_ms: Option<Spanned<u64>>,
    /// Waiting for each write to a backend. Default 60000.
    pub write_ms: Option<Spanned<u64>>,
    /// How long an idle kept-alive backend connection stays pooled. Default 60000.
    pub idle_ms: Option<Spanned<u64>>,
    /// The whole request, from its arrival to the last byte of the response, retries included.
    /// Default: none.
    pub total_ms: Option<Spanned<u64>>,
}

/// `health_check = { … }` of an upstream: a probe of every backend, healthy or not.
#[derive(Debug, Clone, Deserialize)]
pub struct HealthCheckSection {
    /// `http` (default) or `tcp` (a connection that opens is healthy).
    pub kind: Option<Spanned<String>>,
    /// The request path. Default `/`.
    pub path: Option<Spanned<String>>,
    /// The request method. Default `GET`.
    pub method: Option<Spanned<String>>,
    /// The Host header. Default: the backend's address.
    pub host: Option<Spanned<String>>,
    /// The statuses that pass, `[lowest, highest]`. Default `[200, 399]`.
    pub expect_status: Option<Spanned<Vec<u16>>>,
    /// A string the response body must contain (the first 64 KiB are read).
    pub expect_body: Option<Spanned<String>>,
    /// Probe this port instead of the backend's.
    pub port: Option<Spanned<u16>>,
    /// Time between probes of one backend. Default 10000.
    pub interval_ms: Option<Spanned<u64>>,
    /// Time one probe may take. Default 5000.
    pub timeout_ms: Option<Spanned<u64>>,
    /// Passing probes in a row that bring an unhealthy backend back. Default 2.
    pub healthy_threshold: Option<Spanned<u32>>,
    /// Failing probes in a row that take a healthy backend out. Default 3.
    pub unhealthy_threshold: Option<Spanned<u32>>,
}

/// `outlier = { … }` of an upstream: a backend whose requests fail this many times in a row
/// (connection failures, timeouts, 5xx answers) is ejected for a while, longer each time.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OutlierSection {
    /// Default true.
    pub enabled: Option<bool>,
    /// Failures in a row that eject a backend. Default 5.
    pub consecutive_failures: Option<Spanned<u32>>,
    /// The first ejection's length; each further ejection doubles it. Default 30000.
    pub base_ejection_ms: Option<Spanned<u64>>,
    /// The longest ejection. Default 300000.
    pub max_ejection_ms: Option<Spanned<u64>>,
    /// The largest share of the upstream's backends ejected at once. Default 50.
    pub max_ejected_percent: Option<Spanned<u32>>,
}

/// `retries = { … }` of an upstream. A connection that could not be opened, or a pooled one that
/// failed before the backend received anything, is always tried again on another backend.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RetriesSection {
    /// Attempts after the first. Default 2.
    pub max_retries: Option<Spanned<u32>>,
    /// Also retry idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) that failed
    /// later (a reset or timeout before any response byte). Default false.
    #[serde(default)]
    pub idempotent: bool,
    /// Retries are at most this share of the upstream's requests (plus a reserve of 10), so a
    /// failing upstream is not sent a storm of retries. Default 20.
    pub budget_percent: Option<Spanned<u32>>,
}

/// One backend of an upstream: `{ address = "10.0.0.1:80", weight = 2, tags = ["a"] }`.
#[derive(Debug, Clone, Deserialize)]
pub struct BackendSection {
    pub address: Spanned<String>,
    /// Relative weight for weighted balancers; at least 1. Default 1.
    pub weight: Option<Spanned<u32>>,
    /// Labels a split can select (`tag("b")`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Send no new requests to this backend; requests in progress finish. Default false.
    #[serde(default)]
    pub drain: bool,
}

/// `[[tcp]]`: a TCP listener whose connections go, byte for byte, to a backend of an upstream
/// (picked by its balancer among the healthy ones).
#[derive(Debug, Clone, Deserialize)]
pub struct TcpSection {
    /// The route's name in logs and metrics. Default: the listen address.
    pub name: Option<Spanned<String>>,
    /// Where it listens (`ip:port`).
    pub listen: Spanned<String>,
    /// The `[[upstream]]` whose backends take the connections.
    pub upstream: Spanned<String>,
}

/// `[[site]]`: a set of host names with their routes.
#[derive(Debug, Clone, Deserialize)]
pub struct SiteSection {
    /// Used in route names and logs. Default: the first host.
    pub name: Option<Spanned<String>>,
    /// Exact names, `*.example.com` wildcards (any depth of subdomain), or `*` (any other host).
    pub hosts: Spanned<Vec<Spanned<String>>>,
    /// Request filters run on this site's requests after routing, before the route's own.
    #[serde(default)]
    pub request_filters: Vec<Spanned<String>>,
    /// Response filters run on this site's responses after the route's own.
    #[serde(default)]
    pub response_filters: Vec<Spanned<String>>,
    /// Header policy keys merged over the server's (or `false` for none on this site).
    pub header_policy: Option<Spanned<HeaderPolicy>>,
    /// Where the site's certificate comes from. Default: `[tls]`'s source (self-signed, ACME)
    /// or none.
    pub tls: Option<Spanned<SiteTls>>,
    /// Redirect this site's plain HTTP requests to HTTPS. Default: with `strategy =
    /// "https-only"`, when the site has a certificate.
    pub http_to_https: Option<Spanned<bool>>,
    /// The routes, filled from `[[site.route]]` (read separately, to report each one's problems).
    #[serde(skip)]
    pub routes: Vec<Spanned<RouteSection>>,
}

/// `[[site.route]]`: a path prefix and matchers, and where matching requests go.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteSection {
    /// The route's name in logs and metrics. Default `<site>/<index>`.
    pub name: Option<Spanned<String>>,
    /// Matches the path itself and everything below it (`/api` matches `/api` and `/api/x`, not
    /// `/apix`). Default `/`.
    pub path_prefix: Option<Spanned<String>>,
    /// Only these methods match. Default: any.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Header name → exact value, or `true` for "present with any value".
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<MatchValue>>,
    /// Query parameter → exact value, or `true` for "present".
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<MatchValue>>,
    /// The `[[upstream]]` to proxy to.
    pub upstream: Spanned<String>,
    /// Remove the matched prefix from the path before proxying. Default false.
    #[serde(default)]
    pub strip_prefix: bool,
    /// A plugin with the split role that picks a variant for this route's requests: a name, or
    /// an inline table of the built-in `split` plugin's keys (`plugin = "…"` names another).
    pub split: Option<Spanned<PluginRef>>,
    /// Header policy keys merged over the site's (or `false` for none on this route).
    pub header_policy: Option<Spanned<HeaderPolicy>>,
    /// Request filters run after the site's.
    #[serde(default)]
    pub request_filters: Vec<Spanned<String>>,
    /// Response filters run before the site's.
    #[serde(default)]
    pub response_filters: Vec<Spanned<String>>,
    /// The largest request body, in bytes; larger gets 413. Default: `[server] limits`'s.
    pub max_body_bytes: Option<Spanned<u64>>,
}

/// A reference to a plugin: its name, or an inline table configuring one for this place only.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginRef {
    /// A built-in or `[[plugin]]` name, used with its own configuration.
    Named(String),
    /// `plugin` (a built-in or `[[plugin]]` name; `None` for the place's default) configured with
    /// the table's other keys, merged over the plugin's own configuration.
    Inline { plugin: Option<String>, config: serde_json::Map<String, serde_json::Value> },
}

impl PluginRef {
    /// The plugin this refers to, or `default` when an inline table names none.
    pub fn plugin_name<'a>(&'a self, default: &'a str) -> &'a str {
        match self {
            PluginRef::Named(name) => name,
            PluginRef::Inline { plugin, .. } => plugin.as_deref().unwrap_or(default),
        }
    }
}

impl<'de> Deserialize<'de> for PluginRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PluginRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a plugin name or an inline table of its configuration")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PluginRef, E> {
                Ok(PluginRef::Named(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PluginRef, A::Error> {
                let mut config: serde_json::Map<String, serde_json::Value> =
                    Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let plugin = match config.remove("plugin") {
                    None => None,
                    Some(serde_json::Value::String(name)) => Some(name),
                    Some(_) => return Err(serde::de::Error::custom("`plugin` must be a plugin name")),
                };
                Ok(PluginRef::Inline { plugin, config })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A `header_policy` setting: `false` (no header policy here), `true` (the defaults) or a table of
/// the built-in `headers` plugin's keys.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderPolicy {
    Off,
    Keys(serde_json::Map<String, serde_json::Value>),
}

impl<'de> Deserialize<'de> for HeaderPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HeaderPolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("false, true, or a table of header policy keys")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<HeaderPolicy, E> {
                Ok(if v { HeaderPolicy::Keys(Default::default()) } else { HeaderPolicy::Off })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<HeaderPolicy, A::Error> {
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(HeaderPolicy::Keys)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A matcher value: an exact string, or `true` for presence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum MatchValue {
    Exact(String),
    Present(bool),
}

impl<'de> Deserialize<'de> for MatchValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MatchValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string (exact value) or true (present)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MatchValue, E> {
                Ok(MatchValue::Exact(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<MatchValue, E> {
                if v { Ok(MatchValue::Present(true)) } else { Err(E::custom("use true (present) or a string value")) }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[[plugin]]`: a user plugin, or a built-in under another name with its own config.
#[derive(Debug, Clone, Deserialize)]
pub struct PluginSection {
    /// How routes, upstreams and chains refer to it.
    pub name: Spanned<String>,
    /// A component file, relative to the configuration file. Exactly one of `path`/`builtin`.
    pub path: Option<Spanned<String>>,
    /// A built-in plugin's name (`router`, `round-robin`…).
    pub builtin: Option<Spanned<String>>,
    /// The component's expected sha256 (hex); loading fails when it differs.
    pub sha256: Option<Spanned<String>>,
    /// The roles to use. Default: every role the component exports. A `router` plugin replaces
    /// the built-in router.
    pub roles: Option<Vec<Spanned<String>>>,
    /// Handed to the plugin's `configure` as JSON. Default `{}`.
    pub config: Option<serde_json::Value>,
    /// `closed` (default: the request fails) or `open` (the plugin is skipped).
    #[serde(default)]
    pub failure: FailurePolicy,
    /// Deadline of one call, in milliseconds. Default 5.
    pub timeout_ms: Option<Spanned<u64>>,
    /// Memory cap of one instance, in MiB. Default 32.
    pub memory_limit_mb: Option<Spanned<u64>>,
}
