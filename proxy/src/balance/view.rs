//! A group's eligible set: which endpoints the picker chooses among, built
//! when some target's health or ejection changes (never per request), so
//! that round robin and least request run over a plain slice.
//!
//! Draining targets are never eligible. The others are when their health
//! counts as healthy (HEALTHY, or nobody checks them) and they are not
//! ejected. When none is, the group **fails open** (as VPC Lattice does):
//! every non-draining target is eligible again, since sending to targets
//! that may be down beats refusing everything.

use super::endpoint::Endpoint;
use super::health::Health;
use std::sync::Arc;

/// What a group's targets look like, for the fail-open log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    /// Not draining.
    pub serving: usize,
    /// Not draining, not checked yet (INITIAL).
    pub initial: usize,
    /// Not draining, failing their checks.
    pub unhealthy: usize,
    /// Not draining, ejected by outlier detection.
    pub ejected: usize,
}

/// One eligible set.
#[derive(Debug, Default)]
pub(super) struct View {
    /// The [`super::signal::Signals`] epoch it reflects.
    pub epoch: u64,
    /// Indices of the endpoints to choose among.
    pub eligible: Box<[usize]>,
    /// Whether `eligible` is the fail-open fallback.
    pub failing_open: bool,
    /// Earliest end of an ejection (0: nothing ejected); the picker
    /// rebuilds the set when the clock passes it.
    pub next_return: u64,
    pub counts: Counts,
}

impl View {
    /// The eligible set of `endpoints` at clock reading `now`.
    pub(super) fn build(endpoints: &[Arc<Endpoint>], epoch: u64, now: u64) -> View {
        let mut eligible = Vec::with_capacity(endpoints.len());
        let mut serving = Vec::with_capacity(endpoints.len());
        let mut counts = Counts::default();
        let mut next_return = 0u64;
        for (i, e) in endpoints.iter().enumerate() {
            if e.target.draining {
                continue;
            }
            serving.push(i);
            counts.serving += 1;
            let state = e.state();
            let health = state.health.health();
            match health {
                Health::Initial => counts.initial += 1,
                Health::Unhealthy => counts.unhealthy += 1,
                Health::Unchecked | Health::Healthy => {}
            }
            let ejected = state.outlier.is_ejected(now);
            if ejected {
                counts.ejected += 1;
                let until = state.outlier.until();
                if next_return == 0 || until < next_return {
                    next_return = until;
                }
            }
            if health.eligible() && !ejected {
                eligible.push(i);
            }
        }
        let failing_open = eligible.is_empty() && !serving.is_empty();
        View {
            epoch,
            eligible: if failing_open { serving } else { eligible }.into(),
            failing_open,
            next_return,
            counts,
        }
    }

    /// Whether this set is still right at `epoch` and clock reading `now`
    /// (`now` is only read while something is ejected).
    pub(super) fn is_fresh(&self, epoch: u64, now: impl FnOnce() -> u64) -> bool {
        self.epoch == epoch && (self.next_return == 0 || now() < self.next_return)
    }
}
