//! Token-bucket rate limits (the `governor` crate) of services and rules,
//! checked on the outbound listener once a request is routed.
//!
//! A limit is **local to each proxy**: every proxy keeps its own buckets,
//! so N proxies in front of a service admit up to N times its rate. A
//! limit with `key: caller` keeps one bucket per caller's IP address, in a
//! map that is swept of full (idle) buckets every [`SWEEP_INTERVAL`] and
//! cleared outright should it ever hold more than [`MAX_CALLER_BUCKETS`],
//! so a flood of distinct addresses cannot grow it without bound.
//!
//! Why the address and not the mesh identity: limits are checked by the
//! proxy that routes the request (the caller's), where every application
//! behind that proxy shares the proxy's identity, so the address is the
//! finer key there.
//!
//! Buckets are runtime state: a push that leaves a limit unchanged keeps
//! its buckets (see [`Limiters::get`]); a changed limit starts full.
//!
//! Over the limit the request is answered 429 `rate_limited` with
//! `Retry-After`: the seconds until the bucket admits one request, rounded
//! up, at least 1.

use crate::error::{Failure, Reason};
use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use trellis_config::{RateLimit, RateLimitKey};

/// How often per-caller maps drop buckets that are full again (a full
/// bucket is the same as no bucket).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Most caller buckets one limit keeps between sweeps; past it the map is
/// cleared (those callers start with full buckets). About 100 bytes each.
pub const MAX_CALLER_BUCKETS: usize = 100_000;

/// One configured limit and its bucket(s).
#[derive(Debug)]
pub(crate) struct Limiter {
    /// What it was made from; a push with an equal limit keeps it.
    spec: RateLimit,
    /// What `Retry-After`'s message names ("service 'x'", "rule 'r'").
    scope: Box<str>,
    buckets: Buckets,
}

#[derive(Debug)]
enum Buckets {
    All(DefaultDirectRateLimiter),
    /// Swapped for an empty map when it grows past [`MAX_CALLER_BUCKETS`].
    Caller(ArcSwap<DefaultKeyedRateLimiter<IpAddr>>),
}

impl Limiter {
    fn new(spec: &RateLimit, scope: String) -> Self {
        let quota = quota(spec);
        let buckets = match spec.key {
            RateLimitKey::All => Buckets::All(RateLimiter::direct(quota)),
            RateLimitKey::Caller => {
                Buckets::Caller(ArcSwap::from_pointee(RateLimiter::keyed(quota)))
            }
        };
        Self {
            spec: spec.clone(),
            scope: scope.into(),
            buckets,
        }
    }

    /// Take one request from the bucket (of `caller`, for a per-caller
    /// limit); over the limit, the 429 to answer.
    pub(crate) fn check(&self, caller: IpAddr) -> Result<(), Failure> {
        let denied = match &self.buckets {
            Buckets::All(l) => l.check().err().map(|n| wait(&n, l.clock().now())),
            Buckets::Caller(l) => {
                let l = l.load();
                l.check_key(&caller)
                    .err()
                    .map(|n| wait(&n, l.clock().now()))
            }
        };
        match denied {
            None => Ok(()),
            Some(wait) => {
                let secs = retry_after_secs(wait);
                Err(Failure::new(
                    Reason::RateLimited,
                    format!(
                        "the rate limit of {} ({} requests per second, burst {}{}) is used up; retry in {secs} s",
                        self.scope,
                        self.spec.requests_per_second,
                        self.spec.burst,
                        match self.spec.key {
                            RateLimitKey::All => "",
                            RateLimitKey::Caller => ", per caller",
                        }
                    ),
                )
                .with_retry_after(secs))
            }
        }
    }

    /// Drop per-caller buckets that are full; clear the map if it is still
    /// over [`MAX_CALLER_BUCKETS`].
    fn sweep(&self) {
        if let Buckets::Caller(swap) = &self.buckets {
            let l = swap.load();
            l.retain_recent();
            l.shrink_to_fit();
            if l.len() > MAX_CALLER_BUCKETS {
                tracing::warn!(
                    scope = %self.scope,
                    callers = l.len(),
                    "too many rate-limit buckets; forgetting them all (those callers start with full buckets)"
                );
                swap.store(Arc::new(RateLimiter::keyed(quota(&self.spec))));
            }
        }
    }
}

