//! When a failed attempt is tried again, and how long to wait first.
//!
//! A [`RetryConfig`] is a rule's (or listener's) `retryPolicy`, parsed
//! once per snapshot. Whether one attempt's outcome is retried is a pure
//! decision ([`RetryConfig::retries`]); the retry budget and the
//! circuit breaker's retry permit are asked afterwards, by the caller.
//!
//! - Methods: only idempotent ones (GET, HEAD, OPTIONS, PUT, DELETE,
//!   TRACE) unless `retryNonIdempotent`. Upgrades (WebSocket) never.
//! - Conditions: `connect-failure` (refused, connect timeout: the request
//!   never left), `reset` (the connection closed or reset before a
//!   response head), `gateway-error` (502, 503 or 504 *from the target*),
//!   `per-try-timeout`, or a status code.
//! - Backoff: exponential with full jitter: before retry `n` (1-based) a
//!   uniform random wait in `[0, min(cap, base * 2^(n-1))]`.

use http::Method;
use std::time::Duration;
use trellis_config::{RetryOn, RetryPolicy};

/// What one attempt came to, for the retry decision and for the
/// balancer's outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    /// The target answered with this status (a response head arrived).
    Status(u16),
    /// The connection could not be opened (refused, connect timeout).
    ConnectFailure,
    /// The connection was closed or reset before a response head.
    Reset,
    /// No response head within the per-try timeout.
    PerTryTimeout,
    /// No response head within the request timeout: never retried (no
    /// time is left), reported as a timeout.
    RequestTimeout,
    /// What came back was not HTTP: not retried, reported as a reset.
    ProtocolError,
    /// Not the target's doing (the client's body failed or was too large,
    /// a breaker overflow): never retried, not reported.
    Other,
}

/// A parsed retry policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryConfig {
    /// Attempts in all, the first included (1: no retries).
    pub max_attempts: u32,
    on_connect_failure: bool,
    on_reset: bool,
    on_gateway_error: bool,
    on_per_try_timeout: bool,
    on_status: Box<[u16]>,
    /// Bound of one attempt.
    pub per_try_timeout: Option<Duration>,
    backoff_base: Duration,
    backoff_max: Duration,
    /// Retries in flight at most this percentage of requests in flight.
    pub budget_percent: u32,
    /// Retries per second allowed whatever the budget.
    pub min_retries_per_second: u32,
    retry_non_idempotent: bool,
    /// A request body is kept for replay up to this many bytes.
    pub max_buffered_body_bytes: usize,
}

impl RetryConfig {
    /// Parse `policy`. `None` when it can change nothing: one attempt and
    /// no per-try timeout.
    pub(crate) fn from_policy(policy: &RetryPolicy) -> Option<Self> {
        if policy.max_attempts <= 1 && policy.per_try_timeout_ms.is_none() {
            return None;
        }
        let mut c = Self {
            max_attempts: policy.max_attempts.max(1),
            on_connect_failure: false,
            on_reset: false,
            on_gateway_error: false,
            on_per_try_timeout: false,
            on_status: Box::new([]),
            per_try_timeout: policy
                .per_try_timeout_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
            backoff_base: Duration::from_millis(u64::from(policy.backoff_base_ms)),
            backoff_max: Duration::from_millis(u64::from(
                policy.backoff_max_ms.max(policy.backoff_base_ms),
            )),
            budget_percent: policy.budget_percent,
            min_retries_per_second: policy.min_retries_per_second,
            retry_non_idempotent: policy.retry_non_idempotent,
            max_buffered_body_bytes: policy.max_buffered_body_bytes as usize,
        };
        let mut statuses = Vec::new();
        for cond in policy.conditions() {
            match cond {
                RetryOn::ConnectFailure => c.on_connect_failure = true,
                RetryOn::Reset => c.on_reset = true,
                RetryOn::GatewayError => c.on_gateway_error = true,
                RetryOn::PerTryTimeout => c.on_per_try_timeout = true,
                RetryOn::Status(s) => statuses.push(s),
            }
        }
        c.on_status = statuses.into();
        Some(c)
    }

    /// Whether requests with this method may be retried at all.
    pub(crate) fn method_allowed(&self, method: &Method) -> bool {
        self.retry_non_idempotent || is_idempotent(method)
    }

