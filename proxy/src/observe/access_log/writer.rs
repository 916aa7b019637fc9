//! One destination: a bounded queue in front of a dedicated writer thread.
//!
//! Requests only ever `try_send` a finished record into the queue; when
//! it is full (the destination is slow or blocked: a full disk, a FIFO
//! nobody reads, a stdout pipe that is not drained) the line is dropped
//! and counted, and the request goes on. The thread formats the records
//! (so JSON encoding is off the request path), writes them in batches of
//! up to [`MAX_BATCH_LINES`] with one `write` per batch (per rotation
//! step), and counts what it wrote and what failed. After a batch that
//! did not fill up it sleeps for [`BATCH_LINGER`] instead of waiting on
//! the queue, so that under load a request's `try_send` never has to wake
//! the thread (a futex call and a context switch per line) and lines are
//! written a batch at a time rather than one `write` each. Write errors never
//! reach a request: they count the lines as dropped and log a warning at
//! most once per [`WARN_INTERVAL`] per destination.
//!
//! The thread ends when the last sender is gone (the destination left the
//! configuration and no request in flight holds it), after writing what
//! is queued.

use super::format::write_line;
use super::rotate::RotatingFile;
use crate::observe::record::RequestRecord;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use trellis_config::{AccessLogDestination, FileDestination};

/// Records a destination's queue holds before lines are dropped: about a
/// second of a busy proxy, a few MiB at most.
pub const QUEUE_CAPACITY: usize = 8192;

/// Most lines written with one `write`.
pub const MAX_BATCH_LINES: usize = 256;

/// How long the thread sleeps after a batch that did not fill up before it
/// looks at the queue again. Lines reach the destination at most this much
/// later; in exchange a busy proxy wakes the thread about 200 times a
/// second instead of once per request. At 30,000 requests/s the queue holds 150 lines after a
/// linger, far below [`QUEUE_CAPACITY`].
pub const BATCH_LINGER: Duration = Duration::from_millis(5);

/// Least time between two warnings about one destination.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Counts of one destination, or of all of them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped: the queue was full, or writing failed.
    pub dropped: AtomicU64,
}

impl Counters {
    fn add_dropped(&self, n: u64, total: &Counters) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        total.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn add_written(&self, n: u64, total: &Counters) {
        self.written.fetch_add(n, Ordering::Relaxed);
        total.written.fetch_add(n, Ordering::Relaxed);
    }
}

/// A destination's sending side, shared by every service that logs to it.
#[derive(Debug)]
pub struct Sink {
    /// `stdout` or `file:<path>`.
    pub key: String,
    tx: SyncSender<Arc<RequestRecord>>,
    /// This destination's counts.
    pub counters: Arc<Counters>,
    /// The proxy's counts.
    total: Arc<Counters>,
    /// New rotation settings for the thread to pick up.
    settings: Arc<Mutex<Option<FileDestination>>>,
    /// The last write error, for the admin listener.
    pub last_error: Arc<Mutex<Option<String>>>,
    /// Told when the thread has ended (for a bounded wait at shutdown).
    done: Mutex<Option<Receiver<()>>>,
}

impl Sink {
    /// Start the writer thread of `dest`. If the thread cannot be started
    /// the sink still exists and counts every line as dropped.
    pub fn start(dest: &AccessLogDestination, total: Arc<Counters>) -> Sink {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let counters = Arc::new(Counters::default());
        let settings = Arc::new(Mutex::new(None));
        let last_error = Arc::new(Mutex::new(None));
        let key = dest.key();
        let output = match dest {
            AccessLogDestination::Stdout => Output::Stdout,
            AccessLogDestination::File(f) => Output::File(RotatingFile::new(f)),
        };
        let thread = Thread {
            key: key.clone(),
            rx,
            output,
            counters: Arc::clone(&counters),
            total: Arc::clone(&total),
            settings: Arc::clone(&settings),
            last_error: Arc::clone(&last_error),
            warned_at: None,
            unwarned: 0,
        };
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                thread.run();
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::error!(destination = %key, error = %e, "cannot start the access log writer thread; its lines are dropped");
        }
        Sink {
            key,
            tx,
            counters,
            total,
            settings,
            last_error,
            done: Mutex::new(Some(done_rx)),
        }
    }

    /// Queue a record without waiting; a full queue drops (and counts) it.
    pub fn send(&self, record: &Arc<RequestRecord>) {
        match self.tx.try_send(Arc::clone(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.add_dropped(1, &self.total);
            }
        }
    }

    /// New rotation settings for a file destination.
    pub fn configure(&self, dest: &AccessLogDestination) {
        if let AccessLogDestination::File(f) = dest {
            *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = Some(f.clone());
        }
    }

    /// A waiter for the writer thread's end, taken once.
    pub fn take_done(&self) -> Option<Receiver<()>> {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

enum Output {
    Stdout,
    File(RotatingFile),
}

struct Thread {
    key: String,
    rx: Receiver<Arc<RequestRecord>>,
    output: Output,
    counters: Arc<Counters>,
    total: Arc<Counters>,
    settings: Arc<Mutex<Option<FileDestination>>>,
    last_error: Arc<Mutex<Option<String>>>,
    warned_at: Option<Instant>,
    /// Lines dropped since the last warning.
    unwarned: u64,
}

impl Thread {
    fn run(mut self) {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut ends = Vec::with_capacity(MAX_BATCH_LINES);
        while let Ok(first) = self.rx.recv() {
            buf.clear();
            ends.clear();
            let mut next = Some(first);
            while let Some(record) = next {
                write_line(&record, &mut buf);
                ends.push(buf.len());
                next = if ends.len() < MAX_BATCH_LINES {
                    self.rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.write(&buf, &ends);
            if ends.len() < MAX_BATCH_LINES {
                std::thread::sleep(BATCH_LINGER);
            }
        }
    }

    fn write(&mut self, buf: &[u8], ends: &[usize]) {
        if let Some(f) = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            && let Output::File(file) = &mut self.output
        {
            file.configure(&f);
        }
        let (written, error) = match &mut self.output {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                match out.write_all(buf).and_then(|()| out.flush()) {
                    Ok(()) => (ends.len(), None),
                    Err(e) => (0, Some(e)),
                }
            }
            Output::File(f) => f.write_lines(buf, ends),
        };
        self.counters.add_written(written as u64, &self.total);
        let failed = (ends.len() - written) as u64;
        if failed > 0 {
            self.counters.add_dropped(failed, &self.total);
            self.unwarned += failed;
        }
        if let Some(e) = error {
            let message = e.to_string();
            let now = Instant::now();
            if self
                .warned_at
                .is_none_or(|at| now.duration_since(at) >= WARN_INTERVAL)
            {
                tracing::warn!(destination = %self.key, error = %message, dropped = self.unwarned, "cannot write the access log; lines are dropped until it works again");
                self.warned_at = Some(now);
                self.unwarned = 0;
            }
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(message);
        }
    }
}
