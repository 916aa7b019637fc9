//! Target choice per target group, and the resilience state beside it:
//! outstanding requests, active health, passive outlier ejection and
//! circuit-breaker counters. That state lives beside the snapshot, keyed
//! by target group id (and target address and port), so a config push
//! does not reset it.
//!
//! - `endpoint`: [`Endpoint`] (a target, its precomputed authorities and
//!   its runtime state) and [`EndpointGuard`] (one request in flight,
//!   which reports each attempt's [`Outcome`])
//! - `group`: [`GroupBalancer`]: round robin and least request over the
//!   eligible targets (`view`), fail-open, ejection, breaker permits
//! - `health`, `checker`, `probe`: active health checks (Lattice's state
//!   machine; one checker task per target; the check request)
//! - `outlier`, `outcome`: passive outlier ejection
//! - `breaker`: [`RequestPermit`], [`RetryPermit`], [`Overflow`]
//! - `status`: what `GET /targets` and the health report show
//! - here: [`Balancer`], every group, swapped whole on a push
//!
//! Requests read the current map through `arc_swap` without a lock; a push
//! builds a new map beside it and swaps it in. A request in flight keeps
//! the `Arc`s it picked, so a target removed by a push stays usable (and
//! counted) until its last guard drops.

mod breaker;
mod checker;
#[cfg(test)]
mod checker_tests;
mod clock;
mod endpoint;
mod group;
mod health;
mod outcome;
mod outlier;
mod probe;
mod signal;
mod status;
mod view;

pub use breaker::{Limit, Overflow, RequestPermit, RetryPermit};
pub use checker::FIRST_CHECK_WINDOW;
pub use endpoint::{Endpoint, EndpointGuard};
pub use group::GroupBalancer;
pub use outcome::Outcome;
pub use probe::{HEALTH_CHECK_POOL_IDLE, HEALTH_CHECK_USER_AGENT};
pub use status::{
    BreakerStatus, CheckStatus, EjectionStatus, GroupStatus, HealthCheckStatus, LimitStatus,
    TargetStatus, TargetsStatus,
};

use arc_swap::ArcSwap;
use checker::Checkers;
use group::Context;
use signal::Signals;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use trellis_config::{HealthReport, Snapshot};

/// Target group id -> its balancer.
pub(crate) type Groups = HashMap<String, Arc<GroupBalancer>>;

/// All target groups' balancers, and their health checkers.
#[derive(Debug)]
pub struct Balancer {
    groups: ArcSwap<Groups>,
    signals: Arc<Signals>,
    /// `None`: no active checks (targets count as healthy, UNAVAILABLE).
    checks: Option<Checkers>,
}

impl Default for Balancer {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer {
    /// An empty balancer that health-checks the targets of every group
    /// with checks enabled. Checkers start in [`Balancer::update`], which
    /// must then run within a tokio runtime (without one, none start and
    /// targets count as healthy, reported UNAVAILABLE).
    pub fn new() -> Self {
        Self {
            checks: Some(Checkers::default()),
            ..Self::without_health_checks()
        }
    }

    /// [`Balancer::new`] whose checks of fronted targets go over `mesh`
    /// TLS to the fronting proxy.
    pub(crate) fn with_mesh(mesh: &crate::identity::MeshTls) -> Self {
        Self {
            checks: Some(Checkers::with_mesh(mesh)),
            ..Self::without_health_checks()
        }
    }

    /// An empty balancer that runs no health checks: every target counts
    /// as healthy (reported UNAVAILABLE). For tools and tests.
    pub fn without_health_checks() -> Self {
        Self {
            groups: ArcSwap::default(),
            signals: Arc::default(),
            checks: None,
        }
    }

