//! TLS to upstreams: which name is sent and verified, which CAs are trusted (the system's, or
//! a per-upstream file), or, by explicit choice, no verification. Requests and active health
//! probes connect through Pingora's connector with the same peer settings.

use std::path::Path;
use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::utils::tls::WrappedX509;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use pingora::upstreams::peer::HttpPeer;

use crate::config::model::UpstreamTls;

/// An upstream's TLS settings, ready for each connection.
#[derive(Clone)]
pub struct UpstreamTlsSettings {
    /// The SNI and verified name; `None`: the backend address's host.
    pub sni: Option<String>,
    pub verify: bool,
    /// The trusted CAs when not the system's.
    pub ca: Option<Arc<CaType>>,
}

impl std::fmt::Debug for UpstreamTlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsSettings")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl UpstreamTlsSettings {
    /// The settings `tls` asks for, with `ca` relative to `base_dir`.
    pub fn from_config(tls: &UpstreamTls, base_dir: &Path) -> Result<UpstreamTlsSettings, String> {
        let ca = match &tls.ca {
            Some(file) => {
                let path = base_dir.join(file);
                let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!("{} holds no certificate", path.display()));
                }
                let mut wrapped = Vec::new();
                for cert in certs {
                    wrapped.push(WrappedX509::new(cert.to_vec(), pingora::utils::tls::parse_x509));
                }
                Some(Arc::from(wrapped.into_boxed_slice()))
            }
            // Pingora's connector trusts the system's CAs.
            None => None,
        };
        Ok(UpstreamTlsSettings { sni: tls.sni.clone(), verify: tls.verify, ca })
    }

    /// A peer for the backend at `address`, configured as `label`, over TLS.
    pub fn peer(&self, address: std::net::SocketAddr, label: &str) -> HttpPeer {
        let mut peer = HttpPeer::new(address, true, self.sni_for(label));
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.clone();
        peer
    }

    /// The name for a backend configured as `label` (`host:port`).
    pub fn sni_for(&self, label: &str) -> String {
        if let Some(sni) = &self.sni {
            return sni.clone();
        }
        let host = label.rsplit_once(':').map_or(label, |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']').to_string()
    }
}
