//! The retry budget of a target group: so a failing backend sees bounded
//! extra load, a retry is allowed only while
//!
//! ```text
//! retries in flight + 1  <=  budgetPercent % of requests in flight
//! ```
//!
//! or, when that says no, while a token bucket refilled at
//! `minRetriesPerSecond` (and holding at most one second of them) has a
//! token: a floor so that a group with little traffic can still retry.
//!
//! "Requests in flight" are the requests to the group that *may* be
//! retried (those with a retry policy), counted from their first attempt
//! to their last; requests without a policy are not counted, so that the
//! common path pays nothing. Budgets are runtime state, one per target
//! group id, kept across pushes; the percentage and the floor come from
//! the policy of the request asking (several rules may share a group).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// One target group's retry budget.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    requests: AtomicUsize,
    retries: AtomicUsize,
    floor: Mutex<Floor>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
            floor: Mutex::new(Floor::new(Instant::now())),
        }
    }
}

/// A request that may be retried, counted while it lives.
#[derive(Debug)]
pub(crate) struct RequestToken(Arc<RetryBudget>);

impl Drop for RequestToken {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in flight, counted while it lives.
#[derive(Debug)]
pub(crate) struct RetryToken(Arc<RetryBudget>);

impl Drop for RetryToken {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    /// Count a retryable request until the token drops.
    pub(crate) fn start_request(self: &Arc<Self>) -> RequestToken {
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestToken(Arc::clone(self))
    }

    /// A retry, if the budget or the floor allows one.
    pub(crate) fn try_retry(
        self: &Arc<Self>,
        percent: u32,
        min_per_second: u32,
    ) -> Option<RetryToken> {
        let requests = self.requests.load(Ordering::Relaxed);
        // Reserve first, check after: two racing retries cannot both slip
        // under the budget.
        let retries = self.retries.fetch_add(1, Ordering::Relaxed) + 1;
        let token = RetryToken(Arc::clone(self));
        if within_budget(retries, requests, percent) {
            return Some(token);
        }
        let mut floor = self.floor.lock().unwrap_or_else(PoisonError::into_inner);
        floor
            .try_take(min_per_second, Instant::now())
            .then_some(token)
    }

    /// Requests and retries in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> (usize, usize) {
        (
            self.requests.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
        )
    }
}

/// `retries * 100 <= requests * percent`.
pub(crate) fn within_budget(retries: usize, requests: usize, percent: u32) -> bool {
    (retries as u128) * 100 <= (requests as u128) * u128::from(percent)
}

/// The floor's token bucket: refills continuously at the asked rate, holds
/// at most one second's worth (at least one token).
#[derive(Debug)]
pub(crate) struct Floor {
    /// `None` until the first use, which finds the bucket full.
    tokens: Option<f64>,
    last: Instant,
}

impl Floor {
    /// A bucket that is full on first use (its size depends on the rate
    /// asked then).
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            tokens: None,
            last: now,
        }
    }

    /// Take a token at `rate` per second, if there is one.
    pub(crate) fn try_take(&mut self, rate: u32, now: Instant) -> bool {
        if rate == 0 {
            return false;
        }
        let rate = f64::from(rate);
        let cap = rate.max(1.0);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let tokens = self.tokens.map_or(cap, |t| (t + elapsed * rate).min(cap));
        if tokens >= 1.0 {
            self.tokens = Some(tokens - 1.0);
            true
        } else {
            self.tokens = Some(tokens);
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn budget_arithmetic() {
        assert!(!within_budget(1, 0, 20), "no requests, no budget");
        assert!(!within_budget(1, 4, 20), "20 % of 4 is less than one retry");
        assert!(within_budget(1, 5, 20));
        assert!(!within_budget(2, 5, 20));
        assert!(within_budget(2, 10, 20));
        assert!(within_budget(10, 10, 100));
        assert!(!within_budget(11, 10, 100));
        assert!(!within_budget(1, 1_000_000, 0), "0 % allows none");
        assert!(within_budget(usize::MAX, usize::MAX, 100), "no overflow");
    }

    #[test]
    fn floor_refills_at_the_rate_and_caps_at_one_second() {
        let t0 = Instant::now();
        let mut f = Floor::new(t0);
        let first = (0..100).filter(|_| f.try_take(10, t0)).count();
        assert_eq!(first, 10, "full on first use: one second's worth");
        assert!(!f.try_take(10, t0));
        // 100 ms at 10/s: one token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(f.try_take(10, t1));
        assert!(!f.try_take(10, t1));
        // A long idle period fills at most one second's worth.
        let t2 = t1 + Duration::from_secs(60);
        let taken = (0..100).filter(|_| f.try_take(10, t2)).count();
        assert_eq!(taken, 10);
        // Rate 0: never.
        assert!(!f.try_take(0, t2 + Duration::from_secs(5)));
        // A rate below one per second still holds one token at most.
        let t3 = t2 + Duration::from_secs(10);
        assert!(f.try_take(1, t3));
        assert!(!f.try_take(1, t3));
    }

    #[test]
    fn tokens_count_while_held() {
        let b = Arc::new(RetryBudget::default());
        let reqs: Vec<_> = (0..10).map(|_| b.start_request()).collect();
        assert_eq!(b.in_flight(), (10, 0));
        // 20 % of 10 requests: two retries (a floor of 0: none more).
        let r1 = b.try_retry(20, 0).unwrap();
        let r2 = b.try_retry(20, 0).unwrap();
        assert!(b.try_retry(20, 0).is_none());
        assert_eq!(b.in_flight(), (10, 2), "a refused retry is not counted");
        drop(r1);
        let r3 = b.try_retry(20, 0).unwrap();
        drop((r2, r3));
        drop(reqs);
        assert_eq!(b.in_flight(), (0, 0));
        assert!(b.try_retry(20, 0).is_none());
    }
}
