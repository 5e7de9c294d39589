//! The SNI resolver the HTTPS listeners use: on each handshake, the running generation's plan
//! picks the site for the name the client asked for, and the runtime supplies that site's
//! certificate. A name no site with a certificate serves gets the default host's certificate
//! if one is configured, and otherwise no certificate (the handshake fails): never another
//! site's certificate by accident.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::runtime::TlsRuntime;
use crate::generation::Generation;

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

pub struct SniResolver {
    pub current: Arc<ArcSwap<Generation>>,
    pub runtime: Arc<TlsRuntime>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl SniResolver {
    /// The certificate for a handshake naming `sni` (None: no SNI).
    pub fn certificate(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let generation = self.current.load();
        let plan = &generation.tls;
        if let Some(name) = sni
            && let Some(site) = plan.site_for(name)
            && let Some(cert) = self.runtime.certificate_for(plan, site, name)
        {
            return Some(cert);
        }
        let default = plan.default_host.as_deref()?;
        let site = plan.site_for(default)?;
        self.runtime.certificate_for(plan, site, default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN)) {
            return self.runtime.alpn_challenge(hello.server_name()?);
        }
        self.certificate(hello.server_name())
    }
}
