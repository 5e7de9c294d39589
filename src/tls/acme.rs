//! ACME issuance and renewal (instant-acme). One manager task per process watches the running
//! generation: every site whose certificate comes from ACME gets one, ordered with the
//! generation's account and challenge type, stored under the storage directory and swapped in
//! for new handshakes without a restart. A failure keeps the current certificate serving and
//! retries with a growing backoff.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::material::{Material, unix_now};
use super::plan::{AcmeSettings, CertSource, Challenge, EXPIRY_WARNING_S, SiteTlsPlan, TlsPlan};
use super::runtime::TlsRuntime;
use super::storage::{Access, Storage, write_file};
use crate::generation::Generation;

/// The first retry after a failure waits this long; each further failure doubles it.
const BACKOFF_BASE_S: i64 = 60;
/// The longest wait between attempts.
const BACKOFF_MAX_S: i64 = 12 * 3600;
/// How long one order may take to validate and to be issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the manager looks at the generation and the certificates' ages.
const TICK: Duration = Duration::from_secs(1);

/// Seconds before the end of validity at which a certificate of `lifetime_s` is renewed: when a
/// third of its lifetime is left or 30 days, whichever comes first, but never past half of its
/// lifetime (so a short-lived certificate is not renewed as soon as it is issued).
pub fn renewal_window_s(lifetime_s: i64) -> i64 {
    (lifetime_s / 3).max((30 * 86_400).min(lifetime_s / 2))
}

/// The wait before attempt `failures + 1`.
pub fn backoff_s(failures: u32) -> i64 {
    (BACKOFF_BASE_S << failures.saturating_sub(1).min(20)).min(BACKOFF_MAX_S)
}

/// Why a certificate is ordered now, if it is.
fn order_reason(runtime: &TlsRuntime, dir: &Path, hosts: &[String], now: i64) -> Option<&'static str> {
    runtime.load_stored(dir, hosts);
    let managed = runtime.managed(dir);
    if now < managed.status.next_attempt_at {
        return None;
    }
    if managed.status.forced {
        return Some("renewal requested");
    }
    match &managed.material {
        None => Some("no certificate yet"),
        Some(m) if !hosts.iter().all(|h| m.info.covers(h)) => Some("the site's hosts changed"),
        Some(m) if m.info.remaining_s(now) <= renewal_window_s(m.info.not_after - m.info.not_before) => {
            Some("renewal due")
        }
        Some(_) => None,
    }
}

/// Starts the manager on a thread of its own.
pub fn start(runtime: Arc<TlsRuntime>, current: Arc<ArcSwap<Generation>>) -> std::io::Result<()> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("switchyard-acme".into()).spawn(move || {
        tokio.block_on(Manager { runtime, current, accounts: HashMap::new(), warned: HashMap::new() }.run())
    })?;
    Ok(())
}

struct Manager {
    runtime: Arc<TlsRuntime>,
    current: Arc<ArcSwap<Generation>>,
    /// By directory URL.
    accounts: HashMap<String, Account>,
    /// When each certificate's expiry was last warned about (unix seconds), by serial.
    warned: HashMap<String, i64>,
}

