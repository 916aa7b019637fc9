//! Circuit-breaker counters of one target group: requests and retries in
//! flight, as RAII permits. They are runtime state keyed by the group id
//! (a push keeps them), and they are per proxy: each proxy enforces the
//! limits on its own traffic.
//!
//! A permit is taken before an attempt and held until it is finished
//! (the response body is done or dropped). A full breaker fails at once
//! with [`Overflow`], which the data path answers 503 `overflow`; nothing
//! queues here. `maxConnections` and `maxPendingRequests` live in the
//! connection pools (forward), which read them from
//! [`super::GroupBalancer::spec`].

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Which circuit breaker limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Limit {
    /// `circuitBreaker.maxRequests`: requests in flight.
    Requests,
    /// `circuitBreaker.maxRetries`: retries in flight.
    Retries,
}

impl Limit {
    /// The setting's name in the model.
    pub const fn setting(self) -> &'static str {
        match self {
            Limit::Requests => "circuitBreaker.maxRequests",
            Limit::Retries => "circuitBreaker.maxRetries",
        }
    }
}

/// A circuit breaker is full: answer 503 `overflow` without queueing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{max} {what} already in flight, the most {setting} allows", what = match .limit { Limit::Requests => "requests", Limit::Retries => "retries" }, setting = .limit.setting())]
pub struct Overflow {
    /// The limit that is reached.
    pub limit: Limit,
    /// Its value.
    pub max: u32,
}

/// Counters of one target group (shared by every balancer built for it).
#[derive(Debug, Default)]
pub(crate) struct BreakerState {
    requests: AtomicU32,
    retries: AtomicU32,
    request_overflows: AtomicU64,
    retry_overflows: AtomicU64,
}

impl BreakerState {
    fn counter(&self, limit: Limit) -> &AtomicU32 {
        match limit {
            Limit::Requests => &self.requests,
            Limit::Retries => &self.retries,
        }
    }

    /// In flight now.
    pub(crate) fn in_flight(&self, limit: Limit) -> u32 {
        self.counter(limit).load(Ordering::Relaxed)
    }

    /// Times the limit turned an attempt away.
    pub(crate) fn overflows(&self, limit: Limit) -> u64 {
        match limit {
            Limit::Requests => &self.request_overflows,
            Limit::Retries => &self.retry_overflows,
        }
        .load(Ordering::Relaxed)
    }

    /// One more in flight, unless `max` are already.
    fn acquire(self: &Arc<Self>, limit: Limit, max: u32) -> Result<Permit, Overflow> {
        let taken = self
            .counter(limit)
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Permit {
                state: Arc::clone(self),
                limit,
            }),
            Err(_) => {
                match limit {
                    Limit::Requests => &self.request_overflows,
                    Limit::Retries => &self.retry_overflows,
                }
                .fetch_add(1, Ordering::Relaxed);
                Err(Overflow { limit, max })
            }
        }
    }

    pub(crate) fn try_request(self: &Arc<Self>, max: u32) -> Result<RequestPermit, Overflow> {
        self.acquire(Limit::Requests, max)
            .map(|p| RequestPermit { _permit: p })
    }

    pub(crate) fn try_retry(self: &Arc<Self>, max: u32) -> Result<RetryPermit, Overflow> {
        self.acquire(Limit::Retries, max)
            .map(|p| RetryPermit { _permit: p })
    }
}

#[derive(Debug)]
struct Permit {
    state: Arc<BreakerState>,
    limit: Limit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.state
            .counter(self.limit)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request in flight to a target group (`maxRequests`); released on
/// drop. Hold it for the whole request, retries included.
#[derive(Debug)]
pub struct RequestPermit {
    _permit: Permit,
}

/// One retry in flight to a target group (`maxRetries`); released on drop.
/// Hold it for the retried attempt only.
#[derive(Debug)]
pub struct RetryPermit {
    _permit: Permit,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn permits_are_limited_and_released_on_drop() {
        let b = Arc::new(BreakerState::default());
        let p1 = b.try_request(2).unwrap();
        let p2 = b.try_request(2).unwrap();
        assert_eq!(b.in_flight(Limit::Requests), 2);
        let over = b.try_request(2).unwrap_err();
        assert_eq!(
            over,
            Overflow {
                limit: Limit::Requests,
                max: 2
            }
        );
        assert_eq!(
            over.to_string(),
            "2 requests already in flight, the most circuitBreaker.maxRequests allows"
        );
        assert_eq!(b.overflows(Limit::Requests), 1);
        assert_eq!(b.in_flight(Limit::Requests), 2, "a refusal takes nothing");
        drop(p1);
        assert_eq!(b.in_flight(Limit::Requests), 1);
        let _p3 = b.try_request(2).unwrap();
        drop(p2);

        // Retries are counted apart; a limit of 0 refuses every retry.
        assert!(b.try_retry(0).is_err());
        let r = b.try_retry(1).unwrap();
        assert_eq!(b.in_flight(Limit::Retries), 1);
        assert!(b.try_retry(1).is_err());
        drop(r);
        assert_eq!(b.in_flight(Limit::Retries), 0);
        assert_eq!(b.overflows(Limit::Retries), 2);
    }

    #[test]
    fn a_lowered_limit_admits_nothing_until_below_it() {
        let b = Arc::new(BreakerState::default());
        let held: Vec<_> = (0..3).map(|_| b.try_request(3).unwrap()).collect();
        assert!(b.try_request(1).is_err());
        drop(held);
        assert!(b.try_request(1).is_ok());
    }
}
