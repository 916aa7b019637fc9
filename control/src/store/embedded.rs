//! The embedded store: one redb file on disk, nothing to install or run.
//!
//! The file holds three tables:
//!
//! | table  | key            | value                                        |
//! |--------|----------------|----------------------------------------------|
//! | `kv`   | the key        | create revision, mod revision, value bytes   |
//! | `log`  | a revision     | the events of that revision (for watches)    |
//! | `meta` | a name         | the current revision, the oldest logged one  |
//!
//! Every [`Txn`] is one redb write transaction, committed with redb's
//! default `Durability::Immediate`: when [`Store::txn`] returns, the data,
//! the new revision and the log entry are on disk together or not at all.
//!
//! Watches replay the `log` table from the asked revision, then follow a
//! broadcast channel that every commit feeds. A watcher subscribes before
//! it reads the log and skips what it already delivered, so it sees every
//! revision exactly once. A watcher that falls behind the channel goes back
//! to the log; one that falls behind the log (see
//! [`EmbeddedOptions::log_retention`]) gets [`StoreError::Compacted`] and its
//! stream ends, so the caller re-lists and watches again.
//!
//! redb is blocking, so every call runs on tokio's blocking pool.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use tokio::sync::broadcast;

use self::codec::{Record, encode_events};
use self::watch::Watcher;
use super::{
    Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, StoreResult, Txn,
    TxnResult, WatchBatch, WatchStream,
};

/// Keys and their records (create revision, mod revision, value).
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Revision -> the events written at that revision.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Store-wide counters.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `meta` key: the layout version of the file.
const META_FORMAT: &str = "format";
/// `meta` key: the last committed revision.
const META_REVISION: &str = "revision";
/// `meta` key: the oldest revision still in `log` (every later one is there too).
const META_LOG_START: &str = "log_start";

/// The file layout this code reads and writes; bump it when the encoding
/// changes, so an old binary refuses a new file instead of misreading it.
const FORMAT_VERSION: u64 = 1;

/// Revisions kept in the watch log by default. At a few writes a second
/// this is hours of history: enough for a control-plane replica or a
/// proxy to reconnect and resume, small enough that the log stays a few
/// megabytes.
pub const DEFAULT_LOG_RETENTION: u64 = 10_000;

/// Batches the live channel buffers per watcher by default. A watcher that
/// falls further behind is not lost: it re-reads the log.
pub const DEFAULT_WATCH_BUFFER: usize = 1024;

/// Revisions a catching-up watcher reads from the log at once, so a watch
/// from far back does not load the whole log into memory.
const CATCH_UP_CHUNK: usize = 256;

/// Tuning of an [`EmbeddedStore`]. The defaults suit a control plane; tests
/// shrink them to reach compaction and lag quickly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How many of the latest revisions the watch log keeps (at least 1).
    /// A watch from an older revision fails with [`StoreError::Compacted`].
    pub log_retention: u64,
    /// How many batches the live channel buffers (at least 1). A slower
    /// watcher catches up from the log, which costs a read but loses nothing.
    pub watch_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            log_retention: DEFAULT_LOG_RETENTION,
            watch_buffer: DEFAULT_WATCH_BUFFER,
        }
    }
}

/// The default store backend: one redb file, opened exclusively by one
/// control-plane process. Use it as `Arc<dyn Store>`.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