impl Manager {
    async fn run(mut self) {
        loop {
            let generation = self.current.load_full();
            let plan = &generation.tls;
            if let Some(settings) = &plan.acme {
                for site in plan.sites.iter().filter(|s| matches!(s.source, CertSource::Acme)) {
                    let Some(dir) = TlsRuntime::acme_dir(plan, site) else { continue };
                    let Some(reason) = order_reason(&self.runtime, &dir, &site.hosts, unix_now()) else { continue };
                    tracing::info!(site = %site.site, hosts = ?site.hosts, reason, "ordering a certificate from {}", settings.directory_url);
                    match self.order(settings, &plan.storage, site, &dir).await {
                        Ok(material) => {
                            tracing::info!(
                                site = %site.site,
                                not_after = material.info.not_after,
                                serial = %material.info.serial,
                                "certificate issued and serving"
                            );
                            self.runtime.install(&dir, material);
                        }
                        Err(e) => {
                            let serving = self.runtime.managed(&dir).material.is_some();
                            tracing::error!(
                                site = %site.site,
                                hosts = ?site.hosts,
                                "certificate order failed ({}): {e}",
                                if serving { "the current certificate keeps serving" } else { "the site has no certificate yet" }
                            );
                            self.runtime.record_failure(&dir, e, backoff_s);
                        }
                    }
                }
            }
            self.warn_expiring(plan);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.runtime.wake.notified() => {}
            }
        }
    }

    /// Logs a warning (at most once a day per certificate) for certificates ending within
    /// [`EXPIRY_WARNING_S`].
    fn warn_expiring(&mut self, plan: &TlsPlan) {
        let now = unix_now();
        for site in &plan.sites {
            let Some(material) = self.runtime.material_of(plan, site) else { continue };
            let left = material.info.remaining_s(now);
            if left >= EXPIRY_WARNING_S {
                continue;
            }
            let last = self.warned.entry(material.info.serial.clone()).or_insert(0);
            if now - *last >= 86_400 {
                *last = now;
                tracing::warn!(
                    site = %site.site,
                    source = site.source.kind(),
                    seconds_left = left,
                    "the site's certificate {}",
                    if left <= 0 { "has expired" } else { "expires soon" }
                );
            }
        }
    }

    /// The account for `settings`' ACME server: cached, else restored from storage, else
    /// created (and its credentials stored, mode 0600).
    async fn account(&mut self, settings: &AcmeSettings, storage: &Storage) -> Result<Account, String> {
        if let Some(account) = self.accounts.get(&settings.directory_url) {
            return Ok(account.clone());
        }
        let builder = || match &settings.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        let path = storage.acme_account(&settings.directory_url);
        let account = if let Ok(text) = std::fs::read_to_string(&path) {
            let credentials: AccountCredentials =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            builder()
                .map_err(|e| format!("ACME client: {e}"))?
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("cannot restore the ACME account stored in {}: {e}", path.display()))?
        } else {
            let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
            let (account, credentials) = builder()
                .map_err(|e| format!("ACME client: {e}"))?
                .create(&new, settings.directory_url.clone(), None)
                .await
                .map_err(|e| format!("cannot create an ACME account at {}: {e}", settings.directory_url))?;
            let json = serde_json::to_vec_pretty(&credentials).map_err(|e| e.to_string())?;
            write_file(&path, &json, Access::Private).map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(account = account.id(), "created an ACME account (credentials in {})", path.display());
            account
        };
        self.accounts.insert(settings.directory_url.clone(), account.clone());
        Ok(account)
    }

    /// Orders a certificate for `site`'s hosts and stores it in `dir`.
    async fn order(
        &mut self,
        settings: &AcmeSettings,
        storage: &Storage,
        site: &SiteTlsPlan,
        dir: &Path,
    ) -> Result<Material, String> {
        let account = self.account(settings, storage).await?;
        let identifiers: Vec<Identifier> = site.hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(|e| format!("new order: {e}"))?;
        let mut pending = PendingChallenges { runtime: &self.runtime, tokens: Vec::new(), hosts: Vec::new() };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("an authorization is {other:?}")),
            }
            let host = authorization.identifier().to_string();
            let kind = match settings.challenge {
                Challenge::Http01 => ChallengeType::Http01,
                Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| format!("the CA offers no {kind:?} challenge for {host}"))?;
            let key_authorization = challenge.key_authorization();
            match settings.challenge {
                Challenge::Http01 => {
                    self.runtime.add_http_challenge(&challenge.token, key_authorization.as_str());
                    pending.tokens.push(challenge.token.clone());
                }
                Challenge::TlsAlpn01 => {
                    let certificate = super::alpn_challenge::certificate(&host, key_authorization.digest().as_ref())?;
                    self.runtime.add_alpn_challenge(&host, certificate);
                    pending.hosts.push(host.clone());
                }
            }
            challenge.set_ready().await.map_err(|e| format!("challenge for {host}: {e}"))?;
        }
        let retries = RetryPolicy::new().initial_delay(Duration::from_millis(250)).backoff(1.5).timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await.map_err(|e| format!("validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!("validation failed: the order is {status:?}"));
        }
        drop(pending);
        let key_pem = order.finalize().await.map_err(|e| format!("finalize: {e}"))?;
        let chain_pem = order.poll_certificate(&retries).await.map_err(|e| format!("certificate: {e}"))?;
        let material = Material::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
        // The key first: a crash in between leaves a new key with the old certificate, which
        // loading refuses (and the order is made again), never a certificate without its key.
        write_file(&dir.join("key.pem"), key_pem.as_bytes(), Access::Private)
            .map_err(|e| format!("storing the key in {}: {e}", dir.display()))?;
        write_file(&dir.join("cert.pem"), chain_pem.as_bytes(), Access::Public)
            .map_err(|e| format!("storing the certificate in {}: {e}", dir.display()))?;
        Ok(material)
    }
}

/// Removes an order's challenge answers when it ends, however it ends.
struct PendingChallenges<'a> {
    runtime: &'a TlsRuntime,
    tokens: Vec<String>,
    hosts: Vec<String>,
}

impl Drop for PendingChallenges<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.runtime.remove_http_challenge(token);
        }
        for host in &self.hosts {
            self.runtime.remove_alpn_challenge(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_starts_at_a_third_or_thirty_days_but_never_in_the_first_half() {
        let day = 86_400;
        assert_eq!(renewal_window_s(90 * day), 30 * day);
        assert_eq!(renewal_window_s(365 * day), 365 * day / 3);
        assert_eq!(renewal_window_s(45 * day), 45 * day / 2);
        assert_eq!(renewal_window_s(6 * day), 3 * day);
        assert_eq!(renewal_window_s(60), 30);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff_s(1), 60);
        assert_eq!(backoff_s(2), 120);
        assert_eq!(backoff_s(5), 960);
        assert_eq!(backoff_s(40), BACKOFF_MAX_S);
    }
}
