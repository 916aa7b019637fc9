//! The push side: keeps the model current from the store, compiles each
//! registered proxy's snapshot after a change (bursts coalesced), and hands
//! new versions to the proxies' watch streams. Also tracks what each proxy
//! applied.

use crate::compile::{compile_at, scope};
use crate::drain;
use crate::keys;
use crate::metrics::ControlMetrics;
use crate::model::Model;
use crate::store::{Revision, Store, StoreError};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};
use trellis_config::{HealthReport, ProxyRegistration, ProxyStatus, Snapshot};

/// Quiet time after a change before compiling, so a burst of writes (an
/// `apply` of many documents) becomes one push. Small against the 100 ms
/// push target.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(10);
/// Longest a burst can delay a push.
pub const MAX_COALESCE_DELAY: Duration = Duration::from_millis(50);
/// Interval of heartbeat lines on watch streams.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a proxy's health report still counts after the proxy was
/// last heard from, once its watch stream is closed. Long enough to ride
/// out a proxy restart or a reconnect to this replica (a few heartbeats),
/// short enough that a proxy gone for good stops vouching for targets.
pub const HEALTH_REPORT_TTL: Duration = Duration::from_secs(30);

/// What the hub knows of one proxy.
#[derive(Debug)]
struct ProxyEntry {
    snapshot: watch::Sender<Arc<Snapshot>>,
    applied_version: u64,
    last_contact: Option<SystemTime>,
    connected: usize,
    last_error: Option<String>,
    /// The proxy's latest health report (a full view, replaced by the next).
    health: Option<Arc<HealthReport>>,
    /// The last version published to it and when, until it is acked
    /// (for `trellis_ack_latency_seconds`).
    published: Option<(u64, Instant)>,
}

impl ProxyEntry {
    fn new() -> Self {
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
        Self {
            snapshot,
            applied_version: 0,
            last_contact: None,
            connected: 0,
            last_error: None,
            health: None,
            published: None,
        }
    }

    /// Whether its health report still counts at `now`: while its watch
    /// stream is open, and for [`HEALTH_REPORT_TTL`] after last contact.
    fn report_is_live(&self, now: SystemTime) -> bool {
        self.connected > 0
            || self.last_contact.is_some_and(|t| {
                now.duration_since(t)
                    .is_ok_and(|age| age < HEALTH_REPORT_TTL)
                    || t > now
            })
    }
}

/// The shared push state.
#[derive(Debug)]
pub struct Hub {
    model: watch::Sender<Arc<Model>>,
    proxies: Mutex<HashMap<String, ProxyEntry>>,
    /// End of validity of each proxy's certificate, as last presented.
    certificates: Mutex<HashMap<String, SystemTime>>,
    compiling: Mutex<()>,
    dirty: Notify,
    /// When the oldest store change not yet compiled was seen.
    change_seen: Mutex<Option<Instant>>,
    metrics: Arc<ControlMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn same_view(a: &Snapshot, b: &Snapshot) -> bool {
    a.networks == b.networks
        && a.services == b.services
        && a.target_groups == b.target_groups
        && a.fronted_services == b.fronted_services
        && a.fronted_networks == b.fronted_networks
        && a.proxy == b.proxy
}

impl Hub {
    /// Load the model from the store and start the watch and compile
    /// loops; they end when `shutdown` fires.
    pub async fn start(
        store: Arc<dyn Store>,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<ControlMetrics>,
    ) -> Result<Arc<Hub>, StoreError> {
        let (kvs, rev) = store.range(keys::ROOT).await?;
        let model = Model::load(&kvs, rev);
        let (tx, _) = watch::channel(Arc::new(model));
        let hub = Arc::new(Hub {
            model: tx,
            proxies: Mutex::new(HashMap::new()),
            certificates: Mutex::new(HashMap::new()),
            compiling: Mutex::new(()),
            dirty: Notify::new(),
            change_seen: Mutex::new(None),
            metrics,
        });
        hub.recompile();
        tokio::spawn(Arc::clone(&hub).watch_loop(store, rev, shutdown.clone()));
        tokio::spawn(Arc::clone(&hub).compile_loop(shutdown));
        Ok(hub)
    }

