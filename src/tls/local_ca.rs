//! Self-signed mode: a local CA created once in the storage directory, and certificates for the
//! configured hosts issued from it on the fly (at the first handshake naming each host), so a
//! developer trusts one CA file instead of accepting a warning per host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::material::{Material, unix_now};
use super::storage::{Access, write_file};

/// How long the local CA is valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// How long an issued host certificate is valid (reissued from memory well before it ends).
const LEAF_VALIDITY_DAYS: i64 = 90;
/// A cached host certificate with less than this left is issued again.
const LEAF_REISSUE_S: i64 = 7 * 86_400;

/// The local CA and the host certificates it has issued in this process.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate users add to their trust store.
    pub cert_path: PathBuf,
    issued: RwLock<HashMap<String, Material>>,
}

impl LocalCa {
    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), creating it there the first time.
    pub fn open_or_create(dir: &Path) -> Result<LocalCa, String> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let (common_name, key) = if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
            let cert_pem = std::fs::read(&cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
            (stored_common_name(&cert_pem).map_err(|e| format!("{}: {e}", cert_path.display()))?, key)
        } else {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let common_name = format!("Switchyard local CA {:08x}", rand_u32());
            let cert = ca_params(&common_name).self_signed(&key).map_err(|e| e.to_string())?;
            write_file(&key_path, key.serialize_pem().as_bytes(), Access::Private)
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            write_file(&cert_path, cert.pem().as_bytes(), Access::Public)
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            (common_name, key)
        };
        Ok(LocalCa { issuer: Issuer::new(ca_params(&common_name), key), cert_path, issued: RwLock::default() })
    }

    /// A certificate for `host` (a name or an IP address), issued now or earlier in this process.
    pub fn certificate_for(&self, host: &str) -> Result<Material, String> {
        let host = host.to_ascii_lowercase();
        if let Some(m) = self.issued.read().unwrap_or_else(|e| e.into_inner()).get(&host)
            && m.info.remaining_s(unix_now()) > LEAF_REISSUE_S
        {
            return Ok(m.clone());
        }
        let material = self.issue(&host)?;
        self.issued.write().unwrap_or_else(|e| e.into_inner()).insert(host, material.clone());
        Ok(material)
    }

    /// Forgets the certificates issued so far, so the next handshakes get new ones.
    pub fn forget(&self, host: Option<&str>) {
        let mut issued = self.issued.write().unwrap_or_else(|e| e.into_inner());
        match host {
            Some(h) => {
                issued.remove(&h.to_ascii_lowercase());
            }
            None => issued.clear(),
        }
    }

    /// The certificates issued so far, by host.
    pub fn issued(&self) -> Vec<(String, Material)> {
        self.issued.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(h, m)| (h.clone(), m.clone())).collect()
    }

    fn issue(&self, host: &str) -> Result<Material, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.not_before = time_at(unix_now() - 3600);
        params.not_after = time_at(unix_now() + LEAF_VALIDITY_DAYS * 86_400);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Material::from_der(vec![cert.der().clone()], key_der)
    }
}

/// The parameters the CA certificate was made from; rebuilt identically at every start, so
/// certificates issued later name the same issuer and key identifier.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "Switchyard development");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = time_at(unix_now() - 3600);
    params.not_after = time_at(unix_now() + CA_VALIDITY_DAYS * 86_400);
    params
}

fn stored_common_name(cert_pem: &[u8]) -> Result<String, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = CertificateDer::from_pem_slice(cert_pem).map_err(|e| e.to_string())?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
    cn.map(str::to_string).ok_or_else(|| "the CA certificate has no common name".to_string())
}

fn time_at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = ring_fill(&mut bytes);
    u32::from_le_bytes(bytes)
}

fn ring_fill(bytes: &mut [u8]) -> Result<(), String> {
    rustls::crypto::ring::default_provider().secure_random.fill(bytes).map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_and_its_certificates_chain_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCa::open_or_create(dir.path()).unwrap();
        let ca_pem = std::fs::read(&first.cert_path).unwrap();
        let leaf = first.certificate_for("App.Test").unwrap();
        assert_eq!(leaf.info.names, vec!["app.test"]);
        assert!(leaf.info.issuer.contains("Switchyard local CA"));
        // A second start loads the same CA and issues under the same name.
        let second = LocalCa::open_or_create(dir.path()).unwrap();
        assert_eq!(std::fs::read(&second.cert_path).unwrap(), ca_pem);
        let again = second.certificate_for("app.test").unwrap();
        assert_eq!(again.info.issuer, leaf.info.issuer);
        // The leaf verifies against the stored CA certificate.
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let name = rustls_pki_types::ServerName::try_from("app.test").unwrap();
        verifier
            .verify_server_cert(&again.certified.cert[0], &[], &name, &[], rustls_pki_types::UnixTime::now())
            .unwrap();
        let key_mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions(),
        );
        assert_eq!(key_mode & 0o777, 0o600);
    }
}
