//! The mesh root certificate: issued from the CA key, checked on load.
//!
//! The key is the CA; the certificate is derived from it. A root
//! certificate re-issued from the same key (same subject, same key) still
//! verifies every leaf the key signed, so a missing certificate is simply
//! issued again.

use super::CaError;
use super::sign::{random_serial, to_offset};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use std::path::Path;
use std::time::{Duration, SystemTime};
use trellis_config::identity::trust_domain_uri;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Lifetime of a new root certificate: ten years. Rotating the root means
/// redistributing trust to every proxy, so it is rare by design.
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// A new root is valid from this long ago, for clocks a little behind.
const ROOT_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The root's subject: the same for every root of a trust domain, so a
/// re-issued root is the issuer of every existing leaf.
fn subject(trust_domain: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Trellis");
    dn.push(
        DnType::CommonName,
        format!("Trellis mesh CA {trust_domain}"),
    );
    dn
}

/// Issue a self-signed root for `trust_domain` from `key`, as PEM.
pub(super) fn issue(key: &KeyPair, trust_domain: &str) -> Result<String, CaError> {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(trust_domain);
    // Leaves only: an intermediate would need a new root anyway.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let uri = trust_domain_uri(trust_domain)
        .try_into()
        .map_err(|e| CaError::Sign(format!("trust domain URI: {e}")))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.not_before = to_offset(now - ROOT_BACKDATE)?;
    params.not_after = to_offset(now + ROOT_TTL)?;
    params.serial_number = Some(random_serial()?);
    let cert = params
        .self_signed(key)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    Ok(cert.pem())
}

/// Check a loaded root: one CA certificate, for `key`, naming
/// `trust_domain`, valid now. Returns its DER.
pub(super) fn check(
    pem: &str,
    key: &KeyPair,
    trust_domain: &str,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Vec<u8>, CaError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |reason: String| CaError::BadRoot {
        path: cert_path.to_owned(),
        reason,
    };
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| bad(format!("no PEM certificate: {e}")))?;
    let (rest, cert) = X509Certificate::from_der(&der)
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the certificate".into()));
    }
    if !cert.is_ca() {
        return Err(bad("not a CA certificate (basic constraints)".into()));
    }
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CaError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        });
    }
    let found = root_trust_domain(&cert)
        .ok_or_else(|| bad("no spiffe://<trust-domain> URI subject alternative name".into()))?;
    if found != trust_domain {
        return Err(CaError::TrustDomainMismatch {
            dir: cert_path.parent().unwrap_or(Path::new(".")).to_owned(),
            found: found.to_owned(),
            configured: trust_domain.to_owned(),
        });
    }
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(CaError::RootNotValid {
            path: cert_path.to_owned(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        });
    }
    Ok(der.to_vec())
}

/// The trust domain a root names in its `spiffe://<td>` URI SAN.
fn root_trust_domain<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => uri.strip_prefix(trellis_config::identity::SPIFFE_PREFIX),
        _ => None,
    })
}
