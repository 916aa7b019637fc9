//! Starting and stopping a proxy in-process: what the `trellis-proxy`
//! binary, `trellis dev` and the end-to-end tests call.
//!
//! [`start`] binds every listener (so a port-0 address is known when it
//! returns), loads the last good snapshot from the data directory if there
//! is one, and spawns the listener and sync tasks on the current tokio
//! runtime. It does not wait for the control plane: a proxy whose control
//! plane is down serves its snapshot from disk (or answers 503
//! `not_ready`) and keeps trying to reach it.

use crate::balance::Balancer;
use crate::config::ProxyConfig;
use crate::forward::Forwarder;
use crate::identity::{self, MeshState, MeshTls};
use crate::listen::{self, Servers};
use crate::observe::trace::{TRACE_FLUSH_TIMEOUT, TraceStats, Traces};
use crate::state::Shared;
use crate::sync::{self, ControlClient, disk};
use arc_swap::ArcSwapOption;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a proxy could not start, or a wait on it failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A setting is invalid; the message names it.
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    /// A listener could not be bound.
    #[error(
        "cannot bind the {listener} listener to {addr}: {source} (is another process using the port?)"
    )]
    Bind {
        /// `outbound`, `inbound` or `admin`.
        listener: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// No snapshot of at least the wanted version arrived in time.
    #[error(
        "proxy '{proxy}' has snapshot version {have:?}, wanted at least {want}, after {waited:?} (is the control plane at {control} up, and does this proxy's scope contain anything?)"
    )]
    NotReady {
        /// The proxy's name.
        proxy: String,
        /// The version it has.
        have: Option<u64>,
        /// The version waited for.
        want: u64,
        /// How long it waited.
        waited: Duration,
        /// The control plane URL.
        control: String,
    },
}

