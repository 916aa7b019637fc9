//! Access logs: one JSON line per request to a subscribed service, written
//! to each of the service's destinations (see `format` for the line).
//!
//! - `format`: the line
//! - `writer`: a destination's bounded queue and writer thread
//! - `rotate`: the size-rotated file
//!
//! The snapshot says, per service, where its lines go
//! ([`trellis_config::SnapshotService::access_logs`]: its own and its
//! networks' subscriptions, compiled by the control plane). The
//! destinations themselves are runtime state keyed by destination
//! (`stdout`, `file:<path>`): a push that keeps a destination keeps its
//! writer thread, queue and counters; a push that drops it lets its thread
//! finish what is queued and end; a push that changes a file's rotation
//! settings applies them to the next write.
//!
//! Writing never blocks a request, and nothing about a destination (slow,
//! full, unwritable) reaches a request: see `writer`.

mod format;
mod rotate;
mod writer;

#[cfg(test)]
use writer::MAX_BATCH_LINES;
pub use writer::{Counters, QUEUE_CAPACITY};

/// Append `record`'s JSON line (newline included) to `out`: what a
/// writer thread does per line. Public for `benches/benches/access_log.rs`.
pub fn write_line(record: &RequestRecord, out: &mut Vec<u8>) {
    format::write_line(record, out);
}

use super::record::{Recorder, RequestRecord};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use trellis_config::Snapshot;
use trellis_config::limits::DNS_SUFFIX;
use writer::Sink;

/// Longest wait at shutdown for the writer threads to write what is
/// queued.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The destinations one service's records go to.
#[derive(Debug)]
pub(crate) struct Subscribers {
    sinks: Vec<Arc<Sink>>,
}

impl Subscribers {
    /// Hand a finished record to every destination (never waits).
    pub(crate) fn emit(&self, record: RequestRecord) {
        let record = Arc::new(record);
        for sink in &self.sinks {
            sink.send(&record);
        }
    }
}

/// What one subscribed service needs per request.
#[derive(Debug)]
pub(crate) struct ServiceLog {
    pub subscribers: Arc<Subscribers>,
    /// `(network name)` of each generated host name's network label.
    networks: Vec<Arc<str>>,
    /// The service's name (to read the network out of a generated host).
    name: Arc<str>,
    /// The service's id.
    id: Arc<str>,
    /// Its listeners' and rules' names, for records to share.
    names: Vec<Arc<str>>,
}

impl ServiceLog {
    /// The service's, a listener's or a rule's name, shared (a copy of
    /// `name` if this snapshot does not have it, which a route of the
    /// same snapshot never asks for).
    pub(crate) fn shared_name(&self, name: &str) -> Arc<str> {
        if *self.name == *name {
            return Arc::clone(&self.name);
        }
        self.names
            .iter()
            .find(|n| ***n == *name)
            .map_or_else(|| name.into(), Arc::clone)
    }

    /// The service's id, shared.
    pub(crate) fn shared_id(&self, id: &str) -> Arc<str> {
        if *self.id == *id {
            Arc::clone(&self.id)
        } else {
            id.into()
        }
    }