/// What the blocking tasks and the watchers need. Watchers hold it weakly,
/// so dropping the store closes the file and ends their streams.
struct Shared {
    db: Database,
    path: PathBuf,
    log_retention: u64,
    /// Serialises commit-then-broadcast, so batches enter the channel in
    /// revision order (redb alone would serialise only the commits).
    write_lock: Mutex<()>,
    /// Every committed batch, unfiltered.
    live: broadcast::Sender<Arc<WatchBatch>>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.shared.path)
            .field("log_retention", &self.shared.log_retention)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Open (or create) the store file at `path` with default options.
    ///
    /// Blocks while redb opens the file (and repairs it after a crash):
    /// call it at startup or from a blocking task. Fails if another process
    /// or another `EmbeddedStore` has the file open.
    pub fn open(path: &Path) -> StoreResult<Arc<Self>> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Open (or create) the store file at `path`; see [`EmbeddedStore::open`].
    pub fn open_with(path: &Path, options: EmbeddedOptions) -> StoreResult<Arc<Self>> {
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
                "store file {} is already open; another trellis-control may be using it",
                path.display()
            )),
            other => StoreError::Backend(format!(
                "cannot open store file {}: {other}",
                path.display()
            )),
        })?;
        init_tables(&db, path)?;
        let (live, _) = broadcast::channel(options.watch_buffer.max(1));
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                db,
                path: path.to_path_buf(),
                log_retention: options.log_retention.max(1),
                write_lock: Mutex::new(()),
                live,
            }),
        }))
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Drop watch-log entries older than `revision`, like etcd's compact:
    /// a later watch from an older revision gets [`StoreError::Compacted`].
    /// Keys and their revisions are untouched, and the revision does not
    /// move. A `revision` past the current one compacts everything logged.
    pub async fn compact(&self, revision: Revision) -> StoreResult<()> {
        run_blocking(self.shared.clone(), move |s| compact_log(s, revision)).await
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let key = key.to_owned();
        run_blocking(self.shared.clone(), move |s| {
            let read = s.db.begin_read().map_err(|e| backend("begin read", e))?;
            let kv = read.open_table(KV).map_err(|e| backend("open kv", e))?;
            let found = kv.get(key.as_str()).map_err(|e| backend("get", e))?;
            match found {
                Some(raw) => {
                    let rec = Record::decode(raw.value())?;
                    Ok(Some(rec.into_kv(key)))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_owned();
        run_blocking(self.shared.clone(), move |s| {
            let read = s.db.begin_read().map_err(|e| backend("begin read", e))?;
            let meta = read.open_table(META).map_err(|e| backend("open meta", e))?;
            let revision = meta_get(&meta, META_REVISION)?.unwrap_or(0);
            let kv = read.open_table(KV).map_err(|e| backend("open kv", e))?;
            let mut out = Vec::new();
            for entry in kv
                .range(prefix.as_str()..)
                .map_err(|e| backend("range", e))?
            {
                let (k, v) = entry.map_err(|e| backend("range", e))?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(Record::decode(v.value())?.into_kv(key.to_owned()));
            }
            Ok((out, revision))
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnResult> {
        run_blocking(self.shared.clone(), move |s| apply(s, txn)).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream> {
        // Subscribe first: whatever commits after this is in the channel,
        // whatever committed before is in the log (see the module docs).
        let rx = self.shared.live.subscribe();
        let (current, log_start) = run_blocking(self.shared.clone(), |s| {
            let read = s.db.begin_read().map_err(|e| backend("begin read", e))?;
            let meta = read.open_table(META).map_err(|e| backend("open meta", e))?;
            Ok((
                meta_get(&meta, META_REVISION)?.unwrap_or(0),
                meta_get(&meta, META_LOG_START)?.unwrap_or(1),
            ))
        })
        .await?;
        let last = if from == 0 {
            current
        } else if from < log_start {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: log_start,
            });
        } else {
            from - 1
        };
        let state = Watcher::new(
            Arc::downgrade(&self.shared),
            rx,
            prefix.to_owned(),
            last,
            from != 0,
        );
        Ok(futures_util::stream::unfold(state, Watcher::step).boxed())
    }

    async fn revision(&self) -> StoreResult<Revision> {
        run_blocking(self.shared.clone(), |s| {
            let read = s.db.begin_read().map_err(|e| backend("begin read", e))?;
            let meta = read.open_table(META).map_err(|e| backend("open meta", e))?;
            Ok(meta_get(&meta, META_REVISION)?.unwrap_or(0))
        })
        .await
    }
}

/// Run a redb call on the blocking pool. The closure (and its `Arc`) is
/// dropped before the result comes back, so a dropped store closes its file
/// as soon as the last call returns.
async fn run_blocking<T, F>(shared: Arc<Shared>, f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> StoreResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .map_err(|e| StoreError::Backend(format!("embedded store task failed: {e}")))?
}

/// A backend error with what was being done.
fn backend(what: &str, e: impl fmt::Display) -> StoreError {
    StoreError::Backend(format!("embedded store: {what}: {e}"))
}

/// Create the tables (so readers never meet a missing one) and check the
/// file's layout version.
fn init_tables(db: &Database, path: &Path) -> StoreResult<()> {
    let write = db.begin_write().map_err(|e| backend("begin write", e))?;
    {
        write.open_table(KV).map_err(|e| backend("open kv", e))?;
        write.open_table(LOG).map_err(|e| backend("open log", e))?;
        let mut meta = write
            .open_table(META)
            .map_err(|e| backend("open meta", e))?;
        let format = meta_get(&meta, META_FORMAT)?;
        match format {
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION)
                    .map_err(|e| backend("write meta", e))?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "store file {} has layout version {other}; this trellis-control reads version {FORMAT_VERSION}",
                    path.display()
                )));
            }
        }
    }
    write.commit().map_err(|e| backend("commit", e))
}

