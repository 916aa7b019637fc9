//! What can go wrong loading the mesh CA or signing a certificate.
//!
//! No variant ever carries key material: messages name files, modes,
//! identities and reasons only.

use std::path::PathBuf;
use std::time::Duration;
use trellis_config::identity::InvalidIdentity;

/// An error of the mesh CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file system operation on the CA directory failed.
    #[error("mesh CA: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read the key file".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The key file can be read by others than its owner.
    #[error(
        "mesh CA key file {} has mode {mode:04o}, but it must be readable by its owner only \
         (0600): the key may have been exposed. Check who could read it, then run \
         `chmod 600 {}`; or remove the CA directory to start a new mesh CA (every proxy must \
         then rejoin)",
        path.display(),
        path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold a private key rcgen can use.
    #[error("mesh CA key file {} is not a usable private key: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why (never the key itself).
        reason: String,
    },
    /// The root certificate file is unreadable or not a CA certificate.
    #[error("mesh CA certificate {} is invalid: {reason}", path.display())]
    BadRoot {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The root certificate was made for another key.
    #[error(
        "mesh CA certificate {} does not belong to the key in {}: restore the matching pair, or \
         remove the certificate to re-issue it from the key",
        cert.display(),
        key.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The root certificate names another trust domain than configured.
    #[error(
        "mesh CA in {} was created for trust domain '{found}', but '{configured}' is \
         configured: configure '{found}', or use another data directory for a new mesh",
        dir.display()
    )]
    TrustDomainMismatch {
        /// The CA directory.
        dir: PathBuf,
        /// Trust domain in the root certificate.
        found: String,
        /// Trust domain asked for.
        configured: String,
    },
    /// The root certificate has expired (or is not valid yet).
    #[error(
        "mesh CA certificate {} is not valid now (valid {not_before} to {not_after}, unix \
         seconds): remove it to re-issue it from the same key, then give proxies the new \
         trust bundle",
        path.display()
    )]
    RootNotValid {
        /// The certificate file.
        path: PathBuf,
        /// Start of validity, unix seconds.
        not_before: i64,
        /// End of validity, unix seconds.
        not_after: i64,
    },
    /// The trust domain, account or workload is not valid.
    #[error(transparent)]
    Identity(#[from] InvalidIdentity),
    /// The CSR could not be read.
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    /// The CSR's signature does not verify with its own public key.
    #[error(
        "invalid certificate signing request: its signature does not match its public key \
         (the CSR was altered, or signed with another key)"
    )]
    CsrSignature,
    /// The CSR's public key is of a kind the mesh does not use.
    #[error("certificate signing request has an unsupported public key: {0}")]
    UnsupportedKey(String),
    /// The requested lifetime is out of bounds.
    #[error(
        "certificate lifetime {}s is out of range: it must be between {}s and {}s",
        ttl.as_secs(),
        min.as_secs(),
        max.as_secs()
    )]
    Ttl {
        /// Asked for.
        ttl: Duration,
        /// Shortest allowed.
        min: Duration,
        /// Longest allowed.
        max: Duration,
    },
    /// rcgen failed to build or sign a certificate.
    #[error("mesh CA: cannot issue the certificate: {0}")]
    Sign(String),
}

impl CaError {
    pub(super) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