    async fn watch_loop(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut rev: Revision,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let stream = tokio::select! {
                _ = shutdown.changed() => return,
                s = store.watch(keys::ROOT, rev + 1) => s,
            };
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    if matches!(e, StoreError::Compacted { .. }) {
                        rev = self.reload(&store).await.unwrap_or(rev);
                    }
                    tracing::warn!(error = %e, "store watch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.changed() => return,
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok(batch)) => {
                        backoff = Duration::from_millis(50);
                        rev = batch.revision;
                        let mut relevant = false;
                        self.model
                            .send_modify(|m| relevant = Arc::make_mut(m).apply(&batch));
                        if relevant {
                            lock(&self.change_seen).get_or_insert_with(Instant::now);
                            self.dirty.notify_one();
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "store watch ended; re-reading the store");
                        rev = self.reload(&store).await.unwrap_or(rev);
                        break;
                    }
                    None => break,
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn reload(&self, store: &Arc<dyn Store>) -> Result<Revision, StoreError> {
        let (kvs, rev) = store.range(keys::ROOT).await?;
        self.model.send_replace(Arc::new(Model::load(&kvs, rev)));
        self.dirty.notify_one();
        Ok(rev)
    }

    /// Compile after store changes (bursts coalesced) and when a draining
    /// target's deadline passes, which changes snapshots without any write.
    async fn compile_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let drain_ends = self.next_drain_deadline();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.dirty.notified() => {
                    let deadline = tokio::time::Instant::now() + MAX_COALESCE_DELAY;
                    loop {
                        let quiet = tokio::time::sleep(COALESCE_WINDOW);
                        tokio::select! {
                            _ = self.dirty.notified() => if tokio::time::Instant::now() >= deadline { break },
                            _ = quiet => break,
                        }
                    }
                }
                _ = sleep_or_forever(drain_ends) => {
                    tracing::debug!("a deregistration delay ended; recompiling");
                }
            }
            let hub = Arc::clone(&self);
            // Compiling thousands of services is CPU work: keep it off the I/O workers.
            if let Err(e) = tokio::task::spawn_blocking(move || hub.recompile()).await {
                tracing::error!(error = %e, "snapshot compile panicked");
            }
        }
    }

    /// Time from now to the earliest drain deadline, if a target drains.
    fn next_drain_deadline(&self) -> Option<Duration> {
        let model = self.model.borrow().clone();
        let now = drain::now_ms();
        // One millisecond past the deadline: at the deadline itself the
        // target is already gone, so the compile that wakes then drops it.
        drain::earliest_deadline(&model, now).map(|at| Duration::from_millis(at - now + 1))
    }

    /// Compile every registered proxy's snapshot and publish those whose
    /// view changed, versioned with the model's revision (or one past the
    /// previous version when only time changed it: a drain ended). Compiles
    /// run one at a time, outside the lock that acks and status reads take.
    fn recompile(&self) {
        let _one_at_a_time = lock(&self.compiling);
        // Taken before the model is read: the changes it marks are in
        // the model this compile sees.
        let change_seen = lock(&self.change_seen).take();
        let model = self.model.borrow().clone();
        let now_ms = drain::now_ms();
        let current: HashMap<String, Arc<Snapshot>> = {
            let mut proxies = lock(&self.proxies);
            proxies.retain(|name, e| model.proxies.contains_key(name) || e.connected > 0);
            for (name, e) in proxies.iter_mut() {
                if !model.proxies.contains_key(name) {
                    // Deleted while still connected: it vouches for nothing.
                    e.health = None;
                }
            }
            model
                .proxies
                .keys()
                .map(|name| {
                    (
                        name.clone(),
                        proxies
                            .entry(name.clone())
                            .or_insert_with(ProxyEntry::new)
                            .snapshot
                            .borrow()
                            .clone(),
                    )
                })
                .collect()
        };
        let mut fresh = Vec::new();
        for (name, reg) in &model.proxies {
            let mut snap = compile_at(&model, reg, now_ms);
            let old = current.get(name);
            if old.is_none_or(|o| !same_view(o, &snap)) {
                snap.version = model.revision.max(old.map_or(0, |o| o.version + 1));
                fresh.push((name.clone(), snap));
            }
        }
        let mut proxies = lock(&self.proxies);
        let published = !fresh.is_empty();
        for (name, snap) in fresh {
            if let Some(e) = proxies.get_mut(&name) {
                tracing::debug!(proxy = %name, version = snap.version, "new snapshot");
                e.published = Some((snap.version, Instant::now()));
                e.snapshot.send_replace(Arc::new(snap));
            }
        }
        drop(proxies);
        if let (true, Some(seen)) = (published, change_seen) {
            self.metrics.pushed(seen.elapsed());
        }
    }

    /// The model now (for `explain`).
    pub fn model(&self) -> Arc<Model> {
        self.model.borrow().clone()
    }

    /// The model's revision now.
    pub fn revision(&self) -> Revision {
        self.model.borrow().revision
    }

    /// Wait until the model has caught up with `rev` (a write just made),
    /// and its snapshots are compiled, up to `timeout`.
    pub async fn caught_up(&self, rev: Revision, timeout: Duration) {
        let mut rx = self.model.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|m| m.revision >= rev)).await;
        self.recompile();
    }

    /// Subscribe to a registered proxy's snapshots; `None` if it is not registered.
    pub fn subscribe(self: &Arc<Self>, name: &str) -> Option<Subscription> {
        let mut proxies = lock(&self.proxies);
        let e = proxies.get_mut(name)?;
        e.connected += 1;
        e.last_contact = Some(SystemTime::now());
        Some(Subscription {
            hub: Arc::clone(self),
            name: name.to_string(),
            rx: e.snapshot.subscribe(),
        })
    }

    /// Record a proxy's acknowledgement.
    pub fn ack(&self, name: &str, version: u64, error: Option<String>) -> bool {
        let mut proxies = lock(&self.proxies);
        let Some(e) = proxies.get_mut(name) else {
            return false;
        };
        if let Some((v, at)) = e.published
            && v == version
        {
            self.metrics.acked(at.elapsed());
            e.published = None;
        }
        e.applied_version = version;
        e.last_error = error;
        e.last_contact = Some(SystemTime::now());
        true
    }

    /// Record a proxy's health report, replacing its previous one; false
    /// if the proxy is not registered.
    pub fn report_health(&self, name: &str, report: HealthReport) -> bool {
        if !self.model.borrow().proxies.contains_key(name) {
            return false;
        }
        let mut proxies = lock(&self.proxies);
        let Some(e) = proxies.get_mut(name) else {
            return false;
        };
        e.health = Some(Arc::new(report));
        e.last_contact = Some(SystemTime::now());
        true
    }

    /// The health reports that count now, by proxy name: those of
    /// registered proxies that are connected or were heard from within
    /// [`HEALTH_REPORT_TTL`]. Reports that no longer count are dropped.
    pub fn health_reports(&self) -> Vec<(String, Arc<HealthReport>)> {
        let model = self.model.borrow().clone();
        let now = SystemTime::now();
        let mut proxies = lock(&self.proxies);
        let mut out = Vec::new();
        for (name, e) in proxies.iter_mut() {
            if !model.proxies.contains_key(name) || !e.report_is_live(now) {
                e.health = None;
            }
            if let Some(h) = &e.health {
                out.push((name.clone(), Arc::clone(h)));
            }
        }
        out
    }

    fn touch(&self, name: &str) {
        if let Some(e) = lock(&self.proxies).get_mut(name) {
            e.last_contact = Some(SystemTime::now());
        }
    }

    /// The status of one proxy.
    pub fn status(&self, name: &str) -> Option<ProxyStatus> {
        let model = self.model.borrow().clone();
        let reg = model.proxies.get(name)?;
        let proxies = lock(&self.proxies);
        let mut s = status_of(&model, reg, proxies.get(name));
        s.certificate_not_after = self.certificate_not_after(name);
        Some(s)
    }

    /// The snapshot the control plane has for proxy `name`.
    pub fn snapshot_of(&self, name: &str) -> Option<Arc<Snapshot>> {
        lock(&self.proxies)
            .get(name)
            .map(|e| e.snapshot.borrow().clone())
    }

    /// Remember the end of validity of the certificate `name` presented.
    pub fn note_certificate(&self, name: &str, not_after: SystemTime) {
        lock(&self.certificates).insert(name.to_owned(), not_after);
    }

    fn certificate_not_after(&self, name: &str) -> Option<String> {
        lock(&self.certificates)
            .get(name)
            .map(|t| humantime::format_rfc3339_seconds(*t).to_string())
    }

    /// Every proxy's status, by name.
    pub fn statuses(&self) -> Vec<ProxyStatus> {
        let model = self.model.borrow().clone();
        let proxies = lock(&self.proxies);
        let mut out: Vec<_> = model
            .proxies
            .values()
            .map(|r| {
                let mut s = status_of(&model, r, proxies.get(&r.name));
                s.certificate_not_after = self.certificate_not_after(&r.name);
                s
            })
            .collect();
        out.sort_by(|a, b| a.registration.name.cmp(&b.registration.name));
        out
    }
}

