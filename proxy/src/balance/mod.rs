//! Target choice per target group, with runtime state (outstanding
//! requests, round-robin position) that lives beside the snapshot, keyed by
//! target group id and target address, so a config push does not reset it.
//!
//! - `endpoint`: [`Endpoint`] (a target, its precomputed authorities and
//!   its runtime state) and [`EndpointGuard`] (one request in flight)
//! - `group`: [`GroupBalancer`], round robin and least request
//! - here: [`Balancer`], every group, swapped whole on a push
//!
//! Requests read the current map through `arc_swap` without a lock; a push
//! builds a new map beside it and swaps it in. A request in flight keeps
//! the `Arc`s it picked, so a target removed by a push stays usable (and
//! counted) until its last guard drops.

mod endpoint;
mod group;

pub use endpoint::{Endpoint, EndpointGuard};
pub use group::GroupBalancer;

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use trellis_config::Snapshot;

/// Target group id -> its balancer.
type Groups = HashMap<String, Arc<GroupBalancer>>;

/// All target groups' balancers.
#[derive(Debug, Default)]
pub struct Balancer {
    groups: ArcSwap<Groups>,
}

impl Balancer {
    /// An empty balancer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take the target groups of a new snapshot, keeping the state of
    /// groups and targets that are still there.
    ///
    /// A group equal to the one already held is kept as is. A changed group
    /// gets a new [`GroupBalancer`] that takes over the endpoints of targets
    /// with the same address and port (their outstanding counts and,
    /// later, health) and the round-robin position. Groups and targets that
    /// left are dropped from the map; guards in flight keep theirs alive.
    ///
    /// Safe to call from several tasks: a concurrent update is redone
    /// against the map the other one stored (`ArcSwap::rcu`).
    pub fn update(&self, snapshot: &Snapshot) {
        self.groups.rcu(|old| {
            let mut next = Groups::with_capacity(snapshot.target_groups.len());
            for spec in &snapshot.target_groups {
                if next.contains_key(&spec.id) {
                    // The control plane never repeats an id; keep the first.
                    continue;
                }
                let previous = old.get(&spec.id);
                let group = match previous {
                    Some(g) if g.is_current(spec) => Arc::clone(g),
                    _ => Arc::new(GroupBalancer::new(spec, previous.map(|g| &**g))),
                };
                next.insert(spec.id.clone(), group);
            }
            next
        });
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
        let b = Balancer::new();
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
        let b = Balancer::new();
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
        let b = Balancer::new();
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
        assert_eq!(Arc::strong_count(&on_2.endpoint), 2, "guard + old balancer");
        drop(before);
        assert_eq!(Arc::strong_count(&on_2.endpoint), 1, "only the guard");
        drop(on_2);
    }

    #[test]
    fn moved_fronting_proxy_keeps_state() {
        let b = Balancer::new();
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
        let b = Balancer::new();
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
        let b = Balancer::new();
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
        let b = Balancer::new();
        b.update(&snapshot(vec![group(
            "tg",
            Algorithm::RoundRobin,
            &["10.0.0.1"],
        )]));
        b.update(&snapshot(vec![group("tg", Algorithm::RoundRobin, &[])]));
        assert!(b.group("tg").unwrap().pick().is_none());
    }
}
