//! Who is calling over TLS: the proxy named by its mesh certificate.

use rustls::pki_types::CertificateDer;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trellis_config::identity::WorkloadIdentity;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The proxy a request on the TLS side comes from, put in the request's
/// extensions by the listener after the handshake verified its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPeer {
    /// Its SPIFFE identity (trust domain, account, workload = proxy name).
    pub identity: WorkloadIdentity,
    /// End of its certificate's validity.
    pub not_after: SystemTime,
}

impl ProxyPeer {
    /// From a verified chain; `None` when the leaf names no workload.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let identity = trellis_proxy::identity::peer_identity(chain)?;
        let (_, cert) = X509Certificate::from_der(chain.first()?).ok()?;
        let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
        Some(Self {
            identity,
            not_after: UNIX_EPOCH + Duration::from_secs(secs),
        })
    }
}
