//! Passive outlier ejection of one target (when the group sets
//! `outlierDetection`), from the outcomes the data path reports.
//!
//! - **Counting**: consecutive 5xx, consecutive gateway errors and
//!   consecutive connect failures, as [`super::Outcome`] documents. A
//!   counter at or over its threshold (0: that counter is off) asks for an
//!   ejection; outcomes of requests still in flight to an ejected target
//!   are ignored.
//! - **Ejection time**: `baseEjectionMs × n`, capped at `maxEjectionMs`,
//!   where `n` counts this target's recent ejections: it grows by one per
//!   ejection and drops by one for every `baseEjectionMs` the target spent
//!   back in the group since its last ejection ended (as Envoy's
//!   multiplier decays), so a target that flaps is kept out longer and
//!   one that failed once long ago starts over.
//! - **Cap**: at most `max(1, ⌊targets × maxEjectionPercent / 100⌋)`
//!   targets of a group are ejected at once, and never the only target of
//!   a group (fail-open would send it everything anyway). The "at least
//!   one" follows Envoy and the model's documentation: any group of two
//!   can shed one bad target, whatever the percentage. A refused ejection
//!   is tried again on the target's next failure.
//! - **Return**: lazily. The picker notices an ejection whose time has
//!   passed when it rebuilds its eligible set (it keeps the earliest
//!   return time and reads the clock only while something is ejected);
//!   no timer runs per target.

use super::outcome::Outcome;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use trellis_config::OutlierDetection;

/// Which counter ejected a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cause {
    Consecutive5xx = 1,
    GatewayErrors = 2,
    ConnectFailures = 3,
}

impl Cause {
    fn from_u8(v: u8) -> Option<Cause> {
        match v {
            1 => Some(Cause::Consecutive5xx),
            2 => Some(Cause::GatewayErrors),
            3 => Some(Cause::ConnectFailures),
            _ => None,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Cause::Consecutive5xx => "consecutive 5xx",
            Cause::GatewayErrors => "consecutive gateway errors",
            Cause::ConnectFailures => "consecutive connect failures",
        }
    }
}

/// Most targets of a group of `n` that may be ejected at once.
pub(crate) fn ejection_cap(n: usize, max_percent: u32) -> usize {
    if n < 2 {
        return 0;
    }
    (n.saturating_mul(max_percent as usize) / 100).max(1)
}

/// One target's counters and ejection, all atomics (the data path writes
/// them without a lock).
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_connect: AtomicU32,
    /// Clock reading the ejection ends at; 0: not ejected.
    until: AtomicU64,
    /// End of the last ejection (kept after it ends), for the decay.
    last_until: AtomicU64,
    /// The multiplier `n` of the last ejection.
    ejections: AtomicU32,
    /// Ejections since the target joined.
    total: AtomicU64,
    /// [`Cause`] of the last ejection, and the count that reached it.
    cause: AtomicU8,
    cause_count: AtomicU32,
}

/// A copy of the counters, for display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OutlierView {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub consecutive_connect: u32,
    /// Clock reading the current ejection ends at (0: none; may be past
    /// until the picker notices).
    pub until: u64,
    pub ejections: u32,
    pub total: u64,
}

fn bump(counter: &AtomicU32, hit: bool) -> u32 {
    if hit {
        counter.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    } else {
        // Store only when needed: most outcomes are successes, and a
        // store on a shared cache line per request is not free.
        if counter.load(Ordering::Relaxed) != 0 {
            counter.store(0, Ordering::Relaxed);
        }
        0
    }
}

impl OutlierState {
    /// Count one outcome; the cause and count when a threshold is reached.
    pub(crate) fn observe(&self, outcome: Outcome, od: &OutlierDetection) -> Option<(Cause, u32)> {
        let connect = match outcome {
            Outcome::ConnectFailure => bump(&self.consecutive_connect, true),
            // A timeout says nothing about connecting (the connection was open).
            Outcome::Timeout => self.consecutive_connect.load(Ordering::Relaxed),
            Outcome::Status(_) | Outcome::Reset => bump(&self.consecutive_connect, false),
        };
        let gateway = bump(&self.consecutive_gateway, outcome.is_gateway_error());
        let fives = bump(&self.consecutive_5xx, outcome.is_5xx());
        let reached = |n: u32, threshold: u32| threshold > 0 && n >= threshold;
        if reached(connect, od.consecutive_connect_failures) {
            Some((Cause::ConnectFailures, connect))
        } else if reached(gateway, od.consecutive_gateway_errors) {
            Some((Cause::GatewayErrors, gateway))
        } else if reached(fives, od.consecutive_5xx) {
            Some((Cause::Consecutive5xx, fives))
        } else {
            None
        }
    }

