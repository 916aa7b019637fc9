//! Getting and keeping the proxy's mesh certificate: the join (once, with
//! the join token, over the plain API) and renewals (over mTLS, with the
//! current certificate) at about 70 % of each certificate's life.
//!
//! A renewal swaps the certificate in the [`IdentityStore`]: new
//! handshakes present the new one, open connections go on. When renewals
//! keep failing until the certificate expires, the store stops presenting
//! it: the inbound refuses mesh traffic and `/ready` answers 503 until a
//! join with the proxy's join token (if it has one still valid) succeeds.
//!
//! [`IdentityStore`]: crate::identity::IdentityStore

use super::SyncError;
use super::backoff::Backoff;
use super::control::ControlClient;
use crate::config::Secret;
use crate::identity::{Identity, MeshState, MeshTls, TrustBundle, disk, new_csr};
use crate::observe::metrics::ProxyMetrics;
use crate::run::signalled;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use trellis_config::identity::WorkloadIdentity;

/// First wait after a failed join or renewal.
pub const IDENTITY_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Longest wait between join or renewal attempts.
pub const IDENTITY_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct JoinBody<'a> {
    name: &'a str,
    csr: &'a str,
}

#[derive(Serialize)]
struct RenewBody<'a> {
    csr: &'a str,
}

/// The control plane's answer to a join or a renewal.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Issued {
    certificate: String,
    ca_bundle: String,
}

/// Why an identity could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityFailure {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot save the identity: {0}")]
    Save(String),
    #[error("the proxy name cannot be a workload identity: {0}")]
    Name(String),
}

async fn save(
    data_dir: &Path,
    key_pem: String,
    cert: String,
    ca: String,
) -> Result<(), IdentityFailure> {
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || disk::save(&dir, &key_pem, &cert, &ca))
        .await
        .map_err(|e| IdentityFailure::Save(e.to_string()))?
        .map_err(IdentityFailure::from)
}

/// Join with `token`: a new key here, its CSR to the control plane.
async fn join_once(
    control: &ControlClient,
    name: &str,
    token: &Secret,
    data_dir: &Path,
) -> Result<(Identity, TrustBundle), IdentityFailure> {
    // The identity asked for is only a placeholder: the control plane
    // decides the account (the token's) and the trust domain.
    let placeholder = WorkloadIdentity::new("trellis.invalid", "000000000000", name)
        .map_err(|e| IdentityFailure::Name(e.to_string()))?;
    let (key, csr) = new_csr(&placeholder)?;
    let issued: Issued = control
        .post_plain_for("/v1/join", &JoinBody { name, csr: &csr }, token.expose())
        .await?;
    let key_pem = key.to_pem();
    let identity = Identity::new(key, &issued.certificate)?;
    let trust = TrustBundle::from_pem(&issued.ca_bundle)?;
    save(data_dir, key_pem, issued.certificate, issued.ca_bundle).await?;
    Ok((identity, trust))
}

/// Join (retrying with backoff) until it works or the proxy stops.
pub(crate) async fn join(
    control: &ControlClient,
    name: &str,
    token: &Secret,
    data_dir: &Path,
    mesh: &MeshTls,
    metrics: &ProxyMetrics,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(IDENTITY_RETRY_INITIAL, IDENTITY_RETRY_MAX);
    loop {
        let result = tokio::select! {
            r = join_once(control, name, token, data_dir) => r,
            _ = signalled(shutdown) => return,
        };
        match result.and_then(|(identity, trust)| {
            let not_after = identity.not_after();
            let workload = identity.workload().to_string();
            MeshState::new(identity, trust)
                .map(|state| (state, not_after, workload))
                .map_err(IdentityFailure::from)
        }) {
            Ok((state, not_after, workload)) => {
                metrics.set_certificate_expiry(not_after);
                mesh.install(state);
                tracing::info!(identity = %workload, not_after = %humantime::format_rfc3339_seconds(not_after), "joined the mesh");
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "cannot join the mesh");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = signalled(shutdown) => return,
                }
            }
        }
    }
}

async fn renew_once(
    control: &ControlClient,
    current: &Identity,
    data_dir: &Path,
) -> Result<Identity, IdentityFailure> {
    let id = current.workload();
    let (key, csr) = new_csr(id)?;
    let path = format!("/v1/proxies/{}/renew", id.workload());
    let issued: Issued = control.post_for(&path, &RenewBody { csr: &csr }).await?;
    let key_pem = key.to_pem();
    let next = Identity::new(key, &issued.certificate)?;
    save(data_dir, key_pem, issued.certificate, issued.ca_bundle).await?;
    Ok(next)
}

/// A renewal; once the certificate has expired (mTLS to the control plane
/// is then impossible) a join with the token, if the proxy has one.
async fn renew_or_rejoin(
    control: &ControlClient,
    current: &Identity,
    data_dir: &Path,
    token: Option<&Secret>,
) -> Result<Identity, IdentityFailure> {
    match (current.is_valid_now(), token) {
        (false, Some(token)) => {
            let name = current.workload().workload().to_owned();
            join_once(control, &name, token, data_dir)
                .await
                .map(|(identity, _)| identity)
        }
        _ => renew_once(control, current, data_dir).await,
    }
}

/// Renew before each certificate's renewal point, forever.
pub(crate) async fn renew_loop(
    control: ControlClient,
    data_dir: PathBuf,
    mesh: MeshTls,
    shared: std::sync::Arc<crate::state::Shared>,
    join_token: Option<Secret>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(IDENTITY_RETRY_INITIAL, IDENTITY_RETRY_MAX);
    loop {
        let Some(state) = mesh.state() else {
            tokio::select! {
                _ = tokio::time::sleep(IDENTITY_RETRY_INITIAL) => continue,
                _ = signalled(&mut shutdown) => return,
            }
        };
        let current = state.store.current();
        tokio::select! {
            _ = tokio::time::sleep_until(current.renew_at().into()) => {}
            _ = signalled(&mut shutdown) => return,
        }
        loop {
            let result = tokio::select! {
                r = renew_or_rejoin(&control, &current, &data_dir, join_token.as_ref()) => r,
                _ = signalled(&mut shutdown) => return,
            };
            match result.and_then(|next| {
                let not_after = next.not_after();
                state
                    .store
                    .replace(next)
                    .map(|_| not_after)
                    .map_err(IdentityFailure::from)
            }) {
                Ok(not_after) => {
                    shared.metrics.set_certificate_expiry(not_after);
                    backoff.reset();
                    tracing::info!(not_after = %humantime::format_rfc3339_seconds(not_after), "mesh certificate renewed");
                    break;
                }
                Err(e) => {
                    // Retry sooner than the backoff when the certificate is close to expiry.
                    let left = current
                        .not_after()
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    let delay = backoff
                        .next_delay()
                        .min(left / 4)
                        .max(IDENTITY_RETRY_INITIAL);
                    if left.is_zero() {
                        tracing::error!(error = %e, "mesh certificate expired and cannot be renewed: refusing mesh traffic until a renewal succeeds");
                    } else {
                        tracing::warn!(error = %e, retry_in = ?delay, expires_in = ?left, "cannot renew the mesh certificate");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until((Instant::now() + delay).into()) => {}
                        _ = signalled(&mut shutdown) => return,
                    }
                }
            }
        }
    }
}
