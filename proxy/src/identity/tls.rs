//! rustls configurations for mesh mTLS, on the ring provider only.
//!
//! Both sides: TLS 1.3 only, ALPN `h2` then `http/1.1`, our certificate
//! read from the [`IdentityStore`] at every handshake, the peer's checked
//! against the mesh CA ([`TrustBundle`]) and our trust domain. Session
//! resumption is off on both sides, so every handshake authenticates both
//! peers with the certificates current at that moment (connections are
//! pooled, so full handshakes are rare).

use super::verify::{MeshClientVerifier, MeshServerVerifier};
use super::{IdentityError, IdentityStore};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;

/// ALPN protocols offered and accepted, in order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The server name outbound proxies pass when connecting to an inbound
/// listener. Mesh certificates have no DNS names and the verifier checks
/// the SPIFFE id instead, so any valid name works; `.invalid` says it is
/// never resolved.
pub const MESH_SERVER_NAME: &str = "inbound.trellis.invalid";

/// The crypto provider of every mesh config: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates the mesh trusts: the mesh CA's root(s).
#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Arc<RootCertStore>,
}

impl TrustBundle {
    /// Read every certificate in `pem` (the CA's root PEM). Fails when there
    /// is none or one is not a usable trust anchor.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let bad = |reason: String| IdentityError::Pem {
            what: "trust bundle",
            reason,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no CERTIFICATE block".into()));
        }
        Ok(Self {
            roots: Arc::new(roots),
        })
    }

    /// How many roots the bundle holds.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// The roots, for verifiers.
    pub(crate) fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// Whether the bundle is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// The inbound listener's config: requires a client certificate that
/// chains to `trust` and names a workload of our trust domain (anything
/// else, plaintext included, fails at the handshake); presents the
/// store's current certificate.
pub fn server_config(
    trust: &TrustBundle,
    store: &IdentityStore,
) -> Result<Arc<ServerConfig>, IdentityError> {
    let provider = provider();
    let inner =
        WebPkiClientVerifier::builder_with_provider(trust.roots(), provider.clone()).build()?;
    let verifier = Arc::new(MeshClientVerifier {
        inner,
        trust_domain: store.current().workload().trust_domain().to_owned(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store.resolver());
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The outbound side's config for connecting to another proxy's inbound
/// listener: the server must chain to `trust` and name a workload of our
/// trust domain; presents the store's current certificate as the client
/// certificate. Connect with [`MESH_SERVER_NAME`] (or any name).
pub fn client_config(
    trust: &TrustBundle,
    store: &IdentityStore,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let provider = provider();
    let verifier = Arc::new(MeshServerVerifier {
        roots: trust.roots(),
        algorithms: provider.signature_verification_algorithms,
        trust_domain: store.current().workload().trust_domain().to_owned(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(store.resolver());
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Client config for the control plane's proxy-facing endpoints: the
/// control plane is verified by host name or IP address against the mesh
/// CA (its certificate names no workload, so no proxy can pose as it), and
/// this proxy presents its current mesh certificate.
pub fn control_client_config(
    trust: &TrustBundle,
    store: &IdentityStore,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let provider = provider();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        trust.roots(),
        provider.clone(),
    )
    .build()
    .map_err(|e| IdentityError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(store.resolver());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
