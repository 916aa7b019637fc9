//! TLS 1.3 server config of the proxy-facing endpoints: a server
//! certificate issued by the mesh CA (re-issued in memory at half its
//! life), and a required client certificate chaining to the mesh CA.

use super::Mesh;
use crate::ca::{CaError, MeshCa};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

/// Lifetime of the control plane's server certificate. It lives in memory
/// only and is re-issued at half its life, so a day bounds the exposure
/// of a key read from memory.
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// ALPN protocols of the proxy-facing endpoints.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    renew_after: SystemTime,
}

/// The current server certificate.
#[derive(Debug)]
pub(super) struct ServerCerts {
    names: Vec<String>,
    current: Mutex<Current>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn issue(ca: &MeshCa, names: &[String]) -> Result<Current, CaError> {
    let cert = ca.issue_server_cert(names, SERVER_CERT_TTL)?;
    let key = CertifiedKey::from_der(
        vec![CertificateDer::from(cert.cert_der)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der)),
        &provider(),
    )
    .map_err(|e| CaError::Sign(e.to_string()))?;
    Ok(Current {
        key: Arc::new(key),
        renew_after: SystemTime::now() + SERVER_CERT_TTL / 2,
    })
}

impl ServerCerts {
    pub(super) fn new(ca: &MeshCa, names: Vec<String>) -> Result<Self, CaError> {
        let current = issue(ca, &names)?;
        Ok(Self {
            names,
            current: Mutex::new(current),
        })
    }
}

/// Resolves the server certificate at each handshake (weak: the config
/// must not keep the mesh alive).
#[derive(Debug)]
struct Resolver(Weak<Mesh>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mesh = self.0.upgrade()?;
        let mut current = mesh
            .server
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if SystemTime::now() >= current.renew_after {
            match issue(&mesh.ca, &mesh.server.names) {
                Ok(next) => *current = next,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-issue the control plane's server certificate; keeping the current one")
                }
            }
        }
        Some(Arc::clone(&current.key))
    }
}

pub(super) fn server_config(mesh: &Arc<Mesh>) -> Result<Arc<ServerConfig>, CaError> {
    let bad = |e: String| CaError::Sign(format!("TLS config: {e}"));
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(mesh.ca.root_der().to_vec()))
        .map_err(|e| bad(e.to_string()))?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Resolver(Arc::downgrade(mesh))));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
