//! Watch streams of the embedded store: replay from the log, then follow
//! the live channel; back to the log after falling behind.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use redb::ReadableDatabase;
use tokio::sync::broadcast;

use super::codec::decode_events;
use super::{
    CATCH_UP_CHUNK, LOG, META, META_LOG_START, META_REVISION, Shared, backend, meta_get,
    run_blocking,
};
use crate::store::{Event, Revision, StoreError, StoreResult, WatchBatch};

/// A chunk of the log read by a catching-up watcher.
struct LogChunk {
    /// Non-empty batches under the prefix, in order.
    batches: Vec<WatchBatch>,
    /// Every revision up to here has been read (delivered or filtered out).
    scanned_to: Revision,
    /// The chunk reached the newest revision: switch to the live channel.
    at_end: bool,
}

/// Read up to `limit` logged revisions after `after`, keeping events under `prefix`.
fn read_log(s: &Shared, prefix: &str, after: Revision, limit: usize) -> StoreResult<LogChunk> {
    let read = s.db.begin_read().map_err(|e| backend("begin read", e))?;
    let meta = read.open_table(META).map_err(|e| backend("open meta", e))?;
    let current = meta_get(&meta, META_REVISION)?.unwrap_or(0);
    let log_start = meta_get(&meta, META_LOG_START)?.unwrap_or(1);
    if after + 1 < log_start {
        return Err(StoreError::Compacted {
            requested: after + 1,
            oldest: log_start,
        });
    }
    let log = read.open_table(LOG).map_err(|e| backend("open log", e))?;
    let mut batches = Vec::new();
    let mut scanned_to = after;
    let mut read_count = 0;
    for entry in log
        .range((after + 1)..)
        .map_err(|e| backend("read log", e))?
        .take(limit)
    {
        let (rev, raw) = entry.map_err(|e| backend("read log", e))?;
        let revision = rev.value();
        let events: Vec<Event> = decode_events(raw.value(), revision)?
            .into_iter()
            .filter(|e| e.kv.key.starts_with(prefix))
            .collect();
        if !events.is_empty() {
            batches.push(WatchBatch { revision, events });
        }
        scanned_to = revision;
        read_count += 1;
    }
    let at_end = read_count < limit;
    if at_end {
        scanned_to = scanned_to.max(current);
    }
    Ok(LogChunk {
        batches,
        scanned_to,
        at_end,
    })
}

/// Where a watcher takes its next batches from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// From the log (at the start, or after falling behind the channel).
    CatchUp,
    /// From the live channel.
    Live,
    /// The stream has ended (after an error).
    Done,
}

/// The state of one watch stream.
pub(super) struct Watcher {
    shared: Weak<Shared>,
    rx: broadcast::Receiver<Arc<WatchBatch>>,
    prefix: String,
    /// Every revision up to here has been delivered or filtered out.
    last: Revision,
    /// Read from the log, not yet delivered.
    pending: VecDeque<WatchBatch>,
    mode: Mode,
}

impl Watcher {
    /// A watcher that has handled every revision up to `last`; with
    /// `catch_up` it reads the log first, else it starts on the channel
    /// (`rx` must have subscribed before `last` was read).
    pub(super) fn new(
        shared: Weak<Shared>,
        rx: broadcast::Receiver<Arc<WatchBatch>>,
        prefix: String,
        last: Revision,
        catch_up: bool,
    ) -> Self {
        Self {
            shared,
            rx,
            prefix,
            last,
            pending: VecDeque::new(),
            mode: if catch_up { Mode::CatchUp } else { Mode::Live },
        }
    }

    /// The next batch, or `None` when the store is gone or the stream ended.
    pub(super) async fn step(mut self) -> Option<(StoreResult<WatchBatch>, Self)> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some((Ok(batch), self));
            }
            match self.mode {
                Mode::Done => return None,
                Mode::CatchUp => {
                    let shared = self.shared.upgrade()?;
                    let prefix = self.prefix.clone();
                    let after = self.last;
                    let chunk =
                        run_blocking(shared, move |s| read_log(s, &prefix, after, CATCH_UP_CHUNK))
                            .await;
                    match chunk {
                        Ok(chunk) => {
                            self.last = chunk.scanned_to;
                            self.pending.extend(chunk.batches);
                            if chunk.at_end {
                                self.mode = Mode::Live;
                            }
                        }
                        Err(e) => {
                            self.mode = Mode::Done;
                            return Some((Err(e), self));
                        }
                    }
                }
                Mode::Live => match self.rx.recv().await {
                    Ok(batch) if batch.revision <= self.last => {}
                    Ok(batch) if batch.revision != self.last + 1 => {
                        // A hole (should not happen): fill it from the log.
                        self.mode = Mode::CatchUp;
                    }
                    Ok(batch) => {
                        self.last = batch.revision;
                        let events: Vec<Event> = batch
                            .events
                            .iter()
                            .filter(|e| e.kv.key.starts_with(self.prefix.as_str()))
                            .cloned()
                            .collect();
                        if !events.is_empty() {
                            let revision = batch.revision;
                            return Some((Ok(WatchBatch { revision, events }), self));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            prefix = %self.prefix,
                            last = self.last,
                            missed,
                            "watcher fell behind the live channel; catching up from the log"
                        );
                        self.mode = Mode::CatchUp;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}
