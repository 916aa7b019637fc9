//! Config sync: the proxy's side of the watch protocol.
//!
//! 1. `POST {control}/v1/proxies` with the [`ProxyRegistration`];
//! 2. `GET {control}/v1/proxies/{name}/watch?version={v}`, an endless
//!    NDJSON stream of [`WatchEvent`]s;
//! 3. for each snapshot: prepare it (routes, balancer), swap it in, write
//!    it to `data_dir/snapshot.json`, and `POST .../ack` the version in
//!    use, with the reason when the snapshot was rejected (the proxy then
//!    keeps the one it has).
//!
//! Beside the watch, [`health`] reports target health to the control
//! plane, and when the sync task ends (the proxy stops) the health
//! checkers stop with it.
//!
//! Under failure: a stream silent for the watch idle timeout (three missed
//! heartbeats), closed, or failing, and any failed call, end the session;
//! the proxy keeps serving its snapshot and starts over (register again,
//! resume from the version it has) after a capped, jittered exponential
//! backoff. Nothing the control plane sends can take away the snapshot in
//! use except a newer one that prepares cleanly.

mod backoff;
mod control;
pub mod disk;
pub mod health;
mod host_certs;
pub(crate) mod identity;
mod lines;

use crate::run::signalled;
use crate::state::{Prepared, Shared};
use backoff::Backoff;
pub(crate) use control::ControlClient;
use control::SyncError;
use http_body_util::BodyExt;
use lines::Lines;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use trellis_config::{Ack, ProxyRegistration, Snapshot, WatchEvent};

/// First reconnect delay: quick, since a restarting control plane is
/// usually back within a second.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(100);

/// Longest reconnect delay: a proxy notices a returning control plane
/// within this (plus jitter below it).
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Longest watch line accepted (one snapshot); far above any real
/// snapshot, but bounds memory if the stream is not what we expect.
pub const MAX_WATCH_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Every this many consecutive failed sessions, a failure is logged at
/// warn level again (others at debug), so a long outage does not flood
/// the log.
const WARN_EVERY: u32 = 20;

/// The sync task.
#[derive(Debug)]
pub(crate) struct Sync {
    pub shared: Arc<Shared>,
    pub control: ControlClient,
    pub registration: ProxyRegistration,
    pub data_dir: PathBuf,
    pub idle_timeout: Duration,
    /// The proxy's mesh TLS slot.
    pub mesh: crate::identity::MeshTls,
    /// Join token, for a proxy without a saved identity.
    pub join_token: Option<crate::config::Secret>,
}