fn wait(
    n: &NotUntil<governor::clock::QuantaInstant>,
    now: governor::clock::QuantaInstant,
) -> Duration {
    n.wait_time_from(now)
}

fn quota(spec: &RateLimit) -> Quota {
    // Validation keeps both at 1 or more; 0 would mean "no traffic", and
    // is read as 1 rather than panic.
    let rate = NonZeroU32::new(spec.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(spec.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// `Retry-After` in whole seconds: rounded up, at least 1 (a 0 would
/// invite an immediate retry that is refused again).
pub(crate) fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// Every limit in use, by stable key (`svc/<service id>` or
/// `rule/<service id>/<listener>/<rule>`), so that a push keeps the
/// buckets of limits it did not change. Only touched when a snapshot is
/// prepared and by the sweeper, never per request.
#[derive(Debug, Default)]
pub(crate) struct Limiters {
    by_key: Mutex<HashMap<String, Arc<Limiter>>>,
}

impl Limiters {
    /// The limiter for `key` with `spec`: the one already held if its
    /// limit is equal, else a new one (full buckets).
    pub(crate) fn get(
        &self,
        key: &str,
        spec: &RateLimit,
        scope: impl FnOnce() -> String,
    ) -> Arc<Limiter> {
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(key) {
            Some(l) if l.spec == *spec => Arc::clone(l),
            _ => {
                let l = Arc::new(Limiter::new(spec, scope()));
                map.insert(key.to_owned(), Arc::clone(&l));
                l
            }
        }
    }

    /// Forget every limiter whose key `keep` rejects (limits removed by a push).
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|k, _| keep(k));
    }

    /// Sweep every per-caller limiter (see [`SWEEP_INTERVAL`]).
    pub(crate) fn sweep(&self) {
        let limiters: Vec<Arc<Limiter>> = {
            let map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
            map.values()
                .filter(|l| matches!(l.buckets, Buckets::Caller(_)))
                .cloned()
                .collect()
        };
        for l in limiters {
            l.sweep();
        }
    }

    /// Number of limits held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn limit(rps: u32, burst: u32, key: RateLimitKey) -> RateLimit {
        RateLimit {
            requests_per_second: rps,
            burst,
            key,
        }
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(999)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(7)), 7);
        assert_eq!(retry_after_secs(Duration::MAX), u32::MAX);
    }

    #[test]
    fn exactly_the_burst_passes_then_429() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let l = Limiter::new(&limit(1, 5, RateLimitKey::All), "service 's'".into());
        for i in 0..5 {
            assert!(l.check(ip).is_ok(), "request {i}");
        }
        let f = l.check(ip).unwrap_err();
        assert_eq!(f.reason, Reason::RateLimited);
        assert_eq!(f.retry_after, Some(1));
        assert!(f.message.contains("service 's'"), "{}", f.message);
    }

    #[test]
    fn caller_buckets_are_separate() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let l = Limiter::new(&limit(1, 2, RateLimitKey::Caller), "rule 'r'".into());
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_err());
        assert!(l.check(b).is_ok(), "another caller has its own bucket");
        let Buckets::Caller(k) = &l.buckets else {
            panic!()
        };
        assert_eq!(k.load().len(), 2);
        l.sweep();
        // Both buckets were just used, so both are kept.
        assert_eq!(k.load().len(), 2);
    }

    #[test]
    fn registry_keeps_buckets_of_unchanged_limits() {
        let reg = Limiters::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let spec = limit(1, 1, RateLimitKey::All);
        let a = reg.get("svc/1", &spec, || "s".into());
        a.check(ip).unwrap();
        let b = reg.get("svc/1", &spec, || "s".into());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(b.check(ip).is_err(), "the bucket carried over");
        let c = reg.get("svc/1", &limit(1, 2, RateLimitKey::All), || "s".into());
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(c.check(ip).is_ok(), "a changed limit starts full");
        reg.get("svc/2", &spec, || "t".into());
        assert_eq!(reg.len(), 2);
        reg.retain(|k| k == "svc/2");
        assert_eq!(reg.len(), 1);
    }
}