/// A started proxy. Dropping it signals shutdown without waiting; call
/// [`RunningProxy::shutdown`] to wait until every listener is closed and
/// every task has ended.
#[derive(Debug)]
pub struct RunningProxy {
    /// Bound address of the outbound listener.
    pub outbound_addr: SocketAddr,
    /// Bound address of the inbound listener, if there is one.
    pub inbound_addr: Option<SocketAddr>,
    /// Address told to the control plane for the inbound listener.
    pub inbound_advertised: Option<SocketAddr>,
    /// Bound address of the admin listener.
    pub admin_addr: SocketAddr,
    shared: Arc<Shared>,
    control_url: String,
    /// Starts the drain of the data listeners.
    drain: watch::Sender<bool>,
    drain_timeout: Duration,
    /// Stops everything else (admin, sync, tunnels) once the drain is over.
    shutdown: watch::Sender<bool>,
    /// The data listeners' accept loops, which end when drained.
    data_tasks: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Start a proxy: bind its listeners, load the last good snapshot from
/// `cfg.data_dir`, start syncing with the control plane. Must be called
/// within a tokio runtime (multi-threaded recommended).
pub async fn start(cfg: ProxyConfig) -> Result<RunningProxy, ProxyError> {
    cfg.validate().map_err(ProxyError::Config)?;

    let outbound = bind("outbound", cfg.outbound_listen).await?;
    let inbound = match cfg.inbound_listen {
        Some(addr) => Some(bind("inbound", addr).await?),
        None => None,
    };
    let admin = bind("admin", cfg.admin_listen).await?;
    let outbound_addr = local_addr("outbound", &outbound, cfg.outbound_listen)?;
    let inbound_addr = match (&inbound, cfg.inbound_listen) {
        (Some(l), Some(addr)) => Some(local_addr("inbound", l, addr)?),
        _ => None,
    };
    let admin_addr = local_addr("admin", &admin, cfg.admin_listen)?;
    let inbound_advertised = cfg.inbound_advertise.or(inbound_addr.map(advertisable));

    // Before anything is spawned: a bad trace setup fails the start.
    let traces =
        Traces::start(&cfg.traces, &cfg.name).map_err(|e| ProxyError::Config(e.to_string()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let (version_tx, _) = watch::channel(None);
    let metrics = crate::observe::metrics::ProxyMetrics::new();
    let mesh = load_identity(&cfg, &metrics);
    let shared = Arc::new(Shared {
        name: cfg.name.clone(),
        current: ArcSwapOption::empty(),
        balancer: Balancer::with_mesh(&mesh),
        forwarder: Forwarder::new(&cfg, &mesh),
        mesh: mesh.clone(),
        outbound: Servers::new(
            cfg.limits(),
            cfg.idle_timeout,
            drain_rx.clone(),
            cfg.drain_timeout,
        ),
        inbound: Servers::new(
            cfg.limits().for_inbound(),
            cfg.idle_timeout,
            drain_rx.clone(),
            cfg.drain_timeout,
        ),
        access_log: crate::observe::AccessLog::new(),
        metrics,
        version: version_tx,
        shutdown: shutdown_rx.clone(),
        traces,
    });

    load_from_disk(&shared, &cfg);

    // The data listeners drain on `drain`; the admin listener, sync and
    // tunnels run on until `shutdown`, which follows the drain (so `/ready`
    // can say 503 while draining).
    let mut data_tasks = Vec::with_capacity(2);
    let mut tasks = Vec::with_capacity(4);
    let s = Arc::clone(&shared);
    data_tasks.push(tokio::spawn(listen::accept_loop(
        outbound,
        "outbound",
        drain_rx.clone(),
        cfg.drain_timeout,
        move |stream, peer| listen::serve_outbound_connection(stream, peer, Arc::clone(&s)),
    )));
    if let Some(inbound) = inbound {
        let s = Arc::clone(&shared);
        data_tasks.push(tokio::spawn(listen::accept_loop(
            inbound,
            "inbound",
            drain_rx.clone(),
            cfg.drain_timeout,
            move |stream, peer| listen::serve_inbound_connection(stream, peer, Arc::clone(&s)),
        )));
    }
    tasks.push(tokio::spawn(sweep_rate_limits(
        Arc::clone(&shared),
        shutdown_rx.clone(),
    )));
    let s = Arc::clone(&shared);
    tasks.push(tokio::spawn(listen::accept_loop(
        admin,
        "admin",
        shutdown_rx.clone(),
        cfg.drain_timeout,
        move |stream, peer| listen::admin::serve_connection(stream, peer, Arc::clone(&s)),
    )));
    let sync = sync::Sync {
        shared: Arc::clone(&shared),
        control: ControlClient::with_mesh(&cfg.control_url, &mesh),
        registration: cfg.registration(inbound_advertised),
        data_dir: cfg.data_dir.clone(),
        idle_timeout: cfg.watch_idle_timeout,
        mesh: mesh.clone(),
        join_token: cfg.join_token.clone(),
    };
    tasks.push(tokio::spawn(sync.run(shutdown_rx)));

    tracing::info!(
        proxy = %cfg.name,
        %outbound_addr,
        inbound_addr = ?inbound_addr,
        inbound_advertised = ?inbound_advertised,
        %admin_addr,
        control = %cfg.control_url,
        "proxy started"
    );
    Ok(RunningProxy {
        outbound_addr,
        inbound_addr,
        inbound_advertised,
        admin_addr,
        shared,
        control_url: cfg.control_url,
        drain: drain_tx,
        drain_timeout: cfg.drain_timeout,
        shutdown: shutdown_tx,
        data_tasks,
        tasks,
    })
}

/// Drop idle per-caller rate-limit buckets now and then.
async fn sweep_rate_limits(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(crate::listen::ratelimit::SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => shared.forwarder.runtime.limiters.sweep(),
            _ = signalled(&mut stop) => return,
        }
    }
}

impl RunningProxy {
    /// The proxy's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Version of the snapshot in use; `None` before the first one.
    pub fn snapshot_version(&self) -> Option<u64> {
        self.shared.current_version()
    }

    /// What happened to this proxy's spans (exported, failed, dropped);
    /// `None` when tracing is off.
    pub fn trace_stats(&self) -> Option<TraceStats> {
        self.shared.traces.as_ref().map(|t| t.stats())
    }

    /// Wait until a snapshot is in use (from the control plane or from
    /// disk); returns its version.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<u64, ProxyError> {
        self.wait_for_version(0, timeout).await
    }

    /// Wait until the snapshot in use has at least version `min` (e.g.
    /// after a change through the control plane's API).
    pub async fn wait_for_version(&self, min: u64, timeout: Duration) -> Result<u64, ProxyError> {
        let mut rx = self.shared.version.subscribe();
        let waited =
            tokio::time::timeout(timeout, rx.wait_for(|v| v.is_some_and(|v| v >= min))).await;
        match waited {
            Ok(Ok(v)) => Ok(v.unwrap_or(min)),
            _ => Err(ProxyError::NotReady {
                proxy: self.shared.name.clone(),
                have: self.snapshot_version(),
                want: min,
                waited: timeout,
                control: self.control_url.clone(),
            }),
        }
    }

    /// Whether the proxy is draining (after [`RunningProxy::shutdown`] was
    /// called): `/ready` answers 503 then.
    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// Stop: drain, then end every task.
    ///
    /// The data listeners close at once (new connections are refused) and
    /// the proxy reports not ready; requests in flight get the drain
    /// timeout to finish (HTTP/2: GOAWAY; HTTP/1.1: `Connection: close` on
    /// every answer), and so do WebSocket tunnels; what is left then is
    /// cut. Then the admin listener closes and syncing stops. Returns when
    /// every task has ended and every port is released.
    pub async fn shutdown(mut self) {
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        self.shared.start_drain();
        self.drain.send_replace(true);
        tracing::info!(proxy = %self.shared.name, timeout = ?self.drain_timeout, "draining");
        for task in std::mem::take(&mut self.data_tasks) {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(error = %e, "a proxy task panicked");
            }
        }
        if tokio::time::timeout_at(deadline, self.shared.forwarder.tunnels_closed())
            .await
            .is_err()
        {
            tracing::info!("drain timeout; cutting upgraded connections");
        }
        self.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(error = %e, "a proxy task panicked");
            }
        }
        // Let the access log write what is queued (a blocked destination
        // is not waited for beyond the bound).
        let shared = Arc::clone(&self.shared);
        let closing = tokio::task::spawn_blocking(move || {
            shared
                .access_log
                .close(crate::observe::access_log::CLOSE_TIMEOUT);
        });
        let _ = closing.await;
        // Export the spans still queued, within a bound.
        if let Some(traces) = &self.shared.traces {
            traces.shutdown(TRACE_FLUSH_TIMEOUT).await;
        }
        tracing::info!(proxy = %self.shared.name, "proxy stopped");
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.drain.send_replace(true);
        self.shutdown.send_replace(true);
    }
}