impl Sync {
    /// Run sessions, and the health reporter, until `shutdown`; then stop
    /// the health checkers.
    pub(crate) async fn run(self, shutdown: watch::Receiver<bool>) {
        if self.mesh.is_required() && self.mesh.state().is_none() {
            let mut stop = shutdown.clone();
            match &self.join_token {
                Some(token) => {
                    identity::join(
                        &self.control,
                        &self.shared.name,
                        token,
                        &self.data_dir,
                        &self.mesh,
                        &self.shared.metrics,
                        &mut stop,
                    )
                    .await;
                }
                None => tracing::error!(
                    "this proxy has no mesh certificate and no join token: it cannot reach the control plane or peers (set --join-token)"
                ),
            }
            if *stop.borrow() {
                return;
            }
        }
        let renewer = self.mesh.is_required().then(|| {
            tokio::spawn(identity::renew_loop(
                self.control.clone(),
                self.data_dir.clone(),
                self.mesh.clone(),
                Arc::clone(&self.shared),
                self.join_token.clone(),
                shutdown.clone(),
            ))
        });
        let host_certs = self.mesh.is_required().then(|| {
            tokio::spawn(host_certs::host_cert_loop(
                self.control.clone(),
                Arc::clone(&self.shared),
                shutdown.clone(),
            ))
        });
        let reporter = tokio::spawn(health::report(
            Arc::clone(&self.shared),
            self.control.clone(),
            shutdown.clone(),
        ));
        self.sessions(shutdown).await;
        if let Some(r) = renewer {
            let _ = r.await;
        }
        if let Some(h) = host_certs {
            let _ = h.await;
        }
        self.shared.balancer.stop_health_checks();
        if let Err(e) = reporter.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "the health reporter panicked");
        }
    }

    /// Run sessions until `shutdown`.
    async fn sessions(&self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
        let mut failures: u32 = 0;
        loop {
            let mut healthy = false;
            let result = tokio::select! {
                r = self.session(&mut healthy) => r,
                _ = signalled(&mut shutdown) => return,
            };
            if healthy {
                backoff.reset();
                failures = 0;
            }
            failures = failures.saturating_add(1);
            let Err(error) = result;
            let delay = backoff.next_delay();
            if failures == 1 || failures.is_multiple_of(WARN_EVERY) {
                tracing::warn!(
                    control = self.control.base(),
                    %error,
                    failures,
                    retry_in = ?delay,
                    serving_version = ?self.shared.current_version(),
                    "config sync interrupted"
                );
            } else {
                tracing::debug!(%error, failures, retry_in = ?delay, "config sync interrupted");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = signalled(&mut shutdown) => return,
            }
        }
    }

    /// Register, watch, apply. Ends only with an error. `healthy` turns
    /// true once the watch stream delivered something.
    async fn session(&self, healthy: &mut bool) -> Result<Infallible, SyncError> {
        self.control
            .post_json("/v1/proxies", &self.registration)
            .await?;
        let version = self.shared.current_version().unwrap_or(0);
        let mut body = self.control.watch(&self.shared.name, version).await?;
        tracing::debug!(version, "watching the control plane");
        let mut lines = Lines::new(MAX_WATCH_LINE_BYTES);
        loop {
            let frame = match tokio::time::timeout(self.idle_timeout, body.frame()).await {
                Err(_) => return Err(SyncError::Silent(self.idle_timeout)),
                Ok(None) => return Err(SyncError::Ended),
                Ok(Some(Err(e))) => {
                    return Err(SyncError::Stream(crate::forward::source_chain(&e)));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            *healthy = true;
            lines.push(&data);
            while let Some(line) = lines.next_line()? {
                self.on_line(&line).await;
            }
        }
    }

    async fn on_line(&self, line: &[u8]) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        match serde_json::from_slice::<WatchEvent>(line) {
            Ok(WatchEvent::Heartbeat { version }) => {
                tracing::trace!(version, "heartbeat");
            }
            Ok(WatchEvent::Snapshot { snapshot }) => self.apply(snapshot).await,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a watch line that is not a watch event");
            }
        }
    }

    /// Install `snapshot`, persist it, acknowledge.
    async fn apply(&self, snapshot: Snapshot) {
        let version = snapshot.version;
        if let Some(current) = self.shared.current.load_full()
            && current.snapshot == snapshot
        {
            self.ack(Ack {
                version,
                error: None,
            })
            .await;
            return;
        }
        match self.shared.install(snapshot) {
            Ok(prepared) => {
                tracing::info!(
                    version,
                    services = prepared.snapshot.services.len(),
                    target_groups = prepared.snapshot.target_groups.len(),
                    "snapshot applied"
                );
                self.persist(&prepared).await;
                self.ack(Ack {
                    version,
                    error: None,
                })
                .await;
            }
            Err(error) => {
                let running = self.shared.current_version();
                tracing::warn!(version, %error, ?running, "snapshot rejected; keeping the one in use");
                self.ack(Ack {
                    version: running.unwrap_or(0),
                    error: Some(format!("snapshot version {version} rejected: {error}")),
                })
                .await;
            }
        }
    }

    async fn persist(&self, prepared: &Prepared) {
        let json = match serde_json::to_vec(&prepared.snapshot) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize the snapshot for disk");
                return;
            }
        };
        let dir = self.data_dir.clone();
        let written = tokio::task::spawn_blocking(move || disk::save(&dir, &json)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                path = %disk::snapshot_path(&self.data_dir).display(),
                error = %e,
                "cannot save the snapshot; a restart without the control plane would start empty"
            ),
            Err(e) => tracing::warn!(error = %e, "snapshot writer task failed"),
        }
    }

    async fn ack(&self, ack: Ack) {
        let path = format!("/v1/proxies/{}/ack", self.shared.name);
        if let Err(e) = self.control.post_json(&path, &ack).await {
            tracing::warn!(version = ack.version, error = %e, "cannot acknowledge the snapshot");
        }
    }
}
