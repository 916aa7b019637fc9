//! Turning a proxy's CSR into a workload certificate.
//!
//! The CSR contributes its public key and nothing else: its signature is
//! verified (proof that the requester holds the private key), then every
//! name, extension and constraint it asks for is ignored. The CA decides
//! the subject, the one SPIFFE URI SAN, the usages and the lifetime.

use super::CaError;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;
use trellis_config::identity::{MAX_CERT_TTL, MIN_CERT_TTL, WorkloadIdentity, not_before_backdate};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

/// Largest CSR accepted, as PEM text. A P-256 CSR is under 1 KiB; the
/// bound keeps a hostile request from costing parse time.
pub const MAX_CSR_PEM_LEN: usize = 16 * 1024;
/// Bytes of randomness in a serial number (RFC 5280 allows 20 octets;
/// CA/Browser rules ask for at least 64 bits of CSPRNG output).
const SERIAL_LEN: usize = 16;

/// Read and verify a PEM CSR; return the public key it certifies.
pub(super) fn verified_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, CaError> {
    if csr_pem.len() > MAX_CSR_PEM_LEN {
        return Err(CaError::Csr(format!(
            "{} bytes is larger than the {MAX_CSR_PEM_LEN} bytes allowed",
            csr_pem.len()
        )));
    }
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| {
        CaError::Csr(format!(
            "no PEM 'CERTIFICATE REQUEST' block could be read ({e})"
        ))
    })?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| CaError::Csr(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::Csr("trailing bytes after the request".into()));
    }
    csr.verify_signature().map_err(|_| CaError::CsrSignature)?;
    SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| CaError::UnsupportedKey(e.to_string()))
}

/// Parameters of a workload certificate for `id`, valid from a little
/// before `now` until `now + ttl`. Returns them with the exact validity.
pub(super) fn leaf_params(
    id: &WorkloadIdentity,
    ttl: Duration,
    now: SystemTime,
) -> Result<(CertificateParams, SystemTime, SystemTime), CaError> {
    if !(MIN_CERT_TTL..=MAX_CERT_TTL).contains(&ttl) {
        return Err(CaError::Ttl {
            ttl,
            min: MIN_CERT_TTL,
            max: MAX_CERT_TTL,
        });
    }
    // Whole seconds: what an X.509 time can say, so the times we report
    // are exactly those in the certificate.
    let now = truncate_to_secs(now);
    let not_before = truncate_to_secs(now - not_before_backdate(ttl));
    let not_after = now + Duration::from_secs(ttl.as_secs());

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id.workload());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(
        id.uri()
            .try_into()
            .map_err(|e| CaError::Sign(format!("SPIFFE URI: {e}")))?,
    )];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;
    Ok((params, not_before, not_after))
}

/// A random positive serial number of [`SERIAL_LEN`] bytes.
pub(super) fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; SERIAL_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Sign("the system random generator failed".into()))?;
    // Positive and of full length: top bit clear, second-top bit set.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// `t` as rcgen's date type (whole seconds).
pub(super) fn to_offset(t: SystemTime) -> Result<OffsetDateTime, CaError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::Sign("the clock is before 1970".into()))?
        .as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| CaError::Sign(format!("time {secs} is out of range")))
}

fn truncate_to_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// Hex of a serial number, as `openssl x509 -serial` prints it.
pub(super) fn serial_hex(serial: &SerialNumber) -> String {
    serial
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}