fn status_of(model: &Model, reg: &ProxyRegistration, e: Option<&ProxyEntry>) -> ProxyStatus {
    let scope = scope(model, reg)
        .iter()
        .filter_map(|id| model.networks.by_id.get(id))
        .map(|n| n.spec.name.clone())
        .collect();
    let desired_version = e.map(|e| e.snapshot.borrow().version).unwrap_or(0);
    let applied_version = e.map(|e| e.applied_version).unwrap_or(0);
    let connected = e.is_some_and(|e| e.connected > 0);
    ProxyStatus {
        registration: reg.clone(),
        scope,
        desired_version,
        applied_version,
        in_sync: connected && desired_version > 0 && applied_version == desired_version,
        connected,
        last_contact: e
            .and_then(|e| e.last_contact)
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        last_error: e.and_then(|e| e.last_error.clone()),
        certificate_not_after: None,
    }
}

/// A proxy's open watch. Counts as connected until dropped.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    name: String,
    /// Snapshots as they are published.
    pub rx: watch::Receiver<Arc<Snapshot>>,
}

impl Subscription {
    /// Note that the stream is alive (a line was written).
    pub fn touch(&self) {
        self.hub.touch(&self.name);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(e) = lock(&self.hub.proxies).get_mut(&self.name) {
            e.connected = e.connected.saturating_sub(1);
        }
    }
}

/// Sleep for `d`, or forever when there is nothing to wait for.
async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