/// Read a counter from `meta` (any readable table).
fn meta_get(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> StoreResult<Option<u64>> {
    Ok(meta
        .get(name)
        .map_err(|e| backend("read meta", e))?
        .map(|v| v.value()))
}

/// Apply one transaction: check, write, log, compact the log, commit, then
/// broadcast, all under the write lock.
fn apply(s: &Shared, txn: Txn) -> StoreResult<TxnResult> {
    let _serial = s.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
    let write = s.db.begin_write().map_err(|e| backend("begin write", e))?;
    match stage(&write, txn, s.log_retention)? {
        Staged::Unchanged(result) => {
            write.abort().map_err(|e| backend("abort", e))?;
            Ok(result)
        }
        Staged::Write(batch) => {
            write.commit().map_err(|e| {
                backend(
                    "commit (restart trellis-control if writes keep failing; reopening repairs the file)",
                    e,
                )
            })?;
            let revision = batch.revision;
            // Err only means "no watcher right now".
            let _ = s.live.send(Arc::new(batch));
            Ok(TxnResult {
                succeeded: true,
                revision,
            })
        }
    }
}

/// What a transaction amounts to before commit.
enum Staged {
    /// Conditions failed, or the writes change nothing: abort, no new revision.
    Unchanged(TxnResult),
    /// Writes staged at a new revision: commit, then broadcast this batch.
    Write(WatchBatch),
}

/// Evaluate and stage a transaction inside `write` without committing.
fn stage(write: &WriteTransaction, txn: Txn, retention: u64) -> StoreResult<Staged> {
    let mut meta = write
        .open_table(META)
        .map_err(|e| backend("open meta", e))?;
    let mut kv = write.open_table(KV).map_err(|e| backend("open kv", e))?;
    let current = meta_get(&meta, META_REVISION)?.unwrap_or(0);

    for compare in &txn.compare {
        if !holds(&kv, compare)? {
            return Ok(Staged::Unchanged(TxnResult {
                succeeded: false,
                revision: current,
            }));
        }
    }

    let revision = current + 1;
    let mut events = Vec::new();
    for op in last_op_per_key(txn.success) {
        match op {
            Op::Put(key, value) => {
                let create_revision = match kv.get(key.as_str()).map_err(|e| backend("get", e))? {
                    Some(raw) => Record::decode(raw.value())?.create_revision,
                    None => revision,
                };
                let rec = Record {
                    create_revision,
                    mod_revision: revision,
                    value,
                };
                kv.insert(key.as_str(), rec.encode().as_slice())
                    .map_err(|e| backend("put", e))?;
                events.push(Event {
                    kind: EventKind::Put,
                    kv: rec.into_kv(key),
                });
            }
            Op::Delete(key) => {
                let existed = kv
                    .remove(key.as_str())
                    .map_err(|e| backend("delete", e))?
                    .is_some();
                if existed {
                    events.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key,
                            value: Vec::new(),
                            create_revision: 0,
                            mod_revision: revision,
                        },
                    });
                }
            }
        }
    }
    if events.is_empty() {
        // Like etcd: a transaction that changes nothing takes no revision.
        return Ok(Staged::Unchanged(TxnResult {
            succeeded: true,
            revision: current,
        }));
    }

    let batch = WatchBatch { revision, events };
    let mut log = write.open_table(LOG).map_err(|e| backend("open log", e))?;
    log.insert(revision, encode_events(&batch.events).as_slice())
        .map_err(|e| backend("write log", e))?;
    meta.insert(META_REVISION, revision)
        .map_err(|e| backend("write meta", e))?;
    // Keep the last `retention` revisions: revision - retention + 1 ..= revision.
    let keep_from = (revision + 1).saturating_sub(retention).max(1);
    trim_log(&mut meta, &mut log, keep_from)?;
    Ok(Staged::Write(batch))
}

