//! The process's TLS state that outlives generations: ACME certificates issued or loaded from
//! storage, pending ACME challenges, local CAs, and each managed certificate's renewal status.
//! The SNI resolver reads it on every handshake; the ACME manager writes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::sign::CertifiedKey;
use serde::Serialize;

use super::local_ca::LocalCa;
use super::material::{Material, unix_now};
use super::plan::{CertSource, SiteTlsPlan, TlsPlan};

/// The renewal state of one ACME-managed certificate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AcmeStatus {
    /// Failed attempts in a row (issue or renewal).
    pub failures: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Unix seconds of the last failure.
    pub last_failure_at: Option<i64>,
    /// No attempt before this (unix seconds): the backoff after failures.
    pub next_attempt_at: i64,
    /// Unix seconds of the last successful issue.
    pub issued_at: Option<i64>,
    /// An operator asked for a renewal now.
    pub forced: bool,
}

/// One ACME-managed certificate: the material serving (if any) and its status.
#[derive(Debug, Clone, Default)]
pub struct Managed {
    pub material: Option<Material>,
    pub status: AcmeStatus,
}

/// Shared TLS state; see the module documentation.
#[derive(Default)]
pub struct TlsRuntime {
    /// By certificate directory (see [`TlsRuntime::acme_dir`]).
    acme: RwLock<HashMap<PathBuf, Managed>>,
    /// HTTP-01: token → key authorization.
    http_challenges: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: host → the challenge certificate.
    alpn_challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// By storage directory.
    local_cas: Mutex<HashMap<PathBuf, Arc<LocalCa>>>,
    /// Wakes the ACME manager (a renewal request).
    pub wake: tokio::sync::Notify,
}

impl std::fmt::Debug for TlsRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRuntime").finish_non_exhaustive()
    }
}

impl TlsRuntime {
    /// The directory an ACME certificate of `site` is stored in, under `plan`'s ACME server.
    pub fn acme_dir(plan: &TlsPlan, site: &SiteTlsPlan) -> Option<PathBuf> {
        let acme = plan.acme.as_ref()?;
        let first = site.hosts.first()?;
        Some(plan.storage.acme_certificate_dir(&acme.directory_url, first))
    }

    /// Gets ready to serve `plan`: creates its local CA if a site needs one (printing where it
    /// is, so a user can trust it) and loads stored ACME certificates, so a restart serves
    /// them at once without asking the CA.
    /// Returns the local CA's certificate file, if a site uses it.
    pub fn prepare(&self, plan: &TlsPlan) -> Result<Option<PathBuf>, String> {
        let mut ca_path = None;
        if plan.uses_local_ca() {
            ca_path = Some(self.local_ca(&plan.storage.local_ca_dir())?.cert_path.clone());
        }
        for site in plan.sites.iter().filter(|s| matches!(s.source, CertSource::Acme)) {
            if let Some(dir) = Self::acme_dir(plan, site) {
                self.load_stored(&dir, &site.hosts);
            }
        }
        Ok(ca_path)
    }

    /// Loads the certificate stored in `dir` unless one is already held; a stored certificate
    /// that does not cover every host (the site's names changed) is left for reissue.
    pub fn load_stored(&self, dir: &Path, hosts: &[String]) {
        if self.acme.read().unwrap_or_else(|e| e.into_inner()).get(dir).is_some_and(|m| m.material.is_some()) {
            return;
        }
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() {
            return;
        }
        match Material::from_files(&cert, &key) {
            Ok(material) if hosts.iter().all(|h| material.info.covers(h)) => {
                tracing::info!(dir = %dir.display(), not_after = material.info.not_after, "loaded a stored ACME certificate");
                self.acme.write().unwrap_or_else(|e| e.into_inner()).entry(dir.to_path_buf()).or_default().material =
                    Some(material);
            }
            Ok(material) => tracing::info!(
                dir = %dir.display(),
                names = ?material.info.names,
                "the stored certificate does not cover the site's hosts any more; a new one will be ordered"
            ),
            Err(e) => tracing::warn!("cannot load the stored certificate: {e}"),
        }
    }

