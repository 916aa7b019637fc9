//! The current identity, swapped whole on renewal.
//!
//! Listeners and connectors read the identity through a certificate
//! resolver at each handshake, so a renewal (one atomic pointer swap)
//! applies to the next handshake while established connections carry on
//! with the session keys they already have: nothing is dropped.

use super::{Identity, IdentityError};
use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::sync::Arc;

/// The proxy's current identity. Cheap to clone (all clones share it).
#[derive(Clone)]
pub struct IdentityStore {
    current: Arc<ArcSwap<Identity>>,
}

impl IdentityStore {
    /// A store holding `initial` (a proxy gets its first certificate
    /// before it builds its mesh listeners).
    pub fn new(initial: Identity) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// The identity in use now.
    pub fn current(&self) -> Arc<Identity> {
        self.current.load_full()
    }

    /// Swap in a renewed identity; returns the one it replaces. Refuses one
    /// that names another workload identity (a proxy does not change who
    /// it is by renewing), leaving the current one in place.
    pub fn replace(&self, next: Identity) -> Result<Arc<Identity>, IdentityError> {
        let current = self.current.load();
        if current.workload() != next.workload() {
            return Err(IdentityError::IdentityChanged {
                current: Box::new(current.workload().clone()),
                new: Box::new(next.workload().clone()),
            });
        }
        Ok(self.current.swap(Arc::new(next)))
    }

    /// Whether the current certificate is valid now: the proxy's readiness
    /// for mesh traffic.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_valid_now()
    }

    /// The resolver rustls asks for our certificate at each handshake.
    pub(crate) fn resolver(&self) -> Arc<CurrentCert> {
        Arc::new(CurrentCert {
            current: self.current.clone(),
        })
    }
}

impl fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentityStore")
            .field(&**self.current.load())
            .finish()
    }
}

/// Serves the store's current certificate to rustls, on both sides. An
/// expired (or not yet valid) certificate is not presented: the handshake
/// fails on our side with "no certificate" instead of on the peer's.
pub(crate) struct CurrentCert {
    current: Arc<ArcSwap<Identity>>,
}

impl CurrentCert {
    fn usable(&self) -> Option<Arc<CertifiedKey>> {
        let identity = self.current.load();
        if identity.is_valid_now() {
            Some(identity.certified_key().clone())
        } else {
            tracing::debug!(
                identity = %identity.workload(),
                "mesh certificate is not valid now: not presenting it"
            );
            None
        }
    }
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CurrentCert")
            .field(&**self.current.load())
            .finish()
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.usable()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.usable()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
