//! One target group's balancer: its endpoints and the choice among them.

use super::endpoint::{Endpoint, EndpointGuard, EndpointState};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use trellis_config::{Algorithm, ProtocolVersion, SnapshotTargetGroup, TargetProtocol};

/// One target group's balancer.
///
/// Immutable apart from its counters: a push that changes the group builds
/// a new one (see [`super::Balancer::update`]) which inherits the
/// endpoints, counters and round-robin position of targets that stayed.
#[derive(Debug)]
pub struct GroupBalancer {
    /// The group as last pushed; a push with an equal one keeps this
    /// balancer as it is.
    spec: SnapshotTargetGroup,
    /// One per distinct `address:port`, in the snapshot's order.
    endpoints: Box<[Arc<Endpoint>]>,
    /// Round-robin position; wraps harmlessly.
    next: AtomicUsize,
}

impl GroupBalancer {
    /// A balancer for `spec`, taking over the endpoints (and so the
    /// counters) of `previous` for targets with the same address and port.
    pub(super) fn new(spec: &SnapshotTargetGroup, previous: Option<&GroupBalancer>) -> Self {
        let old: HashMap<(&str, u16), &Arc<Endpoint>> = previous
            .map(|p| {
                p.endpoints
                    .iter()
                    .map(|e| ((e.target.address.as_str(), e.target.port), e))
                    .collect()
            })
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        let mut endpoints = Vec::with_capacity(spec.targets.len());
        for t in &spec.targets {
            let key = (t.address.as_str(), t.port);
            // Validation rejects duplicate targets; should one get through,
            // it is one target, not twice the traffic.
            if !seen.insert(key) {
                continue;
            }
            endpoints.push(match old.get(&key) {
                Some(e) if e.target == *t => Arc::clone(e),
                Some(e) => Arc::new(e.with_target(t.clone())),
                None => Arc::new(Endpoint::new(t.clone(), Arc::new(EndpointState::default()))),
            });
        }
        Self {
            spec: spec.clone(),
            endpoints: endpoints.into(),
            next: AtomicUsize::new(previous.map_or(0, |p| p.next.load(Ordering::Relaxed))),
        }
    }

    /// Whether a push of `spec` changes nothing for this balancer.
    pub(super) fn is_current(&self, spec: &SnapshotTargetGroup) -> bool {
        self.spec == *spec
    }