    /// Whether `outcome` is one of the policy's retry conditions. Says
    /// nothing about attempts left, budget or body replay.
    pub(crate) fn retries(&self, outcome: AttemptOutcome) -> bool {
        match outcome {
            AttemptOutcome::ConnectFailure => self.on_connect_failure,
            AttemptOutcome::Reset => self.on_reset,
            AttemptOutcome::PerTryTimeout => self.on_per_try_timeout,
            AttemptOutcome::Status(s) => {
                (self.on_gateway_error && matches!(s, 502..=504)) || self.on_status.contains(&s)
            }
            AttemptOutcome::RequestTimeout
            | AttemptOutcome::ProtocolError
            | AttemptOutcome::Other => false,
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), given
    /// a uniform random number source over `0..=n`.
    pub(crate) fn backoff(&self, retry: u32, uniform: impl FnOnce(u64) -> u64) -> Duration {
        let ceiling = backoff_ceiling(self.backoff_base, self.backoff_max, retry);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(uniform(ms).min(ms))
    }
}

/// `min(cap, base * 2^(retry-1))`, without overflow.
pub(crate) fn backoff_ceiling(base: Duration, cap: Duration, retry: u32) -> Duration {
    let shift = retry.saturating_sub(1).min(31);
    base.checked_mul(1u32 << shift).unwrap_or(cap).min(cap)
}

/// RFC 9110 §9.2.2 idempotent methods.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn config(retry_on: &[&str]) -> RetryConfig {
        RetryConfig::from_policy(&RetryPolicy {
            max_attempts: 3,
            retry_on: retry_on.iter().map(|s| (*s).to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn one_attempt_without_per_try_timeout_is_no_policy() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        };
        assert!(RetryConfig::from_policy(&p).is_none());
        let p = RetryPolicy {
            max_attempts: 1,
            per_try_timeout_ms: Some(100),
            ..Default::default()
        };
        let c = RetryConfig::from_policy(&p).unwrap();
        assert_eq!(c.per_try_timeout, Some(Duration::from_millis(100)));
    }

    #[test]
    fn decision_table() {
        use AttemptOutcome::*;
        let rows: &[(&[&str], AttemptOutcome, bool)] = &[
            (&["connect-failure"], ConnectFailure, true),
            (&["connect-failure"], Reset, false),
            (&["reset"], Reset, true),
            (&["reset"], ConnectFailure, false),
            (&["gateway-error"], Status(502), true),
            (&["gateway-error"], Status(503), true),
            (&["gateway-error"], Status(504), true),
            (&["gateway-error"], Status(500), false),
            (&["gateway-error"], Status(501), false),
            (&["gateway-error"], Reset, false),
            (&["per-try-timeout"], PerTryTimeout, true),
            (&["gateway-error"], PerTryTimeout, false),
            (&["429"], Status(429), true),
            (&["429"], Status(503), false),
            (&["500", "gateway-error"], Status(500), true),
            (
                &[
                    "connect-failure",
                    "reset",
                    "gateway-error",
                    "per-try-timeout",
                    "500",
                ],
                Other,
                false,
            ),
            (&["per-try-timeout", "reset"], RequestTimeout, false),
            (&["reset", "gateway-error"], ProtocolError, false),
            (&["gateway-error"], Status(200), false),
        ];
        for (on, outcome, want) in rows {
            assert_eq!(config(on).retries(*outcome), *want, "{on:?} {outcome:?}");
        }
        // The policy's defaults: connect-failure, reset, gateway-error.
        let d = RetryConfig::from_policy(&RetryPolicy::default()).unwrap();
        assert!(d.retries(ConnectFailure) && d.retries(Reset) && d.retries(Status(503)));
        assert!(!d.retries(PerTryTimeout) && !d.retries(Status(500)));
    }

    #[test]
    fn only_idempotent_methods_unless_asked() {
        let c = config(&["reset"]);
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(c.method_allowed(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!c.method_allowed(&m.parse().unwrap()), "{m}");
        }
        let mut c = c;
        c.retry_non_idempotent = true;
        assert!(c.method_allowed(&Method::POST));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let base = Duration::from_millis(25);
        let cap = Duration::from_millis(250);
        let ceilings: Vec<u128> = (1..=6)
            .map(|n| backoff_ceiling(base, cap, n).as_millis())
            .collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 250, 250]);
        assert_eq!(backoff_ceiling(base, cap, 1000), cap, "no overflow");
        assert_eq!(
            backoff_ceiling(Duration::from_secs(60), Duration::from_secs(600), 40),
            Duration::from_secs(600)
        );

        let c = config(&["reset"]);
        // The random source is asked for 0..=ceiling, and its answer is the wait.
        assert_eq!(c.backoff(1, |n| n), Duration::from_millis(25));
        assert_eq!(c.backoff(3, |n| n), Duration::from_millis(100));
        assert_eq!(c.backoff(3, |_| 0), Duration::ZERO);
        assert_eq!(c.backoff(9, |n| n), Duration::from_millis(250));
        // A source that overshoots is clamped.
        assert_eq!(c.backoff(1, |_| 10_000), Duration::from_millis(25));
        // With the real random source every wait is within bounds.
        for n in 1..8 {
            let ceiling = backoff_ceiling(base, cap, n);
            for _ in 0..100 {
                let w = c.backoff(n, |hi| fastrand::u64(0..=hi));
                assert!(w <= ceiling, "{w:?} > {ceiling:?}");
            }
        }
    }
}
