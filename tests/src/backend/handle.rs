//! The handle of a running backend: its address, its counters, and its stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Counters a backend keeps while it runs. Shared with the handle, so tests
/// read them while requests are in flight.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests received (counted when the request head arrives, before the
    /// body is read or any delay); includes health checks.
    pub requests: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    per_path: Mutex<HashMap<String, u64>>,
    /// Paths in arrival order, the first [`PATH_LOG_CAPACITY`] requests.
    path_log: Mutex<Vec<String>>,
}

/// How many request paths a backend remembers in arrival order (see
/// [`BackendStats::paths_in_order`]); later requests are only counted.
pub const PATH_LOG_CAPACITY: usize = 100_000;

impl BackendStats {
    /// Count one request to `path`; returns the new total (1-based).
    pub(crate) fn record(&self, path: &str) -> u64 {
        if let Ok(mut m) = self.per_path.lock() {
            *m.entry(path.to_owned()).or_default() += 1;
        }
        if let Ok(mut log) = self.path_log.lock()
            && log.len() < PATH_LOG_CAPACITY
        {
            log.push(path.to_owned());
        }
        self.requests.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The paths of the requests received so far, in the order they
    /// arrived (the first [`PATH_LOG_CAPACITY`]): tells e.g. how many
    /// health checks a target passed before its first real request.
    pub fn paths_in_order(&self) -> Vec<String> {
        self.path_log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Requests received for exactly `path` (without the query).
    pub fn requests_to(&self, path: &str) -> u64 {
        self.per_path
            .lock()
            .map(|m| m.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// A running backend. Dropping it stops the backend: the listener and
/// open connections are closed moments later (asynchronously), so new
/// connections to [`BackendHandle::addr`] become refused. Use
/// [`BackendHandle::shutdown`] to wait until that has happened.
#[derive(Debug)]
pub struct BackendHandle {
    name: String,
    addr: SocketAddr,
    stats: Arc<BackendStats>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl BackendHandle {
    pub(crate) fn new(
        name: String,
        addr: SocketAddr,
        stats: Arc<BackendStats>,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    ) -> Self {
        Self {
            name,
            addr,
            stats,
            stop,
            task: Some(task),
        }
    }

    /// The name the backend reports (`"backend"` in echo bodies, the
    /// `x-backend` header).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far (including health checks).
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Requests received so far for exactly `path`.
    pub fn requests_to(&self, path: &str) -> u64 {
        self.stats.requests_to(path)
    }

    /// Paths of the requests received so far, in arrival order; see
    /// [`BackendStats::paths_in_order`].
    pub fn paths_in_order(&self) -> Vec<String> {
        self.stats.paths_in_order()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// The raw request counter, for tests that hand it to other tasks.
    pub fn request_counter(&self) -> Arc<BackendStats> {
        Arc::clone(&self.stats)
    }

    /// Stop the backend and wait until its listener, its connections and
    /// its upgraded connections are closed: when this returns, connecting
    /// to [`BackendHandle::addr`] is refused and clients of open
    /// connections see them end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = &self.task {
            // In case the runtime no longer polls the accept loop (e.g. the
            // test's runtime is shutting down).
            task.abort();
        }
    }
}
