//! The balancer's clock: monotonic milliseconds in a `u64`, so that timed
//! state (ejections) fits in an atomic and is read without a lock.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

static START: OnceLock<Instant> = OnceLock::new();

/// Where the clock starts: never 0, so that 0 can mean "no time" in an
/// atomic, and far enough from 0 that readings in the recent past are
/// representable (tests eject targets "two seconds ago").
const ORIGIN_MS: u64 = 3_600_000;

/// Milliseconds since the first use of the clock in this process, plus
/// [`ORIGIN_MS`].
pub(crate) fn now_ms() -> u64 {
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(ORIGIN_MS)
}

/// The wall-clock time of the clock reading `at`, given the reading `now`
/// taken just before; for display only.
pub(crate) fn wall_time(at: u64, now: u64) -> SystemTime {
    let wall = SystemTime::now();
    if at >= now {
        wall.checked_add(Duration::from_millis(at - now))
            .unwrap_or(wall)
    } else {
        wall.checked_sub(Duration::from_millis(now - at))
            .unwrap_or(wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_and_monotonic() {
        let a = now_ms();
        let b = now_ms();
        assert!(a >= 1 && b >= a);
        let later = wall_time(a + 60_000, a);
        assert!(later > SystemTime::now());
    }
}