    /// The local CA kept in `dir`, loaded or created on first use.
    pub fn local_ca(&self, dir: &Path) -> Result<Arc<LocalCa>, String> {
        let mut cas = self.local_cas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ca) = cas.get(dir) {
            return Ok(ca.clone());
        }
        let ca = Arc::new(LocalCa::open_or_create(dir)?);
        cas.insert(dir.to_path_buf(), ca.clone());
        Ok(ca)
    }

    /// The certificate `site` serves for `name` (the SNI, or the default host), if it has one.
    pub fn certificate_for(&self, plan: &TlsPlan, site: &SiteTlsPlan, name: &str) -> Option<Arc<CertifiedKey>> {
        match &site.source {
            CertSource::Files { material, .. } => Some(material.certified.clone()),
            CertSource::Acme => {
                let dir = Self::acme_dir(plan, site)?;
                let acme = self.acme.read().unwrap_or_else(|e| e.into_inner());
                acme.get(&dir)?.material.as_ref().map(|m| m.certified.clone())
            }
            CertSource::SelfSigned => {
                let ca = self.local_ca(&plan.storage.local_ca_dir()).ok()?;
                match ca.certificate_for(name) {
                    Ok(m) => Some(m.certified),
                    Err(e) => {
                        tracing::warn!(host = name, "cannot issue a self-signed certificate: {e}");
                        None
                    }
                }
            }
            CertSource::None => None,
        }
    }

    /// The material serving `site` now (for views and metrics; self-signed sites report the
    /// certificate of their first named host once one was issued).
    pub fn material_of(&self, plan: &TlsPlan, site: &SiteTlsPlan) -> Option<Material> {
        match &site.source {
            CertSource::Files { material, .. } => Some(material.clone()),
            CertSource::Acme => {
                let dir = Self::acme_dir(plan, site)?;
                self.acme.read().unwrap_or_else(|e| e.into_inner()).get(&dir)?.material.clone()
            }
            CertSource::SelfSigned => {
                let ca =
                    self.local_cas.lock().unwrap_or_else(|e| e.into_inner()).get(&plan.storage.local_ca_dir())?.clone();
                let issued = ca.issued();
                site.hosts
                    .iter()
                    .find_map(|h| issued.iter().find(|(name, _)| h == "*" || super::material::name_matches(h, name)))
                    .map(|(_, m)| m.clone())
            }
            CertSource::None => None,
        }
    }

    /// A copy of the ACME state of the certificate in `dir`.
    pub fn managed(&self, dir: &Path) -> Managed {
        self.acme.read().unwrap_or_else(|e| e.into_inner()).get(dir).cloned().unwrap_or_default()
    }

    /// Serves newly issued `material` from `dir` (already stored on disk).
    pub fn install(&self, dir: &Path, material: Material) {
        let mut acme = self.acme.write().unwrap_or_else(|e| e.into_inner());
        let managed = acme.entry(dir.to_path_buf()).or_default();
        managed.material = Some(material);
        managed.status = AcmeStatus { issued_at: Some(unix_now()), ..AcmeStatus::default() };
    }

    /// Records a failed issue or renewal; the current certificate (if any) keeps serving. The
    /// next attempt waits `backoff_s`.
    pub fn record_failure(&self, dir: &Path, error: String, backoff_s: impl Fn(u32) -> i64) {
        let mut acme = self.acme.write().unwrap_or_else(|e| e.into_inner());
        let status = &mut acme.entry(dir.to_path_buf()).or_default().status;
        status.failures += 1;
        let now = unix_now();
        status.last_error = Some(error);
        status.last_failure_at = Some(now);
        status.next_attempt_at = now + backoff_s(status.failures);
        status.forced = false;
    }

    /// Asks for the certificate in `dir` to be renewed now (backoff included).
    pub fn request_renewal(&self, dir: &Path) {
        let mut acme = self.acme.write().unwrap_or_else(|e| e.into_inner());
        let status = &mut acme.entry(dir.to_path_buf()).or_default().status;
        status.forced = true;
        status.next_attempt_at = 0;
        drop(acme);
        self.wake.notify_one();
    }

    /// Answers an HTTP-01 challenge: the key authorization for `token`.
    pub fn http_challenge(&self, token: &str) -> Option<String> {
        self.http_challenges.read().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }

    pub fn add_http_challenge(&self, token: &str, key_authorization: &str) {
        self.http_challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove_http_challenge(&self, token: &str) {
        self.http_challenges.write().unwrap_or_else(|e| e.into_inner()).remove(token);
    }

    /// The TLS-ALPN-01 certificate for `host`, while its challenge is pending.
    pub fn alpn_challenge(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn_challenges.read().unwrap_or_else(|e| e.into_inner()).get(&host.to_ascii_lowercase()).cloned()
    }

    pub fn add_alpn_challenge(&self, host: &str, certificate: Arc<CertifiedKey>) {
        self.alpn_challenges.write().unwrap_or_else(|e| e.into_inner()).insert(host.to_ascii_lowercase(), certificate);
    }

    pub fn remove_alpn_challenge(&self, host: &str) {
        self.alpn_challenges.write().unwrap_or_else(|e| e.into_inner()).remove(&host.to_ascii_lowercase());
    }

    /// Whether a TLS-ALPN-01 challenge is pending (handshakes are only inspected then).
    pub fn alpn_challenges_pending(&self) -> bool {
        !self.alpn_challenges.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}
