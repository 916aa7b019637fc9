//! The proxy's identity: its certificate, its key, and what they say.

use super::{IdentityError, WorkloadKey, peer, renew, tls};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use trellis_config::identity::WorkloadIdentity;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate issued by the mesh CA with the key it was issued for,
/// ready for rustls, and the identity and validity it names. Immutable:
/// renewal makes a new one (see [`super::IdentityStore`]). `Debug` shows
/// the identity and validity, never the key.
pub struct Identity {
    id: WorkloadIdentity,
    not_before: SystemTime,
    not_after: SystemTime,
    certified: Arc<CertifiedKey>,
}

impl Identity {
    /// Pair `key` with the certificate chain the CA returned for its CSR
    /// (`cert_pem`: the workload certificate first, then any intermediates;
    /// these are what the proxy presents in handshakes).
    ///
    /// Fails when the PEM holds no certificate, the first one names no
    /// Trellis SPIFFE id, or it was issued for another key.
    pub fn new(key: WorkloadKey, cert_pem: &str) -> Result<Self, IdentityError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Pem {
                what: "workload certificate",
                reason: e.to_string(),
            })?;
        let leaf = chain.first().ok_or_else(|| IdentityError::Pem {
            what: "workload certificate",
            reason: "no CERTIFICATE block".into(),
        })?;
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let id = peer::spiffe_id(&cert).ok_or(IdentityError::NoSpiffeId)?;
        let validity = cert.validity();
        let not_before = unix(validity.not_before.timestamp());
        let not_after = unix(validity.not_after.timestamp());
        let certified = CertifiedKey::from_der(chain, key.private_key_der(), &tls::provider())
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(k) => IdentityError::KeyMismatch(format!("{k:?}")),
                other => IdentityError::Tls(other),
            })?;
        Ok(Self {
            id,
            not_before,
            not_after,
            certified: Arc::new(certified),
        })
    }

    /// Who this certificate says the proxy is.
    pub fn workload(&self) -> &WorkloadIdentity {
        &self.id
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether the certificate is valid at `t` (not-before ≤ t ≤ not-after).
    pub fn is_valid_at(&self, t: SystemTime) -> bool {
        self.not_before <= t && t <= self.not_after
    }

    /// Whether the certificate is valid now. A proxy whose identity is not
    /// valid reports not ready and stops presenting it (handshakes fail).
    pub fn is_valid_now(&self) -> bool {
        self.is_valid_at(SystemTime::now())
    }

    /// When to renew this certificate (see [`renew::renew_at`]).
    pub fn renew_at(&self) -> Instant {
        renew::renew_at(self.not_after, self.not_before)
    }

    /// The certificate chain and signing key, as rustls uses them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The certificates presented in handshakes, workload certificate first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }
}

fn unix(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH),
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        f.debug_struct("Identity")
            .field("workload", &self.id.to_string())
            .field("not_before_unix", &secs(self.not_before))
            .field("not_after_unix", &secs(self.not_after))
            .field("key", &"<redacted>")
            .finish()
    }
}