/// Whether one condition holds.
fn holds(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    compare: &Compare,
) -> StoreResult<bool> {
    let key = match compare {
        Compare::ModRevision(key, _) | Compare::Exists(key) => key,
    };
    let mod_revision = match kv.get(key.as_str()).map_err(|e| backend("get", e))? {
        Some(raw) => Some(Record::decode(raw.value())?.mod_revision),
        None => None,
    };
    Ok(match compare {
        Compare::ModRevision(_, 0) => mod_revision.is_none(),
        Compare::ModRevision(_, want) => mod_revision == Some(*want),
        Compare::Exists(_) => mod_revision.is_some(),
    })
}

/// When a transaction names a key twice, only its last write applies (etcd
/// refuses such transactions; this keeps them meaningful and lets an etcd
/// backend send the same writes deduplicated). Order follows the last writes.
fn last_op_per_key(ops: Vec<Op>) -> Vec<Op> {
    let mut seen = HashSet::new();
    let mut kept: Vec<Op> = ops
        .into_iter()
        .rev()
        .filter(|op| {
            let key = match op {
                Op::Put(key, _) | Op::Delete(key) => key,
            };
            seen.insert(key.clone())
        })
        .collect();
    kept.reverse();
    kept
}

/// Remove log entries below `keep_from` and record the new start.
fn trim_log(
    meta: &mut Table<'_, &'static str, u64>,
    log: &mut Table<'_, u64, &'static [u8]>,
    keep_from: Revision,
) -> StoreResult<()> {
    let log_start = meta_get(meta, META_LOG_START)?.unwrap_or(1);
    if keep_from > log_start {
        log.retain_in(log_start..keep_from, |_, _| false)
            .map_err(|e| backend("compact log", e))?;
        meta.insert(META_LOG_START, keep_from)
            .map_err(|e| backend("write meta", e))?;
    }
    Ok(())
}

/// [`EmbeddedStore::compact`] on the blocking pool.
fn compact_log(s: &Shared, revision: Revision) -> StoreResult<()> {
    let _serial = s.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
    let write = s.db.begin_write().map_err(|e| backend("begin write", e))?;
    {
        let mut meta = write
            .open_table(META)
            .map_err(|e| backend("open meta", e))?;
        let mut log = write.open_table(LOG).map_err(|e| backend("open log", e))?;
        let current = meta_get(&meta, META_REVISION)?.unwrap_or(0);
        trim_log(&mut meta, &mut log, revision.min(current + 1))?;
    }
    write.commit().map_err(|e| backend("commit", e))
}

mod codec;
#[cfg(test)]
mod tests;
mod watch;
