//! A generation's TLS plan: the listeners' strategy, each site's certificate source and
//! redirect rule, the host index SNI and redirects look names up in, and the ACME settings.
//! Built (and its manual certificate files read) with the rest of a generation, so a reload
//! that names a broken certificate file is refused with the old plan still serving.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::config::Collector;
use crate::config::model::{ConfigFile, SiteTls};

use super::material::{Material, unix_now};
use super::storage::Storage;

/// Let's Encrypt's production directory.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The storage directory, relative to the configuration file, by default.
pub const DEFAULT_STORAGE_DIR: &str = "switchyard-data";
/// The HTTPS listener `run --dev` adds when the configuration has none.
pub const DEV_TLS_LISTEN: &str = "127.0.0.1:8443";
/// A manual certificate with less than this left is warned about at load.
pub const EXPIRY_WARNING_S: i64 = 14 * 86_400;

/// What the HTTP and HTTPS listeners do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// HTTPS serves; plain HTTP answers ACME challenges and redirects everything else.
    HttpsOnly,
    /// Both serve; no redirect unless a site asks for one.
    Both,
    /// No TLS at all.
    HttpOnly,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::HttpsOnly => "https-only",
            Strategy::Both => "both",
            Strategy::HttpOnly => "http-only",
        }
    }
}

/// How ACME proves control of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
}

/// `[tls]`'s ACME settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory_url: String,
    pub email: Option<String>,
    /// The root CA of a private ACME server's HTTPS certificate.
    pub ca_root: Option<PathBuf>,
    pub challenge: Challenge,
}

/// Where a site's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Issued and renewed through ACME (the issued material lives in [`super::TlsRuntime`]).
    Acme,
    /// Issued per host from the local CA.
    SelfSigned,
    /// PEM files named in the configuration, read when the generation was built.
    Files { cert: PathBuf, key: PathBuf, material: Material },
    /// No certificate: the site is served over plain HTTP only.
    None,
}

impl CertSource {
    pub fn kind(&self) -> &'static str {
        match self {
            CertSource::Acme => "acme",
            CertSource::SelfSigned => "self-signed",
            CertSource::Files { .. } => "files",
            CertSource::None => "none",
        }
    }
}

/// One site's TLS.
#[derive(Debug, Clone)]
pub struct SiteTlsPlan {
    pub site: String,
    /// The site's host patterns, lowercase.
    pub hosts: Vec<String>,
    pub source: CertSource,
    /// Plain HTTP requests for this site are redirected to HTTPS.
    pub http_to_https: bool,
}

/// The TLS half of a generation.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    pub strategy: Strategy,
    /// The port redirects name (`None` without HTTPS listeners).
    pub https_port: Option<u16>,
    pub sites: Vec<SiteTlsPlan>,
    /// The host whose certificate answers handshakes naming no known host.
    pub default_host: Option<String>,
    pub acme: Option<AcmeSettings>,
    pub storage: Storage,
    exact: HashMap<String, usize>,
    /// `(".example.com", site)`, longest suffix first.
    wildcards: Vec<(String, usize)>,
    catch_all: Option<usize>,
}

impl TlsPlan {
    /// A plan with no TLS (embedded proxies, the demo).
    pub fn plain() -> TlsPlan {
        TlsPlan {
            strategy: Strategy::HttpOnly,
            https_port: None,
            sites: Vec::new(),
            default_host: None,
            acme: None,
            storage: Storage { root: PathBuf::from(DEFAULT_STORAGE_DIR) },
            exact: HashMap::new(),
            wildcards: Vec::new(),
            catch_all: None,
        }
    }

    /// The site serving `host` (the most specific pattern: exact, longest wildcard, `*`).
    pub fn site_for(&self, host: &str) -> Option<&SiteTlsPlan> {
        let host = host.trim_end_matches('.');
        // Lowercase only names that need it (a plain HTTP request asks this every time).
        let host: std::borrow::Cow<'_, str> =
            if host.bytes().any(|b| b.is_ascii_uppercase()) { host.to_ascii_lowercase().into() } else { host.into() };
        let index = self.exact.get(host.as_ref()).copied().or_else(|| {
            self.wildcards
                .iter()
                .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                .map(|(_, i)| *i)
        });
        index.or(self.catch_all).map(|i| &self.sites[i])
    }