    /// Whether the target is ejected at clock reading `now`.
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until != 0 && now < until
    }

    /// Clock reading the current ejection ends at; 0: none.
    pub(crate) fn until(&self) -> u64 {
        self.until.load(Ordering::Acquire)
    }

    /// Eject from `now`; returns the ejection time in ms. The caller
    /// holds the group's ejection lock and checked the cap.
    pub(crate) fn eject(&self, now: u64, od: &OutlierDetection, cause: Cause, count: u32) -> u64 {
        let base = u64::from(od.base_ejection_ms).max(1);
        let last = self.last_until.load(Ordering::Relaxed);
        let mut n = self.ejections.load(Ordering::Relaxed);
        if last != 0 && now > last {
            let good_periods = u32::try_from((now - last) / base).unwrap_or(u32::MAX);
            n = n.saturating_sub(good_periods);
        }
        n = n.saturating_add(1);
        let ms = base
            .saturating_mul(u64::from(n))
            .min(u64::from(od.max_ejection_ms).max(base));
        let until = now.saturating_add(ms);
        self.ejections.store(n, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.cause.store(cause as u8, Ordering::Relaxed);
        self.cause_count.store(count, Ordering::Relaxed);
        self.last_until.store(until, Ordering::Relaxed);
        for c in [
            &self.consecutive_5xx,
            &self.consecutive_gateway,
            &self.consecutive_connect,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.until.store(until, Ordering::Release);
        ms
    }

    /// End an ejection whose time has passed; whether this call ended it.
    pub(crate) fn clear_if_expired(&self, now: u64) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until != 0
            && now >= until
            && self
                .until
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Why the target is ejected, in the health report's words
    /// (`Ejected: 5 consecutive 5xx`).
    pub(crate) fn reason(&self) -> String {
        match Cause::from_u8(self.cause.load(Ordering::Relaxed)) {
            Some(cause) => format!(
                "Ejected: {} {}",
                self.cause_count.load(Ordering::Relaxed),
                cause.words()
            ),
            None => "Ejected".to_string(),
        }
    }

    /// A copy of the counters.
    pub(crate) fn view(&self) -> OutlierView {
        OutlierView {
            consecutive_5xx: self.consecutive_5xx.load(Ordering::Relaxed),
            consecutive_gateway: self.consecutive_gateway.load(Ordering::Relaxed),
            consecutive_connect: self.consecutive_connect.load(Ordering::Relaxed),
            until: self.until(),
            ejections: self.ejections.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn od() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 3,
            consecutive_connect_failures: 2,
            base_ejection_ms: 1_000,
            max_ejection_ms: 2_500,
            max_ejection_percent: 10,
        }
    }

    #[test]
    fn counters_are_consecutive() {
        let s = OutlierState::default();
        let od = od();
        for _ in 0..4 {
            assert_eq!(s.observe(Outcome::Status(500), &od), None);
        }
        assert_eq!(s.observe(Outcome::Status(200), &od), None, "reset");
        for _ in 0..4 {
            assert_eq!(s.observe(Outcome::Status(500), &od), None);
        }
        assert_eq!(
            s.observe(Outcome::Status(501), &od),
            Some((Cause::Consecutive5xx, 5))
        );
    }

    #[test]
    fn gateway_and_connect_thresholds() {
        let od = od();
        let s = OutlierState::default();
        assert_eq!(s.observe(Outcome::Status(502), &od), None);
        assert_eq!(s.observe(Outcome::Reset, &od), None);
        assert_eq!(
            s.observe(Outcome::Timeout, &od),
            Some((Cause::GatewayErrors, 3))
        );

        let s = OutlierState::default();
        assert_eq!(s.observe(Outcome::ConnectFailure, &od), None);
        // A 500 breaks the gateway and connect streaks.
        assert_eq!(s.observe(Outcome::Status(500), &od), None);
        assert_eq!(s.observe(Outcome::ConnectFailure, &od), None);
        assert_eq!(
            s.observe(Outcome::ConnectFailure, &od),
            Some((Cause::ConnectFailures, 2))
        );

        // A threshold of 0 is off.
        let off = OutlierDetection {
            consecutive_connect_failures: 0,
            consecutive_gateway_errors: 0,
            ..od
        };
        let s = OutlierState::default();
        for _ in 0..4 {
            assert_eq!(s.observe(Outcome::ConnectFailure, &off), None);
        }
    }

    #[test]
    fn ejection_time_grows_caps_and_decays() {
        let od = od();
        let s = OutlierState::default();
        let now = 10_000;
        assert_eq!(s.eject(now, &od, Cause::Consecutive5xx, 5), 1_000);
        assert!(s.is_ejected(now) && s.is_ejected(now + 999));
        assert!(!s.is_ejected(now + 1_000));
        assert!(!s.clear_if_expired(now + 999));
        assert!(s.clear_if_expired(now + 1_000));
        assert!(!s.clear_if_expired(now + 1_000), "once");
        assert_eq!(s.until(), 0);
        // Right back: twice as long, then capped.
        assert_eq!(s.eject(now + 1_100, &od, Cause::Consecutive5xx, 5), 2_000);
        assert_eq!(s.eject(now + 3_200, &od, Cause::GatewayErrors, 3), 2_500);
        assert_eq!(s.reason(), "Ejected: 3 consecutive gateway errors");
        // Three base periods back in the group: the multiplier (3) decays to 0.
        let back = now + 3_200 + 2_500;
        assert_eq!(s.eject(back + 3_000, &od, Cause::Consecutive5xx, 5), 1_000);
        assert_eq!(s.view().total, 4);
        assert_eq!(s.view().consecutive_5xx, 0, "counters reset on ejection");
    }

    #[test]
    fn cap() {
        assert_eq!(ejection_cap(0, 100), 0);
        assert_eq!(ejection_cap(1, 100), 0, "never the only target");
        assert_eq!(ejection_cap(2, 10), 1, "at least one");
        assert_eq!(ejection_cap(2, 0), 1);
        assert_eq!(ejection_cap(15, 10), 1);
        assert_eq!(ejection_cap(20, 10), 2);
        assert_eq!(ejection_cap(3, 100), 3);
    }
}
