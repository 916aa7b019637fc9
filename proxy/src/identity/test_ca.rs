//! A small CA for the tests of this module, issuing certificates of the
//! same profile as the control plane's mesh CA (one SPIFFE URI SAN, client
//! and server auth), with any validity. The real CA is tested with these
//! configs in the control plane's `ca` tests.

use super::{Identity, WorkloadIdentity, new_csr};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) root_pem: String,
    pub(crate) trust_domain: String,
}

/// Validity in whole years, e.g. (2020, 2100) or an expired (2020, 2021).
pub(crate) type Years = (i32, i32);
pub(crate) const VALID: Years = (2020, 2100);
pub(crate) const EXPIRED: Years = (2020, 2021);

impl TestCa {
    pub(crate) fn new(trust_domain: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test CA {trust_domain}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}").try_into().unwrap(),
        )];
        let root = params.self_signed(&key).unwrap();
        Self {
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
            trust_domain: trust_domain.to_owned(),
        }
    }

    /// Sign `csr_pem` for the SPIFFE URI `uri` (any string, to test odd ones).
    pub(crate) fn sign(&self, csr_pem: &str, uri: &str, years: Years) -> String {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        params
            .signed_by(&csr.public_key, &self.issuer)
            .unwrap()
            .pem()
    }

    pub(crate) fn id(&self, account: &str, workload: &str) -> WorkloadIdentity {
        WorkloadIdentity::new(self.trust_domain.as_str(), account, workload).unwrap()
    }

    /// A complete identity for `workload` in account 111111111111.
    pub(crate) fn identity(&self, workload: &str, years: Years) -> Identity {
        let id = self.id("111111111111", workload);
        let (key, csr) = new_csr(&id).unwrap();
        let cert = self.sign(&csr, &id.uri(), years);
        Identity::new(key, &cert).unwrap()
    }
}
