//! The mesh certificate authority.
//!
//! The control plane signs every proxy's certificate. The CA is one ECDSA
//! P-256 key and a self-signed root certificate, kept in a directory (the
//! data dir's `ca/` by convention):
//!
//! | file | mode | what |
//! |---|---|---|
//! | [`KEY_FILE`] | 0600 | the root's private key (PKCS#8 PEM); never logged, never returned |
//! | [`CERT_FILE`] | 0644 | the root certificate (PEM): the mesh's trust bundle |
//!
//! [`MeshCa::load_or_create`] loads them, or creates them the first time.
//! It refuses a key file that others may read (see [`CaError::KeyPermissions`]),
//! a certificate of another key or trust domain, and an expired root. A
//! missing certificate is re-issued from the key (the key is the CA).
//!
//! [`MeshCa::sign_csr`] turns a proxy's CSR into a short-lived workload
//! certificate whose only name is its SPIFFE id
//! (`spiffe://<trust-domain>/account/<account>/workload/<workload>`), for
//! both TLS client and server use; whatever names the CSR asks for are
//! ignored.
//!
//! Not here yet: the join flow (tokens), the API that calls `sign_csr`,
//! intermediates and root rotation. Several control-plane replicas must
//! share one CA directory (or one key) to issue certificates the whole mesh
//! trusts.

mod error;
mod files;
mod root;
mod server_cert;
mod sign;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

pub use error::CaError;
pub use root::ROOT_TTL;
pub use server_cert::{HostCert, LOOPBACK_NAMES, ServerCert};
pub use sign::MAX_CSR_PEM_LEN;

use rcgen::{Issuer, KeyPair};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use trellis_config::identity::{InvalidIdentity, WorkloadIdentity, check_trust_domain};

/// Name of the CA's private key file in its directory.
pub const KEY_FILE: &str = "mesh-ca.key";
/// Name of the CA's root certificate file in its directory.
pub const CERT_FILE: &str = "mesh-ca.pem";

/// The mesh CA, ready to sign. Its `Debug` shows the directory, the trust
/// domain and the root, never the key.
pub struct MeshCa {
    dir: PathBuf,
    trust_domain: String,
    root_pem: String,
    root_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A workload certificate just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The identity the certificate names (its only SAN).
    pub identity: WorkloadIdentity,
    /// The workload certificate, PEM.
    pub cert_pem: String,
    /// The CA certificates above it, issuer first, ending with the root
    /// (today only the root): the proxy presents `cert_pem` plus any
    /// intermediates, and trusts the root.
    pub chain_pem: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Start of validity (slightly before issuance, for clock skew).
    pub not_before: SystemTime,
    /// End of validity: issuance plus the lifetime asked for.
    pub not_after: SystemTime,
}

impl MeshCa {
    /// Load the CA from `dir`, or create it there (and `dir`, with mode
    /// 0700) when `dir` has no key yet. `trust_domain` must match the one
    /// the CA was created for.
    pub fn load_or_create(dir: impl AsRef<Path>, trust_domain: &str) -> Result<Self, CaError> {
        let dir = dir.as_ref();
        check_trust_domain(trust_domain).map_err(|reason| InvalidIdentity::TrustDomain {
            value: trust_domain.to_owned(),
            reason,
        })?;
        files::ensure_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);

        let key = load_or_create_key(&key_path, dir, trust_domain)?;
        let root_pem = match files::read_public(&cert_path)? {
            Some(pem) => pem,
            None => {
                let pem = root::issue(&key, trust_domain)?;
                files::replace_public(&cert_path, &pem)?;
                tracing::info!(
                    path = %cert_path.display(),
                    trust_domain,
                    "mesh CA: issued the root certificate"
                );
                pem
            }
        };
        let root_der = root::check(&root_pem, &key, trust_domain, &cert_path, &key_path)?;
        let issuer = Issuer::from_ca_cert_der(&root_der.as_slice().into(), key).map_err(|e| {
            CaError::BadRoot {
                path: cert_path.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            trust_domain: trust_domain.to_owned(),
            root_pem,
            root_der,
            issuer,
        })
    }

    /// The trust domain every certificate of this CA names.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The directory holding the CA's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root certificate, PEM: the trust bundle proxies need.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// Issue a workload certificate for the key in `csr_pem`, naming
    /// `spiffe://<trust-domain>/account/<account>/workload/<workload>`,
    /// valid for `ttl` (between [`MIN_CERT_TTL`] and [`MAX_CERT_TTL`]; the
    /// usual value is [`DEFAULT_CERT_TTL`]).
    ///
    /// The CSR's signature must verify; its subject, SANs and extensions
    /// are ignored. Fails with a typed error for a bad CSR, a bad account
    /// or workload, or a lifetime out of range; nothing is issued then.
    ///
    /// [`MIN_CERT_TTL`]: trellis_config::identity::MIN_CERT_TTL
    /// [`MAX_CERT_TTL`]: trellis_config::identity::MAX_CERT_TTL
    /// [`DEFAULT_CERT_TTL`]: trellis_config::identity::DEFAULT_CERT_TTL
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        account: &str,
        workload: &str,
        ttl: Duration,
    ) -> Result<IssuedCert, CaError> {
        self.sign_csr_at(csr_pem, account, workload, ttl, SystemTime::now())
    }

    /// [`MeshCa::sign_csr`] as if the time were `now` (tests make expired
    /// certificates with it).
    pub(crate) fn sign_csr_at(
        &self,
        csr_pem: &str,
        account: &str,
        workload: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CaError> {
        let identity = WorkloadIdentity::new(self.trust_domain.as_str(), account, workload)?;
        let public_key = sign::verified_public_key(csr_pem)?;
        let (params, not_before, not_after) = sign::leaf_params(&identity, ttl, now)?;
        let serial = params
            .serial_number
            .as_ref()
            .map(sign::serial_hex)
            .unwrap_or_default();
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        tracing::info!(
            identity = %identity,
            serial,
            ttl_secs = ttl.as_secs(),
            "mesh CA: issued a workload certificate"
        );
        Ok(IssuedCert {
            identity,
            cert_pem: cert.pem(),
            chain_pem: self.root_pem.clone(),
            serial,
            not_before,
            not_after,
        })
    }
}

impl fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshCa")
            .field("dir", &self.dir)
            .field("trust_domain", &self.trust_domain)
            .field("root_der_len", &self.root_der.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Read the key, or generate and store one. Of two processes creating the
/// key at once, one wins and the other loads the winner's key.
fn load_or_create_key(key_path: &Path, dir: &Path, trust_domain: &str) -> Result<KeyPair, CaError> {
    let bad = |reason: String| CaError::BadKey {
        path: key_path.to_owned(),
        reason,
    };
    for _ in 0..2 {
        if let Some(pem) = files::read_key(key_path)? {
            // rcgen's error text names the problem, never the key bytes.
            return KeyPair::from_pem(&pem).map_err(|e| bad(e.to_string()));
        }
        let key = KeyPair::generate().map_err(|e| bad(format!("cannot generate: {e}")))?;
        if files::create_key(key_path, &key.serialize_pem())? {
            tracing::info!(
                dir = %dir.display(),
                trust_domain,
                "mesh CA: created a new CA key"
            );
            return Ok(key);
        }
    }
    Err(bad("it was removed while being created; try again".into()))
}
