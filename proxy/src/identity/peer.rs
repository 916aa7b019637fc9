//! Who is on the other end: the SPIFFE id in a certificate.

use rustls::pki_types::CertificateDer;
use trellis_config::identity::{SPIFFE_PREFIX, WorkloadIdentity};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The workload identity of a TLS peer, from its end-entity certificate
/// (the first of `chain`, as `peer_certificates()` returns it).
///
/// `None` when there is no certificate, it does not parse, or it does not
/// carry exactly one `spiffe://` URI SAN that is a valid Trellis workload
/// id. This does not verify the chain: call it on certificates the TLS
/// handshake has already verified. Costs one X.509 parse (a few µs).
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<WorkloadIdentity> {
    let (_, cert) = X509Certificate::from_der(chain.first()?).ok()?;
    spiffe_id(&cert)
}

/// The one SPIFFE id a certificate names; `None` if none, several, or
/// one that is not a Trellis workload id.
pub(crate) fn spiffe_id(cert: &X509Certificate<'_>) -> Option<WorkloadIdentity> {
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(SPIFFE_PREFIX) => Some(*uri),
            _ => None,
        });
    let id = ids.next()?;
    if ids.next().is_some() {
        // The SPIFFE spec allows exactly one: two would be ambiguous.
        return None;
    }
    id.parse().ok()
}

/// The caller of a request, as the listener that accepted its connection
/// knows it: put into each request's extensions. `None` = anonymous (no
/// mesh certificate, e.g. a plaintext listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub Option<WorkloadIdentity>);

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with(sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    const ID: &str = "spiffe://trellis.local/account/123456789012/workload/web";

    #[test]
    fn finds_the_one_spiffe_id_among_other_names() {
        let cert = cert_with(vec![
            SanType::DnsName("web.example".try_into().unwrap()),
            uri("https://example.com/x"),
            uri(ID),
        ]);
        assert_eq!(peer_identity(&[cert]).unwrap().to_string(), ID);
    }

    #[test]
    fn none_without_exactly_one_valid_spiffe_id() {
        assert_eq!(peer_identity(&[]), None);
        assert_eq!(peer_identity(&[CertificateDer::from(vec![1, 2, 3])]), None);
        assert_eq!(peer_identity(&[cert_with(vec![])]), None);
        let dns = SanType::DnsName("web.example".try_into().unwrap());
        assert_eq!(peer_identity(&[cert_with(vec![dns])]), None);
        let two = cert_with(vec![
            uri(ID),
            uri("spiffe://trellis.local/account/123456789012/workload/db"),
        ]);
        assert_eq!(peer_identity(&[two]), None);
        let not_ours = cert_with(vec![uri("spiffe://trellis.local/ns/default/sa/web")]);
        assert_eq!(peer_identity(&[not_ours]), None);
    }
}
