//! TLS-ALPN-01 (RFC 8737): the CA connects to the HTTPS listener offering only the `acme-tls/1`
//! protocol and expects a certificate carrying the challenge's digest.
//!
//! Pingora's rustls listener fixes its ALPN list to `h2`/`http/1.1` (a custom protocol replaces
//! them rather than joining them), and rustls refuses a handshake whose offered protocols do not
//! overlap the server's. So while a TLS-ALPN-01 challenge is pending, a pre-TLS hook reads the
//! ClientHello first: a validation handshake is completed right there with a configuration
//! offering `acme-tls/1` and the challenge certificate, then the connection is closed; any other
//! ClientHello is put back and the listener's own handshake proceeds. With no challenge pending
//! the hook returns at once.

use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::l4::stream::Stream as L4Stream;
use rustls::server::{Acceptor, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::resolver::ACME_TLS_ALPN;
use super::runtime::TlsRuntime;

/// How long a client has to send its ClientHello while a challenge is pending.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The self-signed challenge certificate for `host` carrying `digest` (the SHA-256 of the key
/// authorization) in a critical acmeIdentifier extension.
pub fn certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| e.to_string())?;
    // Not through `Material`: its key check parses the certificate as a server certificate,
    // and the critical acmeIdentifier extension is (rightly) unknown there.
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// The pre-TLS hook of the HTTPS listeners; see the module documentation.
pub struct ChallengeResponder {
    pub runtime: Arc<TlsRuntime>,
}

#[async_trait::async_trait]
impl pingora::listeners::PreTlsProcess for ChallengeResponder {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        if !self.runtime.alpn_challenges_pending() {
            return Ok(());
        }
        match tokio::time::timeout(HELLO_TIMEOUT, self.answer(stream)).await {
            Ok(Ok(false)) => Ok(()),
            Ok(Ok(true)) => Err(pingora::Error::explain(pingora::ErrorType::ConnectionClosed, "TLS-ALPN-01 answered")),
            Ok(Err(e)) => Err(pingora::Error::explain(pingora::ErrorType::TLSHandshakeFailure, e)),
            Err(_) => Err(pingora::Error::explain(pingora::ErrorType::ReadTimedout, "no ClientHello in time")),
        }
    }
}

/// Resolves every handshake to one certificate.
#[derive(Debug)]
struct Only(Arc<CertifiedKey>);

impl ResolvesServerCert for Only {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ChallengeResponder {
    /// Reads the ClientHello; answers a validation handshake (`true`) or puts the bytes back.
    async fn answer(&self, stream: &mut L4Stream) -> Result<bool, String> {
        let mut acceptor = Acceptor::default();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let accepted = loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                stream.rewind(&seen);
                return Ok(false);
            }
            seen.extend_from_slice(&buf[..n]);
            let _ = acceptor.read_tls(&mut &buf[..n]);
            match acceptor.accept() {
                Ok(Some(accepted)) => break accepted,
                Ok(None) => continue,
                Err(_) => {
                    // Not TLS we understand: the listener's handshake reports it.
                    stream.rewind(&seen);
                    return Ok(false);
                }
            }
        };
        let hello = accepted.client_hello();
        let offers_acme = hello.alpn().is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN));
        let certificate = hello.server_name().and_then(|name| self.runtime.alpn_challenge(name));
        let (true, Some(certificate)) = (offers_acme, certificate) else {
            stream.rewind(&seen);
            return Ok(false);
        };
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Only(certificate)));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        let mut connection = accepted.into_connection(Arc::new(config)).map_err(|(e, _)| e.to_string())?;
        while connection.is_handshaking() {
            while connection.wants_write() {
                let mut out = Vec::new();
                connection.write_tls(&mut out).map_err(|e| e.to_string())?;
                stream.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            stream.flush().await.map_err(|e| e.to_string())?;
            if connection.is_handshaking() && connection.wants_read() {
                let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                connection.read_tls(&mut &buf[..n]).map_err(|e| e.to_string())?;
                connection.process_new_packets().map_err(|e| e.to_string())?;
            }
        }
        connection.send_close_notify();
        let mut out = Vec::new();
        while connection.wants_write() {
            connection.write_tls(&mut out).map_err(|e| e.to_string())?;
        }
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
        tracing::info!(host = ?connection.server_name(), "answered a TLS-ALPN-01 validation");
        Ok(true)
    }
}
