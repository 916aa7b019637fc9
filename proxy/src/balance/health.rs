//! Active health of one target: VPC Lattice's state machine, and the cell
//! that publishes its result to the pickers (one atomic) and to the admin
//! API and health reports (details, behind a lock they alone take).
//!
//! The rules (Lattice): a checked target starts INITIAL and becomes
//! HEALTHY after **one** passing check; `unhealthyThreshold` consecutive
//! failures make a target UNHEALTHY (from INITIAL or HEALTHY);
//! `healthyThreshold` consecutive passes make an UNHEALTHY target HEALTHY
//! again. A target nobody checks (checks disabled, draining, or a balancer
//! without checkers) is `Unchecked`: it counts as healthy and is reported
//! UNAVAILABLE.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Health as active checks see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Health {
    /// No checker runs for the target: counts as healthy.
    #[default]
    Unchecked = 0,
    /// Checked, no pass yet.
    Initial = 1,
    /// Passing.
    Healthy = 2,
    /// Failing.
    Unhealthy = 3,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Initial,
            2 => Health::Healthy,
            3 => Health::Unhealthy,
            _ => Health::Unchecked,
        }
    }

    /// Whether the picker may choose a target in this state.
    pub(crate) fn eligible(self) -> bool {
        matches!(self, Health::Unchecked | Health::Healthy)
    }
}

/// Consecutive results that change a target's health (each at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thresholds {
    /// Passes for UNHEALTHY -> HEALTHY.
    pub healthy: u32,
    /// Failures for INITIAL/HEALTHY -> UNHEALTHY.
    pub unhealthy: u32,
}

/// One target's state machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Machine {
    pub health: Health,
    /// Consecutive passing checks.
    pub passes: u32,
    /// Consecutive failing checks.
    pub failures: u32,
}

impl Machine {
    /// Apply one check result; the new health when it changed.
    pub(crate) fn observe(&mut self, passed: bool, t: Thresholds) -> Option<Health> {
        let before = self.health;
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            self.health = match self.health {
                Health::Unchecked | Health::Initial | Health::Healthy => Health::Healthy,
                Health::Unhealthy if self.passes >= t.healthy.max(1) => Health::Healthy,
                Health::Unhealthy => Health::Unhealthy,
            };
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            if self.failures >= t.unhealthy.max(1) {
                self.health = Health::Unhealthy;
            } else if self.health == Health::Unchecked {
                self.health = Health::Initial;
            }
        }
        (self.health != before).then_some(self.health)
    }
}

/// What the admin API and the health report show of a target's checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Detail {
    /// The checker publishing here (0: none).
    pub owner: u64,
    pub machine: Machine,
    /// Why the last check failed (cleared by a pass).
    pub reason: Option<String>,
    /// Checks done.
    pub checks: u64,
}

/// Where a target's checker publishes.
#[derive(Debug, Default)]
pub(crate) struct HealthCell {
    /// Copy of `detail.machine.health`, for the picker.
    health: AtomicU8,
    detail: Mutex<Detail>,
}

impl HealthCell {
    /// A cell in `health` (`Initial` for a new target that will be
    /// checked, so it takes no traffic before its first pass).
    pub(crate) fn new(health: Health) -> Self {
        Self {
            health: AtomicU8::new(health as u8),
            detail: Mutex::new(Detail {
                machine: Machine {
                    health,
                    ..Default::default()
                },
                ..Default::default()
            }),
        }
    }

    /// The current health (one atomic load).
    pub(crate) fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// A copy of the details.
    pub(crate) fn detail(&self) -> Detail {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, d: &mut Detail, machine: Machine) -> bool {
        let changed = d.machine.health != machine.health;
        d.machine = machine;
        self.health.store(machine.health as u8, Ordering::Release);
        changed
    }

    /// Checker `owner` takes the target over; an unchecked target becomes
    /// INITIAL (a checked one keeps its state: a settings change does not
    /// reset health). Whether the health changed.
    pub(crate) fn claim(&self, owner: u64) -> bool {
        let mut d = self.lock();
        d.owner = owner;
        if d.machine.health == Health::Unchecked {
            let initial = Machine {
                health: Health::Initial,
                ..Default::default()
            };
            return self.set(&mut d, initial);
        }
        false
    }

