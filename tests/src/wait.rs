//! Bounded polling: wait until a condition holds, or fail with a message
//! that says what was awaited and for how long.
//!
//! Tests use these instead of sleeps: they return as soon as the condition
//! holds and only the upper bound (generous, see [`crate::WAIT_TIMEOUT`])
//! depends on time, so they are neither flaky on a slow machine nor slow on
//! a fast one.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(15);

/// A condition did not hold within its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTimeout {
    /// What was awaited, as the caller described it.
    pub what: String,
    /// How long it was awaited.
    pub waited: Duration,
}

impl std::fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gave up waiting for {} after {:?}",
            self.what, self.waited
        )
    }
}

impl std::error::Error for WaitTimeout {}

/// Poll `cond` every [`POLL_INTERVAL`] until it returns true or `timeout`
/// passes. The condition is checked once more at the deadline.
pub async fn wait_until<F>(what: &str, timeout: Duration, mut cond: F) -> Result<(), WaitTimeout>
where
    F: FnMut() -> bool,
{
    eventually(what, timeout, || {
        let ok = cond();
        async move { ok.then_some(()) }
    })
    .await
}

/// Like [`wait_until`] with an async condition (e.g. an HTTP request).
pub async fn wait_until_async<F, Fut>(
    what: &str,
    timeout: Duration,
    mut cond: F,
) -> Result<(), WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, timeout, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Poll `f` until it yields `Some(value)` and return the value; an attempt
/// that is still running at the deadline is abandoned.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut f: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(v)) = tokio::time::timeout_at(deadline, f()).await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitTimeout {
                what: what.to_owned(),
                waited: start.elapsed(),
            });
        }
        let next = tokio::time::Instant::now() + POLL_INTERVAL;
        tokio::time::sleep_until(next.min(deadline)).await;
    }
}
