//! The control plane's own TLS server certificate, issued by the mesh CA,
//! for the endpoints proxies call after they joined (they verify it against
//! the CA bundle they got from the join, by host name or IP address).

use super::{CaError, MeshCa, sign};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use trellis_config::identity::NOT_BEFORE_BACKDATE;

/// Names every control-plane server certificate carries, so a proxy on the
/// same host reaches it by loopback whatever the configuration says.
pub const LOOPBACK_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// A server certificate and its key (kept in memory only, never written).
pub struct ServerCert {
    /// DER of the leaf.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of its key.
    pub key_der: Vec<u8>,
    /// End of validity.
    pub not_after: SystemTime,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl MeshCa {
    /// Issue a server certificate for `names` (IP addresses or DNS names)
    /// plus [`LOOPBACK_NAMES`], valid for `ttl`, with a fresh key.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        ttl: Duration,
    ) -> Result<ServerCert, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let now = SystemTime::now();
        let not_after = now + ttl;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "trellis-control");
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for name in LOOPBACK_NAMES
            .iter()
            .copied()
            .chain(names.iter().map(String::as_str))
        {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.try_into()
                        .map_err(|e| CaError::Sign(format!("server name '{name}': {e}")))?,
                ),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(sign::random_serial()?);
        params.not_before = sign::to_offset(now - NOT_BEFORE_BACKDATE)?;
        params.not_after = sign::to_offset(not_after)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(ServerCert {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            not_after,
        })
    }
}

/// A certificate for an HTTPS listener's host name, issued to a proxy.
#[derive(Debug, Clone)]
pub struct HostCert {
    /// PEM of the certificate.
    pub cert_pem: String,
    /// End of validity.
    pub not_after: SystemTime,
}

impl MeshCa {
    /// Sign `csr_pem` (a proxy's own key) for the DNS name `host`, for
    /// `ttl`: the certificate an HTTPS listener serves to clients outside
    /// the mesh (which trust the mesh CA, `GET /v1/ca`).
    pub fn sign_host_csr(
        &self,
        csr_pem: &str,
        host: &str,
        ttl: Duration,
    ) -> Result<HostCert, CaError> {
        if !(trellis_config::identity::MIN_CERT_TTL..=trellis_config::identity::MAX_CERT_TTL)
            .contains(&ttl)
        {
            return Err(CaError::Ttl {
                ttl,
                min: trellis_config::identity::MIN_CERT_TTL,
                max: trellis_config::identity::MAX_CERT_TTL,
            });
        }
        let public_key = sign::verified_public_key(csr_pem)?;
        let now = SystemTime::now();
        let not_after = now + ttl;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.subject_alt_names =
            vec![SanType::DnsName(host.try_into().map_err(|e| {
                CaError::Sign(format!("host name '{host}': {e}"))
            })?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(sign::random_serial()?);
        params.not_before =
            sign::to_offset(now - trellis_config::identity::not_before_backdate(ttl))?;
        params.not_after = sign::to_offset(not_after)?;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        tracing::info!(
            host,
            ttl_secs = ttl.as_secs(),
            "mesh CA: issued an HTTPS listener certificate"
        );
        Ok(HostCert {
            cert_pem: cert.pem(),
            not_after,
        })
    }
}
