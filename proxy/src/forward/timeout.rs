//! The clocks of one request: the request timeout bounds everything
//! (attempts, backoff waits), the per-try timeout bounds one attempt.
//!
//! | setting                                   | bounds                         | on expiry |
//! |-------------------------------------------|--------------------------------|-----------|
//! | rule `timeoutMs`, else listener `timeoutMs`, else proxy `upstream_timeout` | the response head, all attempts and backoffs included | 504 `upstream_timeout`, not retried |
//! | retry policy `perTryTimeoutMs`            | one attempt's response head    | retried if `per-try-timeout` is in `retryOn`, else 504 `upstream_timeout` |
//! | target group `connection.connectTimeoutMs` | one TCP connect               | 502 `upstream_connect_failed`, retried on `connect-failure` |
//!
//! A response body is not bounded by these (it may stream for long: gRPC,
//! downloads); the pool's and the listeners' idle timeouts apply to it.

use std::time::Duration;
use tokio::time::Instant;

/// The deadlines of one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// End of the whole request.
    pub request: Instant,
    /// The request timeout it was made from (for messages).
    pub timeout: Duration,
    per_try: Option<Duration>,
}

/// Which clock ended an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// The per-try timeout (the request has time left).
    PerTry,
    /// The request timeout.
    Request,
}

impl Deadlines {
    /// Deadlines of a request starting at `now`.
    pub(crate) fn new(now: Instant, timeout: Duration, per_try: Option<Duration>) -> Self {
        Self {
            request: now + timeout,
            timeout,
            per_try,
        }
    }

    /// The deadline of an attempt starting at `now`, and which clock it is.
    pub(crate) fn attempt(&self, now: Instant) -> (Instant, Expired) {
        match self.per_try {
            Some(t) if now + t < self.request => (now + t, Expired::PerTry),
            _ => (self.request, Expired::Request),
        }
    }

    /// Whether waiting `wait` from `now` leaves time for another attempt.
    pub(crate) fn leaves_time(&self, now: Instant, wait: Duration) -> bool {
        now + wait < self.request
    }

    /// The per-try timeout, if any.
    pub(crate) fn per_try(&self) -> Option<Duration> {
        self.per_try
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tighter_clock_bounds_an_attempt() {
        let t0 = Instant::now();
        let d = Deadlines::new(
            t0,
            Duration::from_millis(1000),
            Some(Duration::from_millis(300)),
        );
        assert_eq!(
            d.attempt(t0),
            (t0 + Duration::from_millis(300), Expired::PerTry)
        );
        // Late in the request, the request deadline is the nearer one.
        let late = t0 + Duration::from_millis(800);
        assert_eq!(d.attempt(late), (d.request, Expired::Request));
        let none = Deadlines::new(t0, Duration::from_millis(1000), None);
        assert_eq!(
            none.attempt(t0),
            (t0 + Duration::from_millis(1000), Expired::Request)
        );
    }

    #[test]
    fn backoff_must_leave_time() {
        let t0 = Instant::now();
        let d = Deadlines::new(t0, Duration::from_millis(100), None);
        assert!(d.leaves_time(t0, Duration::from_millis(99)));
        assert!(!d.leaves_time(t0, Duration::from_millis(100)));
        assert!(!d.leaves_time(t0 + Duration::from_millis(90), Duration::from_millis(20)));
    }
}
