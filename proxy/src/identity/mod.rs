//! The proxy's mesh identity and the mTLS configs built on it.
//!
//! A proxy proves who it is with a short-lived certificate from the mesh
//! CA (the control plane) whose only name is a SPIFFE id,
//! `spiffe://<trust-domain>/account/<account>/workload/<workload>`
//! ([`WorkloadIdentity`]). The life of that certificate here:
//!
//! 1. [`new_csr`] makes a fresh key ([`WorkloadKey`]) and a CSR; the CSR
//!    goes to the control plane, the key never leaves the process.
//! 2. [`Identity::new`] pairs the key with the certificate that comes back.
//! 3. An [`IdentityStore`] holds the current identity in an `ArcSwap`;
//!    [`server_config`] (inbound listener) and [`client_config`] (outbound
//!    to a peer's inbound listener) read it at every handshake, so
//!    [`IdentityStore::replace`] after a renewal applies to new handshakes
//!    without touching open connections.
//! 4. Renew at [`Identity::renew_at`] (about 70 % of the lifetime, with
//!    jitter). An identity that is no longer valid makes
//!    [`IdentityStore::is_ready`] false and is no longer presented, so
//!    mesh handshakes fail until a renewal succeeds.
//! 5. On an accepted connection, [`peer_identity`] names the caller from
//!    the verified peer certificate.
//!
//! Failure modes: a peer without a certificate, with one from another CA,
//! expired, or naming no workload of our trust domain fails at the
//! handshake; a plaintext client fails it too. Nothing here is wired into
//! the listeners or the join flow yet.

mod cert;
pub mod disk;
mod error;
mod key;
mod mesh;
mod peer;
mod renew;
mod store;
mod tls;
mod verify;

#[cfg(test)]
mod test_ca;
#[cfg(test)]
mod tests;

pub use cert::Identity;
pub use error::IdentityError;
pub use key::{WorkloadKey, new_csr};
pub use mesh::{HostCert, MeshState, MeshTls};
pub use peer::{PeerIdentity, peer_identity};
pub use renew::{renew_at, renew_at_with};
pub use store::IdentityStore;
pub use tls::{
    ALPN_PROTOCOLS, MESH_SERVER_NAME, TrustBundle, client_config, control_client_config, provider,
    server_config,
};
pub use trellis_config::identity::WorkloadIdentity;
