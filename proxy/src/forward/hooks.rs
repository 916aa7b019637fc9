//! The calls the request path makes into the balancer, in one place: the
//! `maxRequests`/`maxRetries` circuit-breaker permits of a target group,
//! the outcome of each attempt (for passive outlier detection), and the
//! choice of another target for a retry.
//!
//! A full `maxRequests` breaker is answered 503 `overflow` at once; a full
//! `maxRetries` breaker stops retrying (the last attempt's answer stands).

use super::retry::AttemptOutcome;
use crate::balance::{EndpointGuard, GroupBalancer, Outcome, RequestPermit, RetryPermit};
use crate::error::{Failure, Reason};
use std::sync::Arc;

/// A `maxRequests` permit of `group` (hold it for the whole request,
/// retries included), or the 503 `overflow` to answer.
pub(crate) fn try_request(group: &GroupBalancer) -> Result<RequestPermit, Failure> {
    group.try_request().map_err(|o| {
        Failure::new(
            Reason::Overflow,
            format!("target group '{}': {o}", group.name()),
        )
    })
}

/// A `maxRetries` permit of `group`; `None` when the breaker is full.
pub(crate) fn try_retry(group: &GroupBalancer) -> Option<RetryPermit> {
    group.try_retry().ok()
}

/// Report one attempt's outcome on `guard`'s target. A protocol error
/// counts as a reset, either timeout as a timeout; outcomes that are not
/// the target's doing (`Other`) are not reported.
pub(crate) fn record(guard: &EndpointGuard, outcome: AttemptOutcome) {
    let reported = match outcome {
        AttemptOutcome::Status(s) => Outcome::Status(s),
        AttemptOutcome::ConnectFailure => Outcome::ConnectFailure,
        AttemptOutcome::Reset | AttemptOutcome::ProtocolError => Outcome::Reset,
        AttemptOutcome::PerTryTimeout | AttemptOutcome::RequestTimeout => Outcome::Timeout,
        AttemptOutcome::Other => return,
    };
    guard.record(reported);
}

/// A target for a retry: another one than `failed` when the group has
/// more than one eligible (a few picks are tried; the balancer skips
/// ejected, unhealthy and draining targets itself), else the same.
pub(crate) fn pick_other(
    group: &Arc<GroupBalancer>,
    failed: &EndpointGuard,
) -> Option<EndpointGuard> {
    let mut last = None;
    for _ in 0..4 {
        let g = group.pick()?;
        if !g.endpoint.same_state(&failed.endpoint) {
            return Some(g);
        }
        last = Some(g);
    }
    last
}
