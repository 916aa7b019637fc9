//! When to renew: at about 70 % of a certificate's lifetime, jittered.

use std::time::{Instant, SystemTime};
use trellis_config::identity::{RENEW_AT_FRACTION, RENEW_JITTER_FRACTION};

/// The moment to renew a certificate valid from `not_before` to
/// `not_after`: [`RENEW_AT_FRACTION`] of the lifetime, moved by a random
/// jitter of up to ±[`RENEW_JITTER_FRACTION`] so that proxies started
/// together spread their renewals. Now, if that moment has passed.
pub fn renew_at(not_after: SystemTime, not_before: SystemTime) -> Instant {
    let jitter = (fastrand::f64() * 2.0 - 1.0) * RENEW_JITTER_FRACTION;
    renew_at_with(
        not_after,
        not_before,
        SystemTime::now(),
        Instant::now(),
        jitter,
    )
}

/// [`renew_at`] with the clocks and the jitter (a signed fraction of the
/// lifetime) given: deterministic, for tests and for callers that keep
/// their own clock. A lifetime of zero or less renews at once.
pub fn renew_at_with(
    not_after: SystemTime,
    not_before: SystemTime,
    now: SystemTime,
    now_instant: Instant,
    jitter: f64,
) -> Instant {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return now_instant;
    };
    if lifetime.is_zero() {
        return now_instant;
    }
    let fraction = (RENEW_AT_FRACTION + jitter).clamp(0.0, 1.0);
    let at = not_before + lifetime.mul_f64(fraction);
    match at.duration_since(now) {
        Ok(wait) => now_instant + wait,
        Err(_) => now_instant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn seventy_percent_of_the_lifetime_from_not_before() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + DAY;
        let i0 = Instant::now();
        // Issued a minute ago: 70 % of a day from not-before.
        let now = nb + Duration::from_secs(60);
        let at = renew_at_with(na, nb, now, i0, 0.0);
        assert_eq!(at - i0, DAY.mul_f64(0.7) - Duration::from_secs(60));
        // Jitter moves it by that fraction of the lifetime.
        let early = renew_at_with(na, nb, now, i0, -0.05);
        assert_eq!(at - early, DAY.mul_f64(0.05));
    }

    #[test]
    fn past_renewal_points_and_bad_lifetimes_mean_now() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let i0 = Instant::now();
        assert_eq!(renew_at_with(nb + DAY, nb, nb + DAY, i0, 0.0), i0);
        assert_eq!(renew_at_with(nb, nb + DAY, nb, i0, 0.0), i0);
    }

    #[test]
    fn random_jitter_stays_within_the_band() {
        let now = SystemTime::now();
        let (nb, na) = (now, now + DAY);
        let i0 = Instant::now();
        for _ in 0..200 {
            let wait = renew_at(na, nb).saturating_duration_since(i0);
            // Allow for the time between the two Instant::now() calls.
            assert!(
                wait + Duration::from_secs(1) >= DAY.mul_f64(0.65),
                "{wait:?}"
            );
            assert!(
                wait <= DAY.mul_f64(0.75) + Duration::from_secs(1),
                "{wait:?}"
            );
        }
    }
}