    /// Take the target groups of a new snapshot, keeping the state of
    /// groups and targets that are still there, then start, update and
    /// stop health checkers to match (see `checker`).
    ///
    /// A group equal to the one already held is kept as is. A changed group
    /// gets a new [`GroupBalancer`] that takes over the endpoints of targets
    /// with the same address and port (outstanding counts, health,
    /// ejections), the round-robin position and the group's breaker
    /// counters. Groups and targets that left are dropped from the map;
    /// guards in flight keep theirs alive.
    ///
    /// Safe to call from several tasks: a concurrent update is redone
    /// against the map the other one stored (`ArcSwap::rcu`).
    pub fn update(&self, snapshot: &Snapshot) {
        let ctx = Context {
            signals: Arc::clone(&self.signals),
            checking: self.checks.as_ref().is_some_and(Checkers::can_run),
        };
        let old = self.groups.rcu(|old| {
            let mut next = Groups::with_capacity(snapshot.target_groups.len());
            for spec in &snapshot.target_groups {
                if next.contains_key(&spec.id) {
                    // The control plane never repeats an id; keep the first.
                    continue;
                }
                let previous = old.get(&spec.id);
                let group = match previous {
                    Some(g) if g.is_current(spec) => Arc::clone(g),
                    _ => Arc::new(GroupBalancer::new(spec, previous.map(|g| &**g), &ctx)),
                };
                next.insert(spec.id.clone(), group);
            }
            next
        });
        let new = self.groups.load();
        let same = old.len() == new.len()
            && new
                .iter()
                .all(|(id, g)| old.get(id).is_some_and(|o| Arc::ptr_eq(o, g)));
        drop(new);
        if !same {
            // Targets came or went: the health report changes.
            self.signals.changed();
        }
        if let Some(checks) = &self.checks {
            checks.reconcile(&self.groups, &self.signals);
        }
    }

    /// The balancer of a target group, by id.
    pub fn group(&self, target_group_id: &str) -> Option<Arc<GroupBalancer>> {
        self.groups.load().get(target_group_id).cloned()
    }

    /// Number of target groups held.
    pub fn len(&self) -> usize {
        self.groups.load().len()
    }

    /// Whether no target group is held (before the first snapshot).
    pub fn is_empty(&self) -> bool {
        self.groups.load().is_empty()
    }

    /// Number of health checkers running.
    pub fn health_checkers(&self) -> usize {
        self.checks.as_ref().map_or(0, Checkers::len)
    }

    /// Stop every health checker for good (the proxy is shutting down).
    pub fn stop_health_checks(&self) {
        if let Some(checks) = &self.checks {
            checks.stop(&self.signals);
        }
    }

    /// Every group's state, sorted by id: what `GET /targets` shows.
    pub fn status(&self) -> Vec<GroupStatus> {
        let groups = self.groups.load();
        let mut out: Vec<GroupStatus> = groups.values().map(|g| status::group_status(g)).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The health of every target of every group, as this proxy sees it:
    /// the body of `POST /v1/proxies/{name}/health`.
    pub fn health_report(&self) -> HealthReport {
        HealthReport {
            targets: self
                .status()
                .iter()
                .flat_map(status::report_entries)
                .collect(),
        }
    }

    /// Wakes after every change of a target's health or ejection (the
    /// health reporter debounces these).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.signals.subscribe()
    }

