//! What can go wrong with the proxy's own identity and its TLS configs.

use trellis_config::identity::WorkloadIdentity;

/// An error making a key, reading a certificate or building a TLS config.
/// Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key pair could not be generated.
    #[error("cannot generate a workload key: {0}")]
    KeyGen(String),
    /// The CSR could not be built.
    #[error("cannot build the certificate signing request: {0}")]
    Csr(String),
    /// PEM input held no certificate (or a malformed one).
    #[error("no PEM certificate could be read from the {what}: {reason}")]
    Pem {
        /// Which input: "workload certificate" or "trust bundle".
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The certificate is not valid X.509.
    #[error("the workload certificate is not valid X.509: {0}")]
    Certificate(String),
    /// The certificate does not name exactly one Trellis SPIFFE id.
    #[error(
        "the workload certificate has no SPIFFE id \
         (spiffe://<trust-domain>/account/<id>/workload/<name>) as its only URI SAN"
    )]
    NoSpiffeId,
    /// The certificate was issued for another key.
    #[error(
        "the workload certificate does not match the workload key (it answers another CSR): {0}"
    )]
    KeyMismatch(String),
    /// A renewal tried to change who this proxy is.
    #[error("the new certificate names {new}, but this proxy is {current}: refusing to switch")]
    IdentityChanged {
        /// The identity in use.
        current: Box<WorkloadIdentity>,
        /// The identity of the refused certificate.
        new: Box<WorkloadIdentity>,
    },
    /// rustls refused the configuration.
    /// The identity on disk cannot be read or written.
    #[error("proxy identity on disk: {0}")]
    Disk(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}
