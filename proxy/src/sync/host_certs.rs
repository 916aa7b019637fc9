//! Certificates of HTTPS listeners: for every host name of a service with
//! an HTTPS listener in the snapshot, a key made here and a certificate
//! from the control plane (over mTLS), renewed at ~70 % of its life and
//! dropped when no HTTPS listener needs it any more. The outbound listener
//! serves them by SNI to clients outside the mesh.

use super::control::ControlClient;
use super::identity::IdentityFailure;
use crate::identity::{HostCert, WorkloadKey, provider, renew_at};
use crate::run::signalled;
use crate::state::Shared;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use trellis_config::ListenerProtocol;

/// How often the certificates are checked for renewal besides each new
/// snapshot (a renewal point is at least seconds away).
pub const HOST_CERT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct Ask<'a> {
    host: &'a str,
    csr: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Issued {
    certificate: String,
    not_after_unix: u64,
}

async fn issue(
    control: &ControlClient,
    proxy: &str,
    host: &str,
) -> Result<HostCert, IdentityFailure> {
    let key = WorkloadKey::generate()?;
    let csr = key.host_csr_pem(host)?;
    let path = format!("/v1/proxies/{proxy}/host-certificates");
    let issued: Issued = control.post_for(&path, &Ask { host, csr: &csr }).await?;
    let chain = CertificateDer::pem_slice_iter(issued.certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityFailure::Save(format!("the host certificate is not PEM: {e}")))?;
    let key = CertifiedKey::from_der(chain, key.private_key_der(), &provider())
        .map_err(|e| IdentityFailure::Save(e.to_string()))?;
    let not_after = UNIX_EPOCH + Duration::from_secs(issued.not_after_unix);
    Ok(HostCert {
        key: Arc::new(key),
        renew_at: renew_at(not_after, SystemTime::now()),
    })
}

/// The host names that need a certificate now.
fn wanted(shared: &Shared) -> BTreeSet<String> {
    let Some(prepared) = shared.current.load_full() else {
        return BTreeSet::new();
    };
    prepared
        .snapshot
        .services
        .iter()
        .filter(|s| {
            s.listeners
                .iter()
                .any(|l| l.protocol == ListenerProtocol::Https)
        })
        .flat_map(|s| s.hosts.iter().map(|h| h.to_ascii_lowercase()))
        .collect()
}

async fn ensure(control: &ControlClient, shared: &Shared) {
    if shared.mesh.state().is_none() {
        return;
    }
    let want = wanted(shared);
    let current = shared.mesh.host_certs();
    if want.is_empty() && current.is_empty() {
        return;
    }
    let now = Instant::now();
    let mut next = HashMap::with_capacity(want.len());
    let mut changed = want.len() != current.len();
    for host in want {
        if let Some(c) = current.get(&host).filter(|c| c.renew_at > now) {
            next.insert(host, Arc::clone(c));
            continue;
        }
        match issue(control, &shared.name, &host).await {
            Ok(c) => {
                tracing::info!(host, "HTTPS listener certificate issued");
                next.insert(host, Arc::new(c));
                changed = true;
            }
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot get a certificate for an HTTPS listener");
                if let Some(c) = current.get(&host) {
                    next.insert(host, Arc::clone(c));
                }
            }
        }
    }
    if changed {
        shared.mesh.set_host_certs(next);
    }
}

/// Keep the HTTPS certificates in line with the snapshot until shutdown.
pub(crate) async fn host_cert_loop(
    control: ControlClient,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut versions = shared.version.subscribe();
    loop {
        ensure(&control, &shared).await;
        tokio::select! {
            _ = versions.changed() => {}
            _ = tokio::time::sleep(HOST_CERT_CHECK_INTERVAL) => {}
            _ = signalled(&mut shutdown) => return,
        }
    }
}
