//! The control plane's side of mesh identity: the mesh CA, the lifetime of
//! the certificates it issues, the TLS server config of the endpoints that
//! proxies call after they joined, and the listener that serves both the
//! plain REST API and those endpoints on one port.
//!
//! One port for both: a connection whose first byte is a TLS handshake
//! record is a proxy (it must present a certificate of the mesh CA); any
//! other is a REST client. Proxies need no second address, and a control
//! plane restarted on the same address is found again.

mod listener;
mod peer;
mod tls;

pub use listener::serve;
pub use peer::ProxyPeer;
pub use tls::SERVER_CERT_TTL;

use crate::ca::{CaError, MeshCa};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use trellis_config::identity::{DEFAULT_CERT_TTL, DEFAULT_TRUST_DOMAIN};

/// Folder of the CA key and certificate inside the data directory.
pub const CA_DIR: &str = "ca";

/// How the control plane issues identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// SPIFFE trust domain of the mesh (fixed when the CA is created).
    pub trust_domain: String,
    /// Lifetime of proxy certificates (join and renew).
    pub cert_ttl: Duration,
    /// Extra names (DNS or IP) in the control plane's server certificate,
    /// for proxies that reach it by a name other than loopback.
    pub server_names: Vec<String>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            cert_ttl: DEFAULT_CERT_TTL,
            server_names: Vec::new(),
        }
    }
}

/// The mesh CA and what handlers need with it.
#[derive(Debug)]
pub struct Mesh {
    /// The CA (its key never leaves it).
    pub ca: MeshCa,
    /// Lifetime of proxy certificates.
    pub cert_ttl: Duration,
    server: tls::ServerCerts,
}

impl Mesh {
    /// Load (or create) the CA in `<data_dir>/ca/`.
    pub fn open(data_dir: &Path, settings: &IdentitySettings) -> Result<Arc<Self>, CaError> {
        let ca = MeshCa::load_or_create(data_dir.join(CA_DIR), &settings.trust_domain)?;
        // Issue the first server certificate now, so a bad name fails the start.
        let server = tls::ServerCerts::new(&ca, settings.server_names.clone())?;
        Ok(Arc::new(Self {
            ca,
            cert_ttl: settings.cert_ttl,
            server,
        }))
    }

    /// The TLS config of the proxy-facing endpoints.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, CaError> {
        tls::server_config(self)
    }
}
