//! The proxy's mesh TLS state: its identity (swapped on renewal), the trust
//! bundle, and the rustls configs every listener and client of the proxy
//! uses. Configs are built once; they read the current certificate from the
//! [`IdentityStore`] at each handshake, so a renewal reaches new
//! connections without touching open ones.

use super::{
    Identity, IdentityError, IdentityStore, TrustBundle, client_config, control_client_config,
    server_config,
};
use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use std::collections::HashMap;
use std::sync::Arc;
use trellis_config::Snapshot;

/// Everything TLS of a proxy that has an identity.
#[derive(Debug)]
pub struct MeshState {
    /// The current certificate and key.
    pub store: IdentityStore,
    /// The mesh CA.
    pub trust: TrustBundle,
    /// Inbound listener: TLS 1.3, client certificate of the mesh required.
    pub server: Arc<ServerConfig>,
    /// To peer proxies over HTTP/1.1 (ALPN http/1.1 only, so the server
    /// cannot pick h2 for a client that will speak HTTP/1.1).
    pub peer_h1: Arc<ClientConfig>,
    /// To peer proxies over HTTP/2 (ALPN h2).
    pub peer_h2: Arc<ClientConfig>,
    /// To the control plane's proxy-facing endpoints.
    pub control: Arc<ClientConfig>,
}

impl MeshState {
    /// Configs for `identity`, trusting `trust`.
    pub fn new(identity: Identity, trust: TrustBundle) -> Result<Self, IdentityError> {
        let store = IdentityStore::new(identity);
        let server = server_config(&trust, &store)?;
        let base = client_config(&trust, &store)?;
        let with_alpn = |alpn: &[u8]| {
            let mut c = (*base).clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(c)
        };
        let peer_h1 = with_alpn(b"http/1.1");
        let peer_h2 = with_alpn(b"h2");
        let control = control_client_config(&trust, &store)?;
        Ok(Self {
            store,
            trust,
            server,
            peer_h1,
            peer_h2,
            control,
        })
    }
}

/// The certificate of one HTTPS host name, with its renewal point.
#[derive(Debug)]
pub struct HostCert {
    /// Chain and key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// When to ask for a new one.
    pub renew_at: std::time::Instant,
}

/// HTTPS host name -> its certificate; read at each handshake.
type HostCerts = ArcSwap<HashMap<String, Arc<HostCert>>>;

/// Picks the certificate of the SNI host name (none without SNI or for an
/// unknown name: the handshake fails).
#[derive(Debug)]
struct BySni(Arc<HostCerts>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.0.load().get(&name).map(|c| Arc::clone(&c.key))
    }
}

#[derive(Debug)]
struct Inner {
    state: ArcSwapOption<MeshState>,
    required: bool,
    /// Certificates of HTTPS listeners, by host name.
    hosts: Arc<HostCerts>,
    /// TLS config of HTTPS listeners (clients outside the mesh: no client
    /// certificate; TLS 1.2 and 1.3).
    https: Option<Arc<ServerConfig>>,
    /// Inbound address (`via`) -> name of the proxy expected there.
    fronting: ArcSwap<HashMap<String, String>>,
}

/// The proxy's slot for its [`MeshState`], shared by listeners, pools,
/// health checks and the control client.
///
/// A proxy configured with a join token (or with an identity on disk)
/// *requires* mesh TLS: until it has an identity its inbound refuses every
/// connection and it cannot reach peers. A proxy without either runs in
/// plaintext (a development mode, for a fake control plane).
#[derive(Debug, Clone)]
pub struct MeshTls {
    inner: Arc<Inner>,
}

impl MeshTls {
    /// A slot; `required` as described on the type.
    pub fn new(required: bool) -> Self {
        let hosts: Arc<HostCerts> = Arc::default();
        let https = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map(|b| {
                let mut c = b
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(BySni(Arc::clone(&hosts))));
                c.alpn_protocols = super::ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
                Arc::new(c)
            })
            .ok();
        Self {
            inner: Arc::new(Inner {
                state: ArcSwapOption::empty(),
                required,
                hosts,
                https,
                fronting: ArcSwap::default(),
            }),
        }
    }

    /// Whether this proxy speaks mesh TLS (or refuses to speak at all).
    pub fn is_required(&self) -> bool {
        self.inner.required
    }

    /// The state, once the proxy has an identity.
    pub fn state(&self) -> Option<Arc<MeshState>> {
        self.inner.state.load_full()
    }

    /// Install the state (first identity).
    pub fn install(&self, state: MeshState) {
        self.inner.state.store(Some(Arc::new(state)));
    }

    /// The TLS config of HTTPS listeners (`None` only if rustls refused
    /// its defaults, which it does not).
    pub fn https_config(&self) -> Option<Arc<ServerConfig>> {
        self.inner.https.clone()
    }

    /// The HTTPS host certificates.
    pub fn host_certs(&self) -> Arc<HashMap<String, Arc<HostCert>>> {
        self.inner.hosts.load_full()
    }

    /// Replace the HTTPS host certificates.
    pub fn set_host_certs(&self, certs: HashMap<String, Arc<HostCert>>) {
        self.inner.hosts.store(Arc::new(certs));
    }

    /// Learn from `snapshot` which proxy fronts each inbound address, so a
    /// connection to it can check that the peer is that proxy (not just
    /// any mesh proxy that took its address).
    pub fn set_fronting(&self, snapshot: &Snapshot) {
        let map: HashMap<String, String> = snapshot
            .target_groups
            .iter()
            .flat_map(|g| &g.targets)
            .filter_map(|t| Some((t.via.clone()?, t.proxy.clone()?)))
            .collect();
        self.inner.fronting.store(Arc::new(map));
    }

    /// The proxy expected at the inbound address `authority`, if known.
    pub fn expected_peer(&self, authority: &str) -> Option<String> {
        self.inner.fronting.load().get(authority).cloned()
    }

    /// Whether mesh traffic can flow: plaintext mode, or a certificate
    /// valid now.
    pub fn is_ready(&self) -> bool {
        if !self.inner.required {
            return true;
        }
        self.state().is_some_and(|s| s.store.is_ready())
    }
}
