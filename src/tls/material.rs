//! Certificate material: a PEM chain and private key turned into what rustls serves
//! ([`CertifiedKey`]), with the facts operators and renewal need (names, validity, issuer).

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names and IP addresses of its subjectAltName (lowercase).
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub issuer: String,
    /// Hexadecimal.
    pub serial: String,
}

impl CertInfo {
    /// Whether the certificate is valid for `host` (a wildcard name covers one label).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|name| name_matches(name, host))
    }

    /// Seconds from `now` (unix seconds) to the end of validity; negative once expired.
    pub fn remaining_s(&self, now: i64) -> i64 {
        self.not_after - now
    }
}

/// Whether certificate name `name` (possibly `*.example.com`) is valid for `host`.
pub fn name_matches(name: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match name.strip_prefix("*.") {
        Some(parent) => {
            host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent))
        }
        None => name.eq_ignore_ascii_case(host),
    }
}

/// A certificate chain with its key, ready to serve.
#[derive(Clone)]
pub struct Material {
    pub certified: Arc<CertifiedKey>,
    pub info: CertInfo,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Material {
    /// Reads a PEM chain (leaf first, then intermediates) and a PEM private key (PKCS#8,
    /// PKCS#1 RSA or SEC1 EC) from files.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Material, String> {
        let chain_pem = std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
        let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
        Material::from_pem(&chain_pem, &key_pem).map_err(|e| format!("{e} ({} and {})", cert.display(), key.display()))
    }

    /// [`Material::from_files`] from PEM text.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Material, String> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate file is not valid PEM: {e}"))?;
        if chain.is_empty() {
            return Err("the certificate file holds no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("no private key found: {e}"))?;
        Material::from_der(chain, key)
    }

    /// A chain and key in DER.
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'_>) -> Result<Material, String> {
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("the private key is not usable (RSA, ECDSA P-256/P-384 or Ed25519): {e}"))?;
        let info = describe(&chain[0])?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| format!("the private key does not belong to the certificate: {e}"))?;
        Ok(Material { certified: Arc::new(certified), info })
    }
}

/// Reads a certificate's names, validity, issuer and serial.
pub fn describe(cert: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => names
                        .push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default()).to_string()),
                    16 => names
                        .push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default()).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    if names.is_empty() {
        // Old certificates name their host only in the subject's common name.
        names
            .extend(parsed.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase));
    }
    Ok(CertInfo {
        names,
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        issuer: parsed.issuer().to_string(),
        serial: parsed.raw_serial_as_string().replace(':', ""),
    })
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn wildcard_names_cover_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "A.Example.com."));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(name_matches("example.com", "EXAMPLE.com"));
    }

    #[test]
    fn a_pem_pair_is_read_with_its_names_and_validity() {
        let (cert, key) = self_signed(&["a.test", "*.b.test"]);
        let m = Material::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(m.info.names, vec!["a.test", "*.b.test"]);
        assert!(m.info.covers("x.b.test") && !m.info.covers("b.test"));
        assert!(m.info.not_after > m.info.not_before);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed(&["a.test"]);
        let (_, other_key) = self_signed(&["a.test"]);
        let e = Material::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let e = Material::from_pem(b"nothing", other_key.as_bytes()).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}