    /// The network a request for `host` came through: the one named by a
    /// generated host name (`<service>.<network>.trellis.internal`), else
    /// the service's only network in scope.
    pub(crate) fn network_of(&self, host: Option<&str>) -> Option<Arc<str>> {
        if let Some(host) = host {
            let name = crate::route::split_host_port(host).map_or(host, |(n, _)| n);
            let label = name
                .get(..name.len().saturating_sub(DNS_SUFFIX.len() + 1))
                .filter(|_| {
                    name.len() > DNS_SUFFIX.len() + 1
                        && name[name.len() - DNS_SUFFIX.len()..].eq_ignore_ascii_case(DNS_SUFFIX)
                        && name.as_bytes()[name.len() - DNS_SUFFIX.len() - 1] == b'.'
                })
                .and_then(|rest| rest.split_once('.'))
                .filter(|(svc, _)| svc.eq_ignore_ascii_case(&self.name))
                .map(|(_, net)| net);
            if let Some(net) = label
                && let Some(n) = self.networks.iter().find(|n| n.eq_ignore_ascii_case(net))
            {
                return Some(n.clone());
            }
        }
        match self.networks.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
impl ServiceLog {
    /// The log of service `name` (`id`) with no destination and no names
    /// of listeners or rules.
    pub(crate) fn bare(name: &str, id: &str) -> Self {
        Self {
            subscribers: Arc::new(Subscribers { sinks: Vec::new() }),
            networks: Vec::new(),
            name: name.into(),
            id: id.into(),
            names: Vec::new(),
        }
    }
}

/// Per snapshot: which services log, and where.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    by_service: HashMap<Box<str>, ServiceLog>,
}

impl Subscriptions {
    /// The log of the service with this id, if it has one.
    pub(crate) fn service(&self, id: &str) -> Option<&ServiceLog> {
        self.by_service.get(id)
    }
}

/// The access log of a proxy: its destinations and counters.
#[derive(Debug)]
pub struct AccessLog {
    /// Every live destination by key.
    sinks: Mutex<HashMap<String, Arc<Sink>>>,
    /// The current snapshot's subscriptions.
    subscriptions: ArcSwap<Subscriptions>,
    /// Totals over every destination, past ones included.
    total: Arc<Counters>,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessLog {
    /// No destinations yet.
    pub fn new() -> Self {
        Self {
            sinks: Mutex::new(HashMap::new()),
            subscriptions: ArcSwap::from_pointee(Subscriptions::default()),
            total: Arc::new(Counters::default()),
        }
    }

    /// Take the subscriptions of a new snapshot, keeping the destinations
    /// that are still used (with their threads, queues and counters).
    pub fn update(&self, snapshot: &Snapshot) {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next: HashMap<String, Arc<Sink>> = HashMap::new();
        let mut by_service = HashMap::new();
        let network_name = |id: &str| {
            snapshot
                .networks
                .iter()
                .find(|n| n.id == id)
                .map(|n| Arc::<str>::from(n.name.as_str()))
        };
        for svc in &snapshot.services {
            if svc.access_logs.is_empty() {
                continue;
            }
            let mut list = Vec::with_capacity(svc.access_logs.len());
            for dest in &svc.access_logs {
                let key = dest.key();
                let sink = match next.get(&key).or_else(|| sinks.get(&key)) {
                    Some(s) => Arc::clone(s),
                    None => {
                        tracing::info!(destination = %key, "access log destination opened");
                        Arc::new(Sink::start(dest, Arc::clone(&self.total)))
                    }
                };
                sink.configure(dest);
                next.insert(key, Arc::clone(&sink));
                if !list.iter().any(|s: &Arc<Sink>| Arc::ptr_eq(s, &sink)) {
                    list.push(sink);
                }
            }
            by_service.insert(
                svc.id.as_str().into(),
                ServiceLog {
                    subscribers: Arc::new(Subscribers { sinks: list }),
                    networks: svc
                        .networks
                        .iter()
                        .filter_map(|n| network_name(n))
                        .collect(),
                    name: svc.name.as_str().into(),
                    id: svc.id.as_str().into(),
                    names: svc
                        .listeners
                        .iter()
                        .flat_map(|l| {
                            std::iter::once(&l.name).chain(l.rules.iter().map(|r| &r.name))
                        })
                        .map(|n| Arc::<str>::from(n.as_str()))
                        .collect(),
                },
            );
        }
        for key in sinks.keys() {
            if !next.contains_key(key) {
                tracing::info!(destination = %key, "access log destination closed (no subscription uses it any more)");
            }
        }
        *sinks = next;
        self.subscriptions
            .store(Arc::new(Subscriptions { by_service }));
    }

    /// A recorder for a request from `source`: off (no allocation, no
    /// clock read) unless some service in the configuration logs.
    pub(crate) fn recorder(&self, source: SocketAddr) -> Recorder {
        if self.subscriptions.load().by_service.is_empty() {
            return Recorder::off();
        }
        Recorder::armed(self.subscriptions.load_full(), source)
    }

    /// Lines dropped since the proxy started, over every destination: the
    /// queue was full or the destination could not be written.
    pub fn dropped(&self) -> u64 {
        self.total.dropped.load(Ordering::Relaxed)
    }

    /// Lines written since the proxy started, over every destination.
    pub fn written(&self) -> u64 {
        self.total.written.load(Ordering::Relaxed)
    }

    /// Counts per destination, for the admin listener.
    pub fn stats(&self) -> serde_json::Value {
        let sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dests: Vec<_> = sinks
            .values()
            .map(|s| {
                serde_json::json!({
                    "destination": s.key,
                    "written": s.counters.written.load(Ordering::Relaxed),
                    "dropped": s.counters.dropped.load(Ordering::Relaxed),
                    "lastError": *s.last_error.lock().unwrap_or_else(PoisonError::into_inner),
                })
            })
            .collect();
        dests.sort_by(|a, b| a["destination"].as_str().cmp(&b["destination"].as_str()));
        serde_json::json!({
            "written": self.written(),
            "dropped": self.dropped(),
            "queueCapacity": QUEUE_CAPACITY,
            "destinations": dests,
        })
    }

    /// Stop logging and wait, up to `timeout`, for the writer threads to
    /// write what is queued (a blocked destination is not waited for
    /// beyond it). For shutdown: records still in flight are dropped.
    pub fn close(&self, timeout: Duration) {
        self.subscriptions.store(Arc::new(Subscriptions::default()));
        let sinks = std::mem::take(&mut *self.sinks.lock().unwrap_or_else(PoisonError::into_inner));
        let waiters: Vec<_> = sinks.values().filter_map(|s| s.take_done()).collect();
        drop(sinks);
        let deadline = Instant::now() + timeout;
        for w in waiters {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = w.recv_timeout(left);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use trellis_config::{AccessLogDestination, FileDestination, SnapshotNetwork, SnapshotService};

    /// A fresh directory under the system's temp dir, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "trellis-proxy-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn snapshot(dests: Vec<AccessLogDestination>) -> Snapshot {
        let svc: SnapshotService = serde_json::from_value(serde_json::json!({
            "id": "svc-1", "name": "api", "account": "0", "networks": ["sn-1", "sn-2"],
            "hosts": [], "authType": "NONE", "listeners": []
        }))
        .unwrap();
        Snapshot {
            networks: vec![
                SnapshotNetwork {
                    accounts: Vec::new(),
                    id: "sn-1".into(),
                    name: "blue".into(),
                    account: "0".into(),
                    auth_type: trellis_config::AuthType::None,
                    auth_policy: None,
                },
                SnapshotNetwork {
                    accounts: Vec::new(),
                    id: "sn-2".into(),
                    name: "green".into(),
                    account: "0".into(),
                    auth_type: trellis_config::AuthType::None,
                    auth_policy: None,
                },
            ],
            services: vec![SnapshotService {
                access_logs: dests,
                ..svc
            }],
            ..Snapshot::default()
        }
    }

    fn file(path: &Path) -> AccessLogDestination {
        AccessLogDestination::File(FileDestination::new(path.to_string_lossy()))
    }

    /// Wait until `f` holds, for the writer thread.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn records_reach_the_file_and_a_push_keeps_the_writer() {
        let dir = TempDir::new("push");
        let path = dir.path().join("a.log");
        let log = AccessLog::new();
        assert!(matches!(
            log.recorder(([127, 0, 0, 1], 1).into()),
            r if !r.is_recording()
        ));
        log.update(&snapshot(vec![file(&path)]));
        let subs = log.subscriptions.load_full();
        let svc = subs.service("svc-1").unwrap();
        svc.subscribers
            .emit(crate::observe::access_log::format::tests::bare());
        eventually("one line", || log.written() == 1);
        let key = format!("file:{}", path.display());
        let first = Arc::clone(&log.sinks.lock().unwrap()[&key]);
        // Same destination, other rotation settings: same writer.
        let mut other = FileDestination::new(path.to_string_lossy());
        other.max_files = 2;
        log.update(&snapshot(vec![
            AccessLogDestination::File(other),
            AccessLogDestination::Stdout,
        ]));
        let again = Arc::clone(&log.sinks.lock().unwrap()[&key]);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(log.sinks.lock().unwrap().len(), 2);
        // Gone from the snapshot: gone from the registry.
        log.update(&snapshot(vec![]));
        assert!(log.sinks.lock().unwrap().is_empty());
        assert!(log.subscriptions.load().by_service.is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["service"], "api");
        assert_eq!(log.stats()["written"], 1);
    }

    #[test]
    fn the_network_comes_from_the_host_or_the_only_network() {
        let log = AccessLog::new();
        log.update(&snapshot(vec![AccessLogDestination::Stdout]));
        let subs = log.subscriptions.load_full();
        let svc = subs.service("svc-1").unwrap();
        assert_eq!(
            svc.network_of(Some("API.Green.trellis.internal:80"))
                .as_deref(),
            Some("green")
        );
        assert_eq!(
            svc.network_of(Some("api.blue.trellis.internal")).as_deref(),
            Some("blue")
        );
        // A custom domain of a service in two networks: unknown.
        assert_eq!(svc.network_of(Some("api.example.com")), None);
        assert_eq!(svc.network_of(Some("other.blue.trellis.internal")), None);
        assert_eq!(svc.network_of(None), None);
        log.close(Duration::from_secs(1));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let dir = TempDir::new("fifo");
        let fifo = dir.path().join("fifo");
        // A FIFO nobody reads: the writer thread blocks in open(2).
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("mkfifo unavailable; skipping");
            return;
        }
        let log = AccessLog::new();
        log.update(&snapshot(vec![file(&fifo)]));
        let subs = log.subscriptions.load_full();
        let svc = subs.service("svc-1").unwrap();
        let extra = 1000;
        let sent = QUEUE_CAPACITY + extra;
        let started = Instant::now();
        for _ in 0..sent {
            svc.subscribers
                .emit(crate::observe::access_log::format::tests::bare());
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "emitting must never wait for the destination"
        );
        // The thread takes at most one batch before it blocks in open(2);
        // the queue holds QUEUE_CAPACITY; the rest is dropped.
        let dropped = log.dropped();
        assert!(
            ((extra - MAX_BATCH_LINES) as u64..=extra as u64).contains(&dropped),
            "dropped {dropped}"
        );
        drop(subs);
        assert_eq!(log.written(), 0);
        assert_eq!(log.stats()["destinations"][0]["dropped"], dropped);
        // Unblock the thread so it can end: open the FIFO for reading and
        // drain it.
        let reader = std::thread::spawn(move || std::fs::read(&fifo).map(|b| b.len()));
        log.close(Duration::from_secs(10));
        let bytes = reader.join().unwrap().unwrap();
        assert!(bytes > 0);
        assert_eq!(log.written() + log.dropped(), sent as u64);
        assert_eq!(log.dropped(), dropped, "nothing queued was lost");
    }
}