    /// Time until the next ejection ends, if a target is ejected: its
    /// return changes the health report, though nothing signals it.
    pub fn next_return(&self) -> Option<Duration> {
        let now = clock::now_ms();
        self.groups
            .load()
            .values()
            .flat_map(|g| g.endpoints().iter())
            .map(|e| e.state().outlier.until())
            .filter(|&until| until > now)
            .min()
            .map(|until| Duration::from_millis(until - now))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::group::tests::group;
    use super::*;
    use trellis_config::{Algorithm, SnapshotTargetGroup};

    fn snapshot(groups: Vec<SnapshotTargetGroup>) -> Snapshot {
        Snapshot {
            target_groups: groups,
            ..Default::default()
        }
    }

    fn addrs(g: &GroupBalancer) -> Vec<&str> {
        g.endpoints().iter().map(|e| e.target_authority()).collect()
    }

    #[test]
    fn unknown_group_is_none() {
        let b = Balancer::without_health_checks();
        assert!(b.is_empty());
        assert!(b.group("tg").is_none());
        b.update(&snapshot(vec![group(
            "tg",
            Algorithm::RoundRobin,
            &["10.0.0.1"],
        )]));
        assert_eq!(b.len(), 1);
        assert!(b.group("tg").is_some());
        assert!(b.group("other").is_none());
    }

    #[test]
    fn counters_survive_an_identical_push() {
        let b = Balancer::without_health_checks();
        let s = snapshot(vec![group(
            "tg",
            Algorithm::RoundRobin,
            &["10.0.0.1", "10.0.0.2"],
        )]);
        b.update(&s);
        let before = b.group("tg").unwrap();
        let held = before.pick().unwrap();
        b.update(&s.clone());
        let after = b.group("tg").unwrap();
        assert!(
            Arc::ptr_eq(&before, &after),
            "an unchanged group is kept whole"
        );
        assert!(Arc::ptr_eq(&held.endpoint, &after.endpoints()[0]));
        assert_eq!(after.endpoints()[0].outstanding(), 1);
        // The round-robin position carried on: the next pick is the second.
        assert_eq!(after.pick().unwrap().target_authority(), "10.0.0.2:8080");
        drop(held);
        assert_eq!(after.endpoints()[0].outstanding(), 0);
    }

    #[test]
    fn changed_group_keeps_endpoints_that_stayed() {
        let b = Balancer::without_health_checks();
        b.update(&snapshot(vec![group(
            "tg",
            Algorithm::RoundRobin,
            &["10.0.0.1", "10.0.0.2"],
        )]));
        let before = b.group("tg").unwrap();
        let on_1 = before.pick().unwrap();
        let on_2 = before.pick().unwrap();
        assert_eq!(on_2.target_authority(), "10.0.0.2:8080");

        // New algorithm, 10.0.0.2 gone, 10.0.0.3 new.
        let mut spec = group("tg", Algorithm::LeastRequest, &["10.0.0.1", "10.0.0.3"]);
        spec.name = "renamed".into();
        b.update(&snapshot(vec![spec]));
        let after = b.group("tg").unwrap();
        assert!(!Arc::ptr_eq(&before, &after));
        assert_eq!(after.name(), "renamed");
        assert_eq!(after.algorithm(), Algorithm::LeastRequest);
        assert_eq!(addrs(&after), ["10.0.0.1:8080", "10.0.0.3:8080"]);
        assert!(Arc::ptr_eq(&on_1.endpoint, &after.endpoints()[0]));
        assert_eq!(after.endpoints()[0].outstanding(), 1, "counter kept");
        assert_eq!(after.endpoints()[1].outstanding(), 0);

        // The removed target lives on in its guard only.
        assert!(
            !after
                .endpoints()
                .iter()
                .any(|e| Arc::ptr_eq(e, &on_2.endpoint))
        );
        assert_eq!(on_2.outstanding(), 1);
        // Its guard keeps the balancer that picked it (for outlier
        // settings), not the new one.
        assert!(Arc::ptr_eq(on_2.group(), &before));
        drop(on_2);
    }

    #[test]
    fn moved_fronting_proxy_keeps_state() {
        let b = Balancer::without_health_checks();
        let mut spec = group("tg", Algorithm::RoundRobin, &["10.0.0.1"]);
        b.update(&snapshot(vec![spec.clone()]));
        let held = b.group("tg").unwrap().pick().unwrap();
        spec.targets[0].proxy = Some("edge-2".into());
        spec.targets[0].via = Some("192.0.2.9:15001".into());
        b.update(&snapshot(vec![spec]));
        let ep = Arc::clone(&b.group("tg").unwrap().endpoints()[0]);
        assert_eq!(ep.connect_authority(), "192.0.2.9:15001");
        assert!(ep.same_state(&held.endpoint));
        assert_eq!(ep.outstanding(), 1);
        drop(held);
        assert_eq!(ep.outstanding(), 0);
    }

    #[test]
    fn removed_groups_vanish() {
        let b = Balancer::without_health_checks();
        b.update(&snapshot(vec![
            group("tg-a", Algorithm::RoundRobin, &["10.0.0.1"]),
            group("tg-b", Algorithm::RoundRobin, &["10.0.0.2"]),
        ]));
        let kept_alive = b.group("tg-b").unwrap();
        b.update(&snapshot(vec![group(
            "tg-a",
            Algorithm::RoundRobin,
            &["10.0.0.1"],
        )]));
        assert!(b.group("tg-b").is_none());
        assert_eq!(b.len(), 1);
        assert!(kept_alive.pick().is_some(), "a held balancer still works");
    }

    #[test]
    fn same_address_in_two_groups_is_two_endpoints() {
        let b = Balancer::without_health_checks();
        b.update(&snapshot(vec![
            group("tg-a", Algorithm::RoundRobin, &["10.0.0.1"]),
            group("tg-b", Algorithm::RoundRobin, &["10.0.0.1"]),
        ]));
        let _g = b.group("tg-a").unwrap().pick().unwrap();
        assert_eq!(b.group("tg-a").unwrap().endpoints()[0].outstanding(), 1);
        assert_eq!(b.group("tg-b").unwrap().endpoints()[0].outstanding(), 0);
    }

    #[test]
    fn emptied_group_picks_nothing() {
        let b = Balancer::without_health_checks();
        b.update(&snapshot(vec![group(
            "tg",
            Algorithm::RoundRobin,
            &["10.0.0.1"],
        )]));
        b.update(&snapshot(vec![group("tg", Algorithm::RoundRobin, &[])]));
        assert!(b.group("tg").unwrap().pick().is_none());
    }

    #[test]
    fn resilience_state_survives_a_changed_push() {
        let b = Balancer::without_health_checks();
        let mut spec = group("tg", Algorithm::RoundRobin, &["10.0.0.1", "10.0.0.2"]);
        spec.outlier_detection = Some(trellis_config::OutlierDetection {
            consecutive_5xx: 1,
            ..Default::default()
        });
        b.update(&snapshot(vec![spec.clone()]));
        let before = b.group("tg").unwrap();
        let guard = before.pick().unwrap();
        assert_eq!(guard.target_authority(), "10.0.0.1:8080");
        guard.record(Outcome::Status(500));
        let permit = before.try_request().unwrap();

        spec.name = "renamed".into();
        b.update(&snapshot(vec![spec]));
        let after = b.group("tg").unwrap();
        assert!(!Arc::ptr_eq(&before, &after));
        assert!(
            (0..10).all(|_| after.pick().unwrap().target_authority() == "10.0.0.2:8080"),
            "still ejected"
        );
        assert_eq!(after.breaker_counts(Limit::Requests), (1, 0));
        drop(permit);
        assert_eq!(after.breaker_counts(Limit::Requests), (0, 0));

        let status = b.status();
        let t = &status[0].targets[0];
        assert_eq!(t.state, trellis_config::TargetState::Unhealthy);
        assert_eq!(t.reason.as_deref(), Some("Ejected: 1 consecutive 5xx"));
        assert!(t.ejection.ejected && t.ejection.until.is_some());
        assert_eq!(t.ejection.total, 1);
        assert!(!t.eligible);
        assert!(b.next_return().is_some());
        let report = b.health_report();
        assert_eq!(report.targets.len(), 2);
        assert_eq!(
            report.targets[1].state,
            trellis_config::TargetState::Unavailable
        );
        assert_eq!(report.targets[1].reason.as_deref(), Some("NotChecked"));
    }
}
