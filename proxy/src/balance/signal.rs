//! How a change of a target's eligibility (health, ejection) reaches the
//! pickers and the health reporter.
//!
//! Writers change the target's state first, then call
//! [`Signals::changed`]. Pickers compare [`Signals::epoch`] with the epoch
//! of the eligible set they hold and rebuild it when they differ (one
//! atomic load per pick); the reporter awaits [`Signals::subscribe`].

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Shared by a [`super::Balancer`] and all its group balancers.
#[derive(Debug)]
pub(crate) struct Signals {
    epoch: AtomicU64,
    changes: watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            changes: watch::channel(0).0,
        }
    }
}

impl Signals {
    /// Bumped after every change of any target's eligibility.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Some target's health or ejection changed (call after the change).
    pub(crate) fn changed(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        self.changes.send_replace(epoch);
    }

    /// A receiver that wakes after each [`Signals::changed`].
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
