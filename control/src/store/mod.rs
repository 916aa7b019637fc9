//! The control plane's storage, shaped like etcd's key-value API so that
//! the embedded backend (one file on disk, the default) and an etcd backend
//! are interchangeable and pass the same tests.
//!
//! Every committed write gets the next store-wide *revision*. A key keeps
//! the revision it was created at and last modified at; compare-and-swap
//! writes compare those. Watches deliver every change after a given
//! revision, in order, so a reader that lists a prefix at revision R and
//! then watches from R + 1 misses nothing.

#[cfg(test)]
pub mod conformance;
pub mod embedded;

use futures_util::stream::BoxStream;

/// A store-wide, strictly increasing write counter. 0 means "before any write".
pub type Revision = u64;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this (0: the key must not exist).
    ModRevision(String, Revision),
    /// The key exists.
    Exists(String),
}

/// A write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite.
    Put(String, Vec<u8>),
    /// Remove if present.
    Delete(String),
}

/// All conditions must hold for all operations to apply, atomically, at one
/// new revision; otherwise nothing changes.
///
/// If several writes name the same key, only the last one applies (etcd
/// refuses such a transaction; its backend sends the deduplicated writes).
/// A transaction whose writes change nothing (none, or only deletes of
/// absent keys) succeeds without taking a revision, as in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions (AND).
    pub compare: Vec<Compare>,
    /// Writes applied when every condition holds.
    pub success: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a condition.
    pub fn when(mut self, c: Compare) -> Self {
        self.compare.push(c);
        self
    }

    /// Add a write.
    pub fn then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }
}

/// Outcome of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the conditions held and the writes were applied.
    pub succeeded: bool,
    /// The revision after the transaction (the new one if it wrote).
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Created or overwritten.
    Put,
    /// Removed.
    Delete,
}

/// One change delivered by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: empty value,
    /// `create_revision` 0, and `mod_revision` is the revision of the delete).
    pub kv: KeyValue,
}

/// The changes of one revision, all at once (a transaction's writes arrive
/// together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    /// Revision of these changes.
    pub revision: Revision,
    /// The changes under the watched prefix.
    pub events: Vec<Event>,
}

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The revision asked for was compacted away; re-read the prefix and watch from its revision.
    #[error(
        "revision {requested} has been compacted (oldest available: {oldest}); re-list and watch again"
    )]
    Compacted {
        /// What was asked for.
        requested: Revision,
        /// The oldest revision a watch may start at.
        oldest: Revision,
    },
    /// The backend failed (I/O, corruption, lost connection).
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The stream a watch returns: batches in revision order, until the store
/// is dropped or an error ends it.
pub type WatchStream = BoxStream<'static, StoreResult<WatchBatch>>;

/// An etcd-shaped store. Implementations are cheap to clone behind `Arc`
/// and safe to use from many tasks.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// One key, or `None`.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order, and the revision the
    /// read saw.
    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)>;

    /// Apply a transaction atomically; once this returns `succeeded`, the
    /// write is durable (survives a crash of the process or the machine).
    async fn txn(&self, txn: Txn) -> StoreResult<TxnResult>;

    /// Changes to keys under `prefix` with revision >= `from`, then live
    /// changes, in order. `from` = 0 means "from now on".
    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream>;

    /// The current revision.
    async fn revision(&self) -> StoreResult<Revision>;
}