    /// Target group id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Target group name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// HTTP version to use upstream.
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.spec.protocol_version
    }

    /// Protocol to targets (HTTPS arrives with the identity work).
    pub fn protocol(&self) -> TargetProtocol {
        self.spec.protocol
    }

    /// How [`GroupBalancer::pick`] chooses.
    pub fn algorithm(&self) -> Algorithm {
        self.spec.algorithm
    }

    /// The group as the snapshot describes it (health-check settings,
    /// account), for health checking and the admin API.
    pub fn spec(&self) -> &SnapshotTargetGroup {
        &self.spec
    }

    /// Every endpoint, in the snapshot's order; for health checkers and
    /// the admin API.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Pick a target (round robin or least request). `None` when the group
    /// has no targets (the caller answers 503 `no_healthy_target`).
    ///
    /// Lock-free and allocation-free: an atomic add for round robin, two
    /// random numbers and two atomic loads for least request, and one
    /// atomic add for the guard.
    pub fn pick(&self) -> Option<EndpointGuard> {
        let chosen = match (self.endpoints.len(), self.spec.algorithm) {
            (0, _) => None,
            (1, _) => self.endpoints.first(),
            (n, Algorithm::RoundRobin) => self.round_robin(n),
            (n, Algorithm::LeastRequest) => self.least_request(n),
        }?;
        Some(EndpointGuard::new(Arc::clone(chosen)))
    }

    fn round_robin(&self, n: usize) -> Option<&Arc<Endpoint>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.endpoints.get(i)
    }

    /// Power of two random choices: sample two distinct endpoints, take the
    /// one with fewer requests in flight (either on a tie). Nearly as good
    /// as scanning for the least loaded, without herding every proxy onto
    /// the same target. Needs `n >= 2`.
    fn least_request(&self, n: usize) -> Option<&Arc<Endpoint>> {
        let i = fastrand::usize(0..n);
        let mut j = fastrand::usize(0..n - 1);
        if j >= i {
            j += 1;
        }
        let (a, b) = (self.endpoints.get(i)?, self.endpoints.get(j)?);
        Some(match a.outstanding().cmp(&b.outstanding()) {
            std::cmp::Ordering::Less => a,
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Equal if fastrand::bool() => a,
            std::cmp::Ordering::Equal => b,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(super) mod tests {
    use super::*;
    use trellis_config::SnapshotTarget;

    /// A group of `addrs`, each on port 8080.
    pub(crate) fn group(id: &str, algorithm: Algorithm, addrs: &[&str]) -> SnapshotTargetGroup {
        SnapshotTargetGroup {
            circuit_breaker: Default::default(),
            connection: Default::default(),
            outlier_detection: None,
            id: id.into(),
            name: format!("{id}-name"),
            account: "000000000000".into(),
            protocol: TargetProtocol::Http,
            protocol_version: ProtocolVersion::Http1,
            port: 8080,
            algorithm,
            health_check: Default::default(),
            targets: addrs
                .iter()
                .map(|a| SnapshotTarget {
                    draining: false,
                    address: (*a).into(),
                    port: 8080,
                    proxy: None,
                    via: None,
                })
                .collect(),
        }
    }

    fn counts(g: &GroupBalancer, picks: usize) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for _ in 0..picks {
            let guard = g.pick().unwrap();
            *out.entry(guard.target_authority().to_string()).or_default() += 1;
        }
        out
    }

    #[test]
    fn empty_group_picks_nothing() {
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastRequest] {
            let g = GroupBalancer::new(&group("tg", algorithm, &[]), None);
            assert!(g.pick().is_none());
        }
    }

    #[test]
    fn round_robin_cycles_evenly() {
        let g = GroupBalancer::new(
            &group(
                "tg",
                Algorithm::RoundRobin,
                &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            ),
            None,
        );
        let order: Vec<String> = (0..6)
            .map(|_| g.pick().unwrap().target_authority().to_string())
            .collect();
        assert_eq!(order[..3], order[3..], "one full cycle repeats");
        let mut first = order[..3].to_vec();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 3, "each target once per cycle: {order:?}");
        let c = counts(&g, 300);
        assert!(c.values().all(|&n| n == 100), "{c:?}");
    }

    #[test]
    fn least_request_avoids_the_loaded_endpoint() {
        let g = GroupBalancer::new(
            &group(
                "tg",
                Algorithm::LeastRequest,
                &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            ),
            None,
        );
        let busy = Arc::clone(&g.endpoints()[0]);
        let _held: Vec<_> = (0..5)
            .map(|_| EndpointGuard::new(Arc::clone(&busy)))
            .collect();
        let c = counts(&g, 1_000);
        assert_eq!(c.get("10.0.0.1:8080"), None, "{c:?}");
        // The two idle ones share the load (each sampled pair with both
        // idle is a coin toss).
        assert!(
            c["10.0.0.2:8080"] > 300 && c["10.0.0.3:8080"] > 300,
            "{c:?}"
        );
        assert_eq!(busy.outstanding(), 5, "picks released their guards");
    }

    #[test]
    fn least_request_spreads_held_load() {
        let g = GroupBalancer::new(
            &group("tg", Algorithm::LeastRequest, &["10.0.0.1", "10.0.0.2"]),
            None,
        );
        // Holding every guard: with two endpoints both are always sampled,
        // so the counts can never differ by more than one.
        let held: Vec<_> = (0..101).map(|_| g.pick().unwrap()).collect();
        let (a, b) = (
            g.endpoints()[0].outstanding(),
            g.endpoints()[1].outstanding(),
        );
        assert_eq!(a + b, 101);
        assert!(a.abs_diff(b) <= 1, "{a} vs {b}");
        drop(held);
        assert_eq!(g.endpoints()[0].outstanding(), 0);
    }

    #[test]
    fn single_target_is_always_picked() {
        let g = GroupBalancer::new(&group("tg", Algorithm::LeastRequest, &["10.0.0.1"]), None);
        let c = counts(&g, 10);
        assert_eq!(c["10.0.0.1:8080"], 10);
    }

    #[test]
    fn duplicate_targets_count_once() {
        let g = GroupBalancer::new(
            &group(
                "tg",
                Algorithm::RoundRobin,
                &["10.0.0.1", "10.0.0.1", "10.0.0.2"],
            ),
            None,
        );
        assert_eq!(g.endpoints().len(), 2);
    }

    #[test]
    fn accessors() {
        let g = GroupBalancer::new(&group("tg-1", Algorithm::LeastRequest, &[]), None);
        assert_eq!(g.id(), "tg-1");
        assert_eq!(g.name(), "tg-1-name");
        assert_eq!(g.protocol_version(), ProtocolVersion::Http1);
        assert_eq!(g.protocol(), TargetProtocol::Http);
        assert_eq!(g.algorithm(), Algorithm::LeastRequest);
    }
}