/// Resolves when `rx` turns `true`, or when its sender is gone (which
/// means the same: the proxy is stopping).
pub(crate) async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind {
            listener,
            addr,
            source,
        })
}

fn local_addr(
    listener: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ProxyError> {
    l.local_addr().map_err(|source| ProxyError::Bind {
        listener,
        addr,
        source,
    })
}

/// An address other proxies can use: a wildcard bind address becomes
/// loopback (set `inbound_advertise` for real multi-host deployments).
fn advertisable(bound: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let ip = match bound.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    tracing::warn!(
        %bound,
        "the inbound listener is bound to a wildcard address and no inbound_advertise is set; advertising loopback, which only proxies on this host can reach"
    );
    SocketAddr::new(ip, bound.port())
}

/// The proxy's mesh TLS slot, with the identity saved in the data
/// directory installed when it is this proxy's and still valid (a restart
/// then needs no join token). Mesh TLS is required with a join token or a
/// saved identity; without either the proxy runs in plaintext.
fn load_identity(cfg: &ProxyConfig, metrics: &crate::observe::metrics::ProxyMetrics) -> MeshTls {
    let saved = match identity::disk::load(&cfg.data_dir) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the saved mesh identity");
            None
        }
    };
    let required = cfg.join_token.is_some() || saved.is_some();
    let mesh = MeshTls::new(required);
    if !required {
        tracing::warn!(
            "no join token and no saved identity: running WITHOUT mesh TLS (plaintext inbound; for development only)"
        );
    }
    let Some((id, trust)) = saved else {
        return mesh;
    };
    let ours = id.workload().workload() == cfg.name;
    if !(ours && id.is_valid_now()) && cfg.join_token.is_some() {
        tracing::info!(identity = %id.workload(), "the saved identity is expired or not this proxy's; joining again");
        return mesh;
    }
    if !ours {
        tracing::error!(
            identity = %id.workload(),
            proxy = %cfg.name,
            "the saved identity belongs to another proxy name and no join token is set: the control plane will refuse this proxy (set --join-token, or use this proxy's own data directory)"
        );
    }
    let not_after = id.not_after();
    let workload = id.workload().to_string();
    match MeshState::new(id, trust) {
        Ok(state) => {
            metrics.set_certificate_expiry(not_after);
            mesh.install(state);
            tracing::info!(identity = %workload, "using the saved mesh identity");
        }
        Err(e) => tracing::warn!(error = %e, "the saved mesh identity is unusable"),
    }
    mesh
}

fn load_from_disk(shared: &Shared, cfg: &ProxyConfig) {
    match disk::load(&cfg.data_dir) {
        Ok(None) => {
            tracing::debug!(dir = %cfg.data_dir.display(), "no saved snapshot");
        }
        Ok(Some(snapshot)) => {
            let version = snapshot.version;
            match shared.install(snapshot) {
                Ok(_) => tracing::info!(
                    version,
                    "serving the saved snapshot until the control plane answers"
                ),
                Err(e) => tracing::warn!(version, error = %e, "ignoring the saved snapshot"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "ignoring the saved snapshot"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_advertise_loopback() {
        let a: SocketAddr = "0.0.0.0:1234".parse().unwrap();
        assert_eq!(advertisable(a), "127.0.0.1:1234".parse().unwrap());
        let b: SocketAddr = "10.1.2.3:1".parse().unwrap();
        assert_eq!(advertisable(b), b);
    }
}
