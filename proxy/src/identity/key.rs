//! The proxy's own key pair and the CSR it sends to the mesh CA.
//!
//! A proxy makes a fresh ECDSA P-256 key for every certificate (first join
//! and each renewal), so a key never outlives its certificate by much. The
//! key never leaves the process: only the CSR (public key plus a signature
//! proving possession) is sent.

use super::IdentityError;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;
use trellis_config::identity::WorkloadIdentity;

/// A workload's private key. `Debug` shows the algorithm only.
pub struct WorkloadKey {
    pair: KeyPair,
}

impl WorkloadKey {
    /// A new random ECDSA P-256 key.
    pub fn generate() -> Result<Self, IdentityError> {
        KeyPair::generate()
            .map(|pair| Self { pair })
            .map_err(|e| IdentityError::KeyGen(e.to_string()))
    }

    /// A PEM CSR for this key naming `id` (common name = workload, one URI
    /// SAN = the SPIFFE id). The CA decides the names anyway; these only
    /// make the request readable.
    pub fn csr_pem(&self, id: &WorkloadIdentity) -> Result<String, IdentityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, id.workload());
        params.distinguished_name = dn;
        let uri = id
            .uri()
            .try_into()
            .map_err(|e: rcgen::Error| IdentityError::Csr(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params
            .serialize_request(&self.pair)
            .and_then(|csr| csr.pem())
            .map_err(|e| IdentityError::Csr(e.to_string()))
    }

    /// The key as rustls loads it (PKCS#8 DER).
    /// A CSR for the DNS name `host` (an HTTPS listener's certificate).
    pub fn host_csr_pem(&self, host: &str) -> Result<String, IdentityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let name = host
            .try_into()
            .map_err(|e: rcgen::Error| IdentityError::Csr(e.to_string()))?;
        params.subject_alt_names = vec![SanType::DnsName(name)];
        params
            .serialize_request(&self.pair)
            .and_then(|csr| csr.pem())
            .map_err(|e| IdentityError::Csr(e.to_string()))
    }

    /// PKCS#8 PEM of the key, for the proxy's own data directory only
    /// (written 0600; never sent, never logged).
    pub fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// A key saved with [`WorkloadKey::to_pem`].
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        KeyPair::from_pem(pem)
            .map(|pair| Self { pair })
            .map_err(|e| IdentityError::KeyGen(format!("the saved key cannot be read: {e}")))
    }

    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pair.serialize_der()))
    }
}

/// A new key and a CSR for it naming `id`: what a proxy sends to join or
/// renew. Keep the key; hand it with the issued certificate to
/// [`super::Identity::new`].
pub fn new_csr(id: &WorkloadIdentity) -> Result<(WorkloadKey, String), IdentityError> {
    let key = WorkloadKey::generate()?;
    let csr = key.csr_pem(id)?;
    Ok((key, csr))
}

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadKey")
            .field("algorithm", &"ECDSA P-256")
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension};

    #[test]
    fn csr_is_signed_by_the_key_and_names_the_workload() {
        let id: WorkloadIdentity = "spiffe://trellis.local/account/000000000000/workload/web"
            .parse()
            .unwrap();
        let (key, pem) = new_csr(&id).unwrap();
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .unwrap();
        csr.verify_signature().unwrap();
        let sans: Vec<String> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .map(|n| match n {
                GeneralName::URI(u) => u.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, vec![id.to_string()]);
        assert_eq!(
            csr.certification_request_info.subject_pki.raw,
            rcgen::PublicKeyData::subject_public_key_info(&key.pair).as_slice()
        );
    }

    #[test]
    fn debug_hides_the_key_and_keys_differ() {
        let a = WorkloadKey::generate().unwrap();
        let b = WorkloadKey::generate().unwrap();
        assert_ne!(a.pair.serialize_der(), b.pair.serialize_der());
        let debug = format!("{a:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains("PRIVATE"),
            "{debug}"
        );
    }
}
