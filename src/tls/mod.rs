//! TLS, owned by the core: the per-generation plan (listeners' strategy, each site's
//! certificate source), certificate material, the SNI resolver, ACME issuance and renewal, the
//! local CA of self-signed mode, the storage directory, and TLS to upstreams.

pub mod acme;
pub mod alpn_challenge;
pub mod local_ca;
pub mod material;
pub mod plan;
pub mod resolver;
pub mod runtime;
pub mod storage;
pub mod upstream;

pub use plan::{CertSource, Strategy, TlsPlan};
pub use resolver::SniResolver;
pub use runtime::TlsRuntime;
