//! The TLS storage directory: ACME accounts, issued certificates and the local CA. Files are
//! replaced atomically ([`crate::files`]), private keys and credentials with mode 0600.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

/// Who may read a file written to the storage directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Keys and account credentials: the owner only (0600).
    Private,
    /// Certificates: anyone (0644).
    Public,
}

/// Writes `bytes` to `path` atomically, creating its directory (0700) when missing.
pub fn write_file(path: &Path, bytes: &[u8], access: Access) -> std::io::Result<()> {
    create_private_dir(path.parent().unwrap_or(Path::new(".")))?;
    let mode = match access {
        Access::Private => 0o600,
        Access::Public => 0o644,
    };
    crate::files::replace_atomically(path, bytes, mode)
}

/// Creates `dir` and its parents, the new ones with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The layout of the storage directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub root: PathBuf,
}

impl Storage {
    /// Where the local CA (self-signed mode) lives.
    pub fn local_ca_dir(&self) -> PathBuf {
        self.root.join("local-ca")
    }

    /// The directory of one ACME server: accounts and certificates from different CAs (staging
    /// and production) never mix.
    pub fn acme_dir(&self, directory_url: &str) -> PathBuf {
        let host = directory_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("acme")
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-', "_");
        let digest = hex::encode(&sha2::Sha256::digest(directory_url.as_bytes())[..4]);
        self.root.join("acme").join(format!("{host}-{digest}"))
    }

    /// The account credentials for an ACME server.
    pub fn acme_account(&self, directory_url: &str) -> PathBuf {
        self.acme_dir(directory_url).join("account.json")
    }

    /// The certificate (`cert.pem`) and key (`key.pem`) an ACME server issued for a site,
    /// named by the site's first host.
    pub fn acme_certificate_dir(&self, directory_url: &str, first_host: &str) -> PathBuf {
        let name = first_host.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-', "_");
        self.acme_dir(directory_url).join("certificates").join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_file(&path, b"one", Access::Private).unwrap();
        write_file(&path, b"two", Access::Private).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("a")).unwrap().permissions().mode() & 0o777, 0o700);
        let public = dir.path().join("a/cert.pem");
        write_file(&public, b"c", Access::Public).unwrap();
        assert_eq!(std::fs::metadata(&public).unwrap().permissions().mode() & 0o777, 0o644);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn each_acme_server_has_its_own_directory() {
        let s = Storage { root: PathBuf::from("/data") };
        let staging = s.acme_dir("https://acme-staging-v02.api.letsencrypt.org/directory");
        let production = s.acme_dir("https://acme-v02.api.letsencrypt.org/directory");
        assert_ne!(staging, production);
        assert!(
            staging.to_string_lossy().starts_with("/data/acme/acme-staging-v02.api.letsencrypt.org-"),
            "{staging:?}"
        );
        assert!(s.acme_certificate_dir("https://x/dir", "a.test").ends_with("certificates/a.test"));
    }
}