    /// Whether a plain HTTP request for `host` is redirected to HTTPS.
    pub fn redirects(&self, host: &str) -> bool {
        if self.https_port.is_none() {
            return false;
        }
        match self.site_for(host) {
            Some(site) => site.http_to_https,
            // A host no site serves: "everything" goes to HTTPS under https-only.
            None => self.strategy == Strategy::HttpsOnly,
        }
    }

    /// Whether any site's certificate comes from the local CA.
    pub fn uses_local_ca(&self) -> bool {
        self.sites.iter().any(|s| matches!(s.source, CertSource::SelfSigned))
    }
}

static DEV_MODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `run --dev`: self-signed certificates for sites without `tls`, and an HTTPS listener on
/// [`DEV_TLS_LISTEN`] when the configuration has none. Set before the first generation is built.
pub fn set_dev_mode(on: bool) {
    DEV_MODE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `run --dev` is on.
pub fn dev_mode() -> bool {
    DEV_MODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The HTTPS listener addresses `config` asks for (plus the dev listener in dev mode).
pub fn tls_listen(config: &ConfigFile) -> Vec<std::net::SocketAddr> {
    let configured: Vec<_> = config.server.tls_listen.iter().filter_map(|l| l.get_ref().parse().ok()).collect();
    if configured.is_empty() && dev_mode() && strategy_name(config) != Some("http-only") {
        return DEV_TLS_LISTEN.parse().into_iter().collect();
    }
    configured
}

fn strategy_name(config: &ConfigFile) -> Option<&str> {
    config.server.strategy.as_ref().map(|s| s.get_ref().as_str())
}

/// Builds the plan of a validated `config` (paths relative to `base_dir`), reading manual
/// certificates; problems go to `c`.
pub fn build(config: &ConfigFile, base_dir: &Path, c: &mut Collector<'_>) -> TlsPlan {
    let tls = &config.tls;
    let listen = tls_listen(config);
    let dev = dev_mode();
    let strategy = match strategy_name(config) {
        Some("https-only") => Strategy::HttpsOnly,
        Some("both") => Strategy::Both,
        Some("http-only") => Strategy::HttpOnly,
        other => {
            if let (Some(name), Some(s)) = (other, &config.server.strategy) {
                c.error(s.span(), format!("unknown strategy `{name}` (expected https-only, both or http-only)"));
            }
            default_strategy(&listen, dev)
        }
    };
    if strategy == Strategy::HttpOnly
        && let Some(first) = config.server.tls_listen.first()
    {
        c.error(first.span(), "strategy = \"http-only\" serves no TLS: remove tls_listen or choose https-only or both");
    }
    if strategy != Strategy::HttpOnly && listen.is_empty() {
        let span = config.server.strategy.as_ref().map_or(0..0, |s| s.span());
        c.error(
            span,
            format!("strategy = \"{}\" needs an HTTPS listener: add tls_listen = [\"0.0.0.0:443\"]", strategy.as_str()),
        );
    }
    for l in &config.server.tls_listen {
        let Ok(addr) = l.get_ref().parse::<std::net::SocketAddr>() else {
            c.error(l.span(), format!("tls_listen address `{}` is not ip:port (e.g. 0.0.0.0:443)", l.get_ref()));
            continue;
        };
        if config.server.listen.iter().any(|h| h.get_ref().parse::<std::net::SocketAddr>() == Ok(addr)) {
            c.error(l.span(), format!("{addr} is both an HTTP and an HTTPS listener"));
        }
    }
    let https_port = if strategy == Strategy::HttpOnly {
        None
    } else {
        config.server.https_port.as_ref().map(|p| *p.get_ref()).or(listen.first().map(|a| a.port()))
    };

    let storage_dir = tls.storage_dir.as_ref().map_or(DEFAULT_STORAGE_DIR, |d| d.get_ref().as_str());
    if storage_dir.is_empty() {
        c.error(tls.storage_dir.as_ref().map_or(0..0, |d| d.span()), "storage_dir must not be empty");
    }
    let storage = Storage { root: base_dir.join(storage_dir) };
    let acme_wanted = tls.acme_email.is_some() || tls.acme_directory.is_some();
    let acme = acme_settings(config, base_dir, c);
    let default_source = if tls.self_signed || dev {
        SiteTls::SelfSigned
    } else if acme_wanted {
        SiteTls::Acme
    } else {
        SiteTls::None
    };

    let mut sites = Vec::new();
    for s in &config.sites {
        let s = s.get_ref();
        let hosts: Vec<String> = s.hosts.get_ref().iter().map(|h| h.get_ref().to_ascii_lowercase()).collect();
        let name = s.name.as_ref().map_or_else(|| hosts.first().cloned().unwrap_or_default(), |n| n.get_ref().clone());
        let span = s.tls.as_ref().map_or(s.hosts.span(), |t| t.span());
        let wanted = s.tls.as_ref().map_or(&default_source, |t| t.get_ref());
        let source = match wanted {
            SiteTls::None => CertSource::None,
            _ if strategy == Strategy::HttpOnly => {
                if s.tls.is_some() {
                    c.error(span, "this site has a certificate but the server has no HTTPS listener (tls_listen)");
                }
                CertSource::None
            }
            SiteTls::SelfSigned => CertSource::SelfSigned,
            SiteTls::Acme => {
                if !acme_wanted {
                    c.error(span, "tls = \"acme\" needs [tls] acme_email or acme_directory");
                }
                for (h, pattern) in s.hosts.get_ref().iter().zip(&hosts) {
                    if pattern.contains('*') {
                        c.error(h.span(), format!("ACME cannot issue for `{pattern}` (a wildcard needs the DNS-01 challenge): give this site a certificate file, or list its names"));
                    } else if pattern.parse::<std::net::IpAddr>().is_ok() {
                        c.error(h.span(), format!("ACME certificates are for host names, not the address `{pattern}`"));
                    }
                }
                CertSource::Acme
            }
            SiteTls::Files { cert, key } => {
                let (cert, key) = (base_dir.join(cert), base_dir.join(key));
                match Material::from_files(&cert, &key) {
                    Ok(material) => {
                        check_manual(&material, &name, &hosts);
                        CertSource::Files { cert, key, material }
                    }
                    Err(e) => {
                        c.error(span, e);
                        CertSource::None
                    }
                }
            }
        };
        let has_cert = !matches!(source, CertSource::None);
        let http_to_https = match &s.http_to_https {
            Some(v) if *v.get_ref() && (!has_cert || https_port.is_none()) => {
                c.error(v.span(), "http_to_https needs a certificate for the site and an HTTPS listener");
                false
            }
            Some(v) => *v.get_ref(),
            None => has_cert && strategy == Strategy::HttpsOnly,
        };
        sites.push(SiteTlsPlan { site: name, hosts, source, http_to_https });
    }

    let mut plan = TlsPlan { strategy, https_port, sites, default_host: None, acme, storage, ..TlsPlan::plain() };
    index_hosts(&mut plan);
    if let Some(default) = &tls.default_host {
        match plan.site_for(default.get_ref()) {
            Some(site) if !matches!(site.source, CertSource::None) => {
                plan.default_host = Some(default.get_ref().to_ascii_lowercase())
            }
            _ => c.error(
                default.span(),
                format!("default_host `{}` is not a host of a site with a certificate", default.get_ref()),
            ),
        }
    }
    plan
}

/// The strategy when none is named: https-only with an HTTPS listener (but `both` in dev mode,
/// so plain HTTP keeps working for a developer), else http-only.
fn default_strategy(listen: &[std::net::SocketAddr], dev: bool) -> Strategy {
    match (listen.is_empty(), dev) {
        (true, _) => Strategy::HttpOnly,
        (false, true) => Strategy::Both,
        (false, false) => Strategy::HttpsOnly,
    }
}

fn index_hosts(plan: &mut TlsPlan) {
    for (i, site) in plan.sites.iter().enumerate() {
        for host in &site.hosts {
            if host == "*" {
                plan.catch_all.get_or_insert(i);
            } else if let Some(parent) = host.strip_prefix("*.") {
                plan.wildcards.push((format!(".{parent}"), i));
            } else {
                plan.exact.entry(host.clone()).or_insert(i);
            }
        }
    }
    plan.wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
}

/// Warns about a manual certificate that does not cover its site's names or is about to end.
fn check_manual(material: &Material, site: &str, hosts: &[String]) {
    for host in hosts.iter().filter(|h| *h != "*") {
        let probe = host.strip_prefix("*.").map_or_else(|| host.clone(), |parent| format!("x.{parent}"));
        if !material.info.covers(&probe) {
            tracing::warn!(site, host = %host, names = ?material.info.names, "the site's certificate does not cover this host: clients will refuse it");
        }
    }
    let left = material.info.remaining_s(unix_now());
    if left <= 0 {
        tracing::warn!(site, not_after = material.info.not_after, "the site's certificate has expired");
    } else if left < EXPIRY_WARNING_S {
        tracing::warn!(site, days_left = left / 86_400, "the site's certificate expires soon");
    }
}

fn acme_settings(config: &ConfigFile, base_dir: &Path, c: &mut Collector<'_>) -> Option<AcmeSettings> {
    let tls = &config.tls;
    if tls.acme_email.is_none() && tls.acme_directory.is_none() {
        for (key, span) in [
            ("acme_ca_root", tls.acme_ca_root.as_ref().map(|v| v.span())),
            ("acme_challenge", tls.acme_challenge.as_ref().map(|v| v.span())),
        ] {
            if let Some(span) = span {
                c.error(span, format!("{key} applies to ACME, which needs acme_email or acme_directory"));
            }
        }
        return None;
    }
    let directory_url = match tls.acme_directory.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
        None | Some(("letsencrypt", _)) => LETSENCRYPT.to_string(),
        Some(("letsencrypt-staging", _)) => LETSENCRYPT_STAGING.to_string(),
        Some((url, _)) if url.starts_with("https://") && url.len() > "https://".len() => url.to_string(),
        Some((other, span)) => {
            c.error(
                span,
                format!("acme_directory `{other}` is not letsencrypt, letsencrypt-staging or an https:// URL"),
            );
            return None;
        }
    };
    let email = tls.acme_email.as_ref().map(|e| e.get_ref().clone());
    if let Some(e) = &tls.acme_email
        && !valid_email(e.get_ref())
    {
        c.error(e.span(), format!("acme_email `{}` is not an email address", e.get_ref()));
    }
    let ca_root = tls.acme_ca_root.as_ref().and_then(|r| {
        let path = base_dir.join(r.get_ref());
        check_readable(&path, r.span(), c).then_some(path)
    });
    let challenge = match tls.acme_challenge.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("http-01", _)) => Challenge::Http01,
        Some(("tls-alpn-01", _)) => Challenge::TlsAlpn01,
        Some((other, span)) => {
            c.error(span, format!("acme_challenge `{other}` is not http-01 or tls-alpn-01"));
            Challenge::Http01
        }
    };
    Some(AcmeSettings { directory_url, email, ca_root, challenge })
}

fn valid_email(e: &str) -> bool {
    matches!(e.split_once('@'), Some((user, domain)) if !user.is_empty() && domain.contains('.') && !e.contains(char::is_whitespace))
}

fn check_readable(path: &Path, span: Range<usize>, c: &mut Collector<'_>) -> bool {
    match std::fs::read(path) {
        Ok(_) => true,
        Err(e) => {
            c.error(span, format!("cannot read {}: {e}", path.display()));
            false
        }
    }
}