    /// Checker `owner` stops: the target is unchecked again, unless
    /// another checker took it over meanwhile. Whether the health changed.
    pub(crate) fn release(&self, owner: u64) -> bool {
        let mut d = self.lock();
        if d.owner != owner {
            return false;
        }
        d.owner = 0;
        d.reason = None;
        self.set(&mut d, Machine::default())
    }

    /// A check result of checker `owner` (ignored when another owns the
    /// cell: a stopped checker that was mid-check). The health before and
    /// after, when it changed.
    pub(crate) fn record(
        &self,
        owner: u64,
        result: Result<(), String>,
        t: Thresholds,
    ) -> Option<(Health, Health)> {
        let mut d = self.lock();
        if d.owner != owner {
            return None;
        }
        d.checks = d.checks.saturating_add(1);
        let before = d.machine.health;
        let mut machine = d.machine;
        let changed = machine.observe(result.is_ok(), t);
        d.reason = result.err();
        self.set(&mut d, machine);
        changed.map(|after| (before, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        healthy: 3,
        unhealthy: 2,
    };

    fn run(m: &mut Machine, results: &[bool]) -> Vec<Option<Health>> {
        results.iter().map(|&ok| m.observe(ok, T)).collect()
    }

    #[test]
    fn initial_needs_one_pass() {
        let mut m = Machine {
            health: Health::Initial,
            ..Default::default()
        };
        assert_eq!(run(&mut m, &[true]), [Some(Health::Healthy)]);
    }

    #[test]
    fn thresholds_apply_after_the_first_pass() {
        let mut m = Machine {
            health: Health::Initial,
            ..Default::default()
        };
        // Healthy: one failure is tolerated, two are not.
        assert_eq!(
            run(&mut m, &[true, false, true, false, false]),
            [
                Some(Health::Healthy),
                None,
                None,
                None,
                Some(Health::Unhealthy)
            ]
        );
        // Unhealthy: three passes in a row are needed; a failure restarts.
        assert_eq!(
            run(&mut m, &[true, true, false, true, true, true]),
            [None, None, None, None, None, Some(Health::Healthy)]
        );
        assert_eq!((m.passes, m.failures), (3, 0));
    }

    #[test]
    fn initial_fails_into_unhealthy_at_the_threshold() {
        let mut m = Machine {
            health: Health::Initial,
            ..Default::default()
        };
        assert_eq!(
            run(&mut m, &[false, false]),
            [None, Some(Health::Unhealthy)]
        );
        // From there it is an unhealthy target like any other.
        assert_eq!(
            run(&mut m, &[true, true, true]),
            [None, None, Some(Health::Healthy)]
        );
    }

    #[test]
    fn cell_ignores_a_released_checker() {
        let cell = HealthCell::new(Health::Unchecked);
        assert!(cell.health().eligible());
        assert!(cell.claim(7));
        assert_eq!(cell.health(), Health::Initial);
        assert!(!cell.health().eligible());
        assert_eq!(
            cell.record(7, Err("HealthCheckFailed: status 500".into()), T),
            None
        );
        assert_eq!(
            cell.detail().reason.as_deref(),
            Some("HealthCheckFailed: status 500")
        );
        assert_eq!(
            cell.record(7, Ok(()), T),
            Some((Health::Initial, Health::Healthy))
        );
        assert_eq!(cell.detail().reason, None);
        // A new checker takes over without resetting the state...
        assert!(!cell.claim(8));
        assert_eq!(cell.health(), Health::Healthy);
        // ...and the old one can neither write nor release.
        assert_eq!(cell.record(7, Err("late".into()), T), None);
        assert!(!cell.release(7));
        assert_eq!(cell.detail().checks, 2);
        assert!(cell.release(8));
        assert_eq!(cell.health(), Health::Unchecked);
    }
}
