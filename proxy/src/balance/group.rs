//! One target group's balancer: its endpoints, the choice among them, and
//! the group's runtime state (breaker counters, fail-open, ejection cap).

use super::breaker::{BreakerState, Limit, Overflow, RequestPermit, RetryPermit};
use super::clock;
use super::endpoint::{Endpoint, EndpointGuard, EndpointState};
use super::health::Health;
use super::outcome::Outcome;
use super::outlier::{Cause, ejection_cap};
use super::signal::Signals;
use super::view::View;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use trellis_config::{
    Algorithm, OutlierDetection, ProtocolVersion, SnapshotTargetGroup, TargetProtocol,
};

/// What a [`GroupBalancer`] is built with, from its [`super::Balancer`].
#[derive(Debug, Clone)]
pub(super) struct Context {
    pub signals: Arc<Signals>,
    /// Whether health checkers will run for groups with checks enabled
    /// (new targets then start INITIAL instead of unchecked).
    pub checking: bool,
}

/// Runtime state of a target group that outlives its balancers: keyed by
/// the group id, handed from each balancer to the next on a push.
#[derive(Debug, Default)]
pub(super) struct GroupRuntime {
    pub breaker: Arc<BreakerState>,
    failing_open: AtomicBool,
    /// Times the group started failing open.
    fail_open_count: AtomicU64,
    /// Targets picked while failing open.
    fail_open_picks: AtomicU64,
    /// Held while an ejection is decided (never waited for).
    ejecting: AtomicBool,
    /// Ejections refused by `maxEjectionPercent`.
    ejections_refused: AtomicU64,
    /// Ejections made (metrics).
    ejections: AtomicU64,
    /// Retries sent, and retries not sent for want of budget (metrics;
    /// counted by the forwarder).
    retries: AtomicU64,
    retry_budget_exhausted: AtomicU64,
}

/// Resets a flag when dropped.
struct Flag<'a>(&'a AtomicBool);

impl<'a> Flag<'a> {
    /// Raise `flag` unless it is raised already.
    fn try_raise(flag: &'a AtomicBool) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Flag(flag))
    }
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One target group's balancer.
///
/// Immutable apart from its counters: a push that changes the group builds
/// a new one (see [`super::Balancer::update`]) which inherits the
/// endpoints (health, ejection, outstanding counts), the round-robin
/// position and the group's runtime state (breaker counters, fail-open).
#[derive(Debug)]
pub struct GroupBalancer {
    /// The group as last pushed; a push with an equal one keeps this
    /// balancer as it is.
    spec: SnapshotTargetGroup,
    /// One per distinct `address:port`, in the snapshot's order.
    endpoints: Box<[Arc<Endpoint>]>,
    /// Round-robin position; wraps harmlessly.
    next: AtomicUsize,
    runtime: Arc<GroupRuntime>,
    signals: Arc<Signals>,
    /// The eligible set, rebuilt when a target's eligibility changes.
    view: ArcSwap<View>,
    /// Held while `view` is rebuilt (pickers meanwhile use the old one).
    refreshing: AtomicBool,
}

impl GroupBalancer {
    /// A balancer for `spec`, taking over the endpoints (and so the
    /// counters) of `previous` for targets with the same address and port,
    /// and the group's runtime state.
    pub(super) fn new(
        spec: &SnapshotTargetGroup,
        previous: Option<&GroupBalancer>,
        ctx: &Context,
    ) -> Self {
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
                None => {
                    // A new target that will be checked must pass a check
                    // before it takes traffic (Lattice).
                    let checked = ctx.checking && spec.health_check.enabled && !t.draining;
                    let health = if checked {
                        Health::Initial
                    } else {
                        Health::Unchecked
                    };
                    Arc::new(Endpoint::new(
                        t.clone(),
                        Arc::new(EndpointState::new(health)),
                    ))
                }
            });
        }
        let endpoints: Box<[Arc<Endpoint>]> = endpoints.into();
        let epoch = ctx.signals.epoch();
        let view = View::build(&endpoints, epoch, clock::now_ms());
        let g = Self {
            spec: spec.clone(),
            endpoints,
            next: AtomicUsize::new(previous.map_or(0, |p| p.next.load(Ordering::Relaxed))),
            runtime: previous.map_or_else(Default::default, |p| Arc::clone(&p.runtime)),
            signals: Arc::clone(&ctx.signals),
            view: ArcSwap::from_pointee(View::default()),
            refreshing: AtomicBool::new(false),
        };
        g.note_fail_open(&view);
        g.view.store(Arc::new(view));
        g
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

    /// The group as the snapshot describes it: health-check, outlier,
    /// circuit-breaker (`maxConnections`, `maxPendingRequests` are the
    /// connection pools' to enforce) and connection settings.
    pub fn spec(&self) -> &SnapshotTargetGroup {
        &self.spec
    }

    /// Every endpoint, in the snapshot's order; for health checkers and
    /// the admin API.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Pick a target (round robin or least request) among the eligible
    /// ones: never a draining target; not an unhealthy, not-yet-checked
    /// (INITIAL) or ejected one while another is eligible. When every
    /// non-draining target is unhealthy or ejected the group **fails
    /// open** to all of them (see [`GroupBalancer::failing_open`]).
    /// `None` when the group has no target but draining ones (the caller
    /// answers 503 `no_healthy_target`).
    ///
    /// Lock-free and allocation-free: an atomic load to check the eligible
    /// set is current (it is rebuilt only after a health or ejection
    /// change, and the clock is read only while a target is ejected), an
    /// atomic add for round robin or two random numbers and two atomic
    /// loads for least request, and one atomic add for the guard.
    pub fn pick(self: &Arc<Self>) -> Option<EndpointGuard> {
        let view = self.view();
        let eligible = &view.eligible;
        let index = match (eligible.len(), self.spec.algorithm) {
            (0, _) => return None,
            (1, _) => eligible.first(),
            (n, Algorithm::RoundRobin) => {
                eligible.get(self.next.fetch_add(1, Ordering::Relaxed) % n)
            }
            (n, Algorithm::LeastRequest) => self.least_request(eligible, n),
        }?;
        if view.failing_open {
            self.runtime.fail_open_picks.fetch_add(1, Ordering::Relaxed);
        }
        let endpoint = self.endpoints.get(*index)?;
        Some(EndpointGuard::new(Arc::clone(self), Arc::clone(endpoint)))
    }

    /// Power of two random choices: sample two distinct eligible
    /// endpoints, take the one with fewer requests in flight (either on a
    /// tie). Nearly as good as scanning for the least loaded, without
    /// herding every proxy onto the same target. Needs `n >= 2`.
    fn least_request<'a>(&self, eligible: &'a [usize], n: usize) -> Option<&'a usize> {
        let i = fastrand::usize(0..n);
        let mut j = fastrand::usize(0..n - 1);
        if j >= i {
            j += 1;
        }
        let (ia, ib) = (eligible.get(i)?, eligible.get(j)?);
        let (a, b) = (self.endpoints.get(*ia)?, self.endpoints.get(*ib)?);
        Some(match a.outstanding().cmp(&b.outstanding()) {
            std::cmp::Ordering::Less => ia,
            std::cmp::Ordering::Greater => ib,
            std::cmp::Ordering::Equal if fastrand::bool() => ia,
            std::cmp::Ordering::Equal => ib,
        })
    }

    /// The current eligible set, rebuilt first when it is stale.
    pub(super) fn view(&self) -> arc_swap::Guard<Arc<View>> {
        let epoch = self.signals.epoch();
        let view = self.view.load();
        if view.is_fresh(epoch, clock::now_ms) {
            return view;
        }
        drop(view);
        self.refresh();
        self.view.load()
    }

    /// Rebuild the eligible set, ending ejections whose time has passed.
    /// One caller at a time; the others keep using the old set.
    fn refresh(&self) {
        let Some(_flag) = Flag::try_raise(&self.refreshing) else {
            return;
        };
        let now = clock::now_ms();
        let mut returned = false;
        for e in self.endpoints.iter() {
            if e.state().outlier.clear_if_expired(now) {
                returned = true;
                tracing::info!(
                    target_group = %self.spec.id,
                    name = %self.spec.name,
                    target = e.target_authority(),
                    "target back from outlier ejection"
                );
            }
        }
        if returned {
            self.signals.changed();
        }
        // The epoch is read before the targets, so a change made meanwhile
        // leaves this set stale and it is rebuilt on the next pick.
        let view = View::build(&self.endpoints, self.signals.epoch(), now);
        self.note_fail_open(&view);
        self.view.store(Arc::new(view));
    }

    /// Log and count a change of the fail-open state (once per change,
    /// whichever balancer of the group notices it).
    fn note_fail_open(&self, view: &View) {
        let was = self
            .runtime
            .failing_open
            .swap(view.failing_open, Ordering::Relaxed);
        if was == view.failing_open {
            return;
        }
        let c = view.counts;
        if view.failing_open {
            self.runtime.fail_open_count.fetch_add(1, Ordering::Relaxed);
            if c.unhealthy + c.ejected == 0 {
                tracing::info!(
                    target_group = %self.spec.id,
                    name = %self.spec.name,
                    targets = c.serving,
                    "no target of the group has passed a health check yet; sending to all of them (fail open)"
                );
            } else {
                tracing::warn!(
                    target_group = %self.spec.id,
                    name = %self.spec.name,
                    targets = c.serving,
                    unhealthy = c.unhealthy,
                    ejected = c.ejected,
                    initial = c.initial,
                    "every target of the group is unhealthy or ejected; failing open: sending to all of them"
                );
            }
        } else {
            tracing::info!(
                target_group = %self.spec.id,
                name = %self.spec.name,
                eligible = view.eligible.len(),
                "the group has healthy targets again; no longer failing open"
            );
        }
    }

    /// Whether every non-draining target is unhealthy, unchecked or
    /// ejected, so that picks go to all of them (fail open).
    pub fn failing_open(&self) -> bool {
        self.view().failing_open
    }

    /// Times the group started failing open (since the group appeared).
    pub fn fail_open_count(&self) -> u64 {
        self.runtime.fail_open_count.load(Ordering::Relaxed)
    }

    /// Targets picked while the group was failing open.
    pub fn fail_open_picks(&self) -> u64 {
        self.runtime.fail_open_picks.load(Ordering::Relaxed)
    }

    /// Ejections refused because `maxEjectionPercent` of the group was
    /// already ejected.
    pub fn ejections_refused(&self) -> u64 {
        self.runtime.ejections_refused.load(Ordering::Relaxed)
    }

    /// Targets of the group ejected by outlier detection so far.
    pub fn ejections_total(&self) -> u64 {
        self.runtime.ejections.load(Ordering::Relaxed)
    }

    /// Count a retry sent to the group.
    pub fn note_retry(&self) {
        self.runtime.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Retries sent to the group so far.
    pub fn retries_total(&self) -> u64 {
        self.runtime.retries.load(Ordering::Relaxed)
    }

    /// Count a retry not sent because the group's retry budget was used up.
    pub fn note_retry_budget_exhausted(&self) {
        self.runtime
            .retry_budget_exhausted
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Retries not sent for want of budget so far.
    pub fn retry_budget_exhausted_total(&self) -> u64 {
        self.runtime.retry_budget_exhausted.load(Ordering::Relaxed)
    }

    /// A permit for one request to the group (`circuitBreaker.maxRequests`),
    /// held until the request is finished, retries included; or
    /// [`Overflow`] (answer 503 `overflow`) at once.
    pub fn try_request(&self) -> Result<RequestPermit, Overflow> {
        self.runtime
            .breaker
            .try_request(self.spec.circuit_breaker.max_requests)
    }

    /// A permit for one retry (`circuitBreaker.maxRetries`), held for the
    /// retried attempt; or [`Overflow`]: do not retry (answer with what
    /// the failed attempt got, or 503 `overflow`).
    pub fn try_retry(&self) -> Result<RetryPermit, Overflow> {
        self.runtime
            .breaker
            .try_retry(self.spec.circuit_breaker.max_retries)
    }

    /// Requests (or retries) in flight and refused so far.
    pub fn breaker_counts(&self, limit: Limit) -> (u32, u64) {
        let b = &self.runtime.breaker;
        (b.in_flight(limit), b.overflows(limit))
    }

    /// Count an attempt's outcome on `endpoint` (see [`Outcome`]) and eject
    /// the target when a threshold is reached and the cap allows.
    pub(super) fn record(&self, endpoint: &Endpoint, outcome: Outcome) {
        self.record_at(endpoint, outcome, clock::now_ms);
    }

    fn record_at(&self, endpoint: &Endpoint, outcome: Outcome, now: impl Fn() -> u64) {
        let Some(od) = &self.spec.outlier_detection else {
            return;
        };
        let outlier = &endpoint.state().outlier;
        // Requests in flight to an ejected target do not count again.
        if outlier.until() != 0 && outlier.is_ejected(now()) {
            return;
        }
        if let Some((cause, count)) = outlier.observe(outcome, od) {
            self.try_eject(endpoint, od, cause, count, now());
        }
    }

    /// Eject `endpoint` unless it already is or the group's cap is
    /// reached. A decision under way elsewhere in the group makes this one
    /// give up (the next failure tries again): nobody waits.
    fn try_eject(
        &self,
        endpoint: &Endpoint,
        od: &OutlierDetection,
        cause: Cause,
        count: u32,
        now: u64,
    ) {
        let ms = {
            let Some(_flag) = Flag::try_raise(&self.runtime.ejecting) else {
                return;
            };
            let outlier = &endpoint.state().outlier;
            if outlier.is_ejected(now) {
                return;
            }
            let cap = ejection_cap(self.endpoints.len(), od.max_ejection_percent);
            let ejected = self
                .endpoints
                .iter()
                .filter(|e| e.state().outlier.is_ejected(now))
                .count();
            if ejected >= cap {
                self.runtime
                    .ejections_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    target_group = %self.spec.id,
                    target = endpoint.target_authority(),
                    ejected,
                    cap,
                    "not ejecting: maxEjectionPercent of the group is ejected already"
                );
                return;
            }
            outlier.eject(now, od, cause, count)
        };
        self.runtime.ejections.fetch_add(1, Ordering::Relaxed);
        self.signals.changed();
        tracing::warn!(
            target_group = %self.spec.id,
            name = %self.spec.name,
            target = endpoint.target_authority(),
            reason = %endpoint.state().outlier.reason(),
            for_ms = ms,
            "target ejected by outlier detection"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod tests {
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

    pub(crate) fn ctx() -> Context {
        Context {
            signals: Default::default(),
            checking: false,
        }
    }

    /// A balancer (no health checkers) for a group "tg" of `addrs`.
    pub(crate) fn balancer(algorithm: Algorithm, addrs: &[&str]) -> Arc<GroupBalancer> {
        Arc::new(GroupBalancer::new(
            &group("tg", algorithm, addrs),
            None,
            &ctx(),
        ))
    }

    fn counts(g: &Arc<GroupBalancer>, picks: usize) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for _ in 0..picks {
            let guard = g.pick().unwrap();
            *out.entry(guard.target_authority().to_string()).or_default() += 1;
        }
        out
    }

    /// Set a target's health as its checker would.
    fn set_health(g: &GroupBalancer, i: usize, health: Health) {
        let cell = &g.endpoints()[i].state().health;
        cell.claim(1);
        if health == Health::Initial {
            g.signals.changed();
            return;
        }
        let t = super::super::health::Thresholds {
            healthy: 1,
            unhealthy: 1,
        };
        let result = if health == Health::Healthy {
            Ok(())
        } else {
            Err("HealthCheckFailed: status 500".to_string())
        };
        cell.record(1, result, t);
        assert_eq!(cell.health(), health);
        g.signals.changed();
    }

    #[test]
    fn empty_group_picks_nothing() {
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastRequest] {
            let g = balancer(algorithm, &[]);
            assert!(g.pick().is_none());
            assert!(!g.failing_open());
        }
    }

    #[test]
    fn round_robin_cycles_evenly() {
        let g = balancer(Algorithm::RoundRobin, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
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
        let g = balancer(
            Algorithm::LeastRequest,
            &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        );
        let busy = Arc::clone(&g.endpoints()[0]);
        let _held: Vec<_> = (0..5)
            .map(|_| EndpointGuard::new(Arc::clone(&g), Arc::clone(&busy)))
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
        let g = balancer(Algorithm::LeastRequest, &["10.0.0.1", "10.0.0.2"]);
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
        let g = balancer(Algorithm::LeastRequest, &["10.0.0.1"]);
        let c = counts(&g, 10);
        assert_eq!(c["10.0.0.1:8080"], 10);
    }

    #[test]
    fn duplicate_targets_count_once() {
        let g = balancer(Algorithm::RoundRobin, &["10.0.0.1", "10.0.0.1", "10.0.0.2"]);
        assert_eq!(g.endpoints().len(), 2);
    }

    #[test]
    fn accessors() {
        let g = GroupBalancer::new(&group("tg-1", Algorithm::LeastRequest, &[]), None, &ctx());
        assert_eq!(g.id(), "tg-1");
        assert_eq!(g.name(), "tg-1-name");
        assert_eq!(g.protocol_version(), ProtocolVersion::Http1);
        assert_eq!(g.protocol(), TargetProtocol::Http);
        assert_eq!(g.algorithm(), Algorithm::LeastRequest);
        assert_eq!(g.spec().circuit_breaker.max_requests, 1024);
    }

    #[test]
    fn unhealthy_and_initial_targets_are_skipped_evenly() {
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastRequest] {
            let g = balancer(algorithm, &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
            set_health(&g, 1, Health::Unhealthy);
            set_health(&g, 2, Health::Initial);
            set_health(&g, 3, Health::Healthy);
            let c = counts(&g, 400);
            assert_eq!(c.len(), 2, "{algorithm:?}: {c:?}");
            assert!(
                c["10.0.0.1:8080"] >= 150 && c["10.0.0.4:8080"] >= 150,
                "{algorithm:?}: {c:?}"
            );
            assert!(!g.failing_open());
            // Back to healthy: back in the rotation.
            set_health(&g, 1, Health::Healthy);
            assert_eq!(counts(&g, 300).len(), 3);
        }
    }

    #[test]
    fn draining_targets_are_never_picked() {
        let mut spec = group("tg", Algorithm::RoundRobin, &["10.0.0.1", "10.0.0.2"]);
        spec.targets[0].draining = true;
        let g = Arc::new(GroupBalancer::new(&spec, None, &ctx()));
        // Even when the other one is unhealthy: fail open never includes
        // draining targets.
        set_health(&g, 1, Health::Unhealthy);
        let c = counts(&g, 10);
        assert_eq!(c["10.0.0.2:8080"], 10, "{c:?}");
        assert!(g.failing_open());
        spec.targets[1].draining = true;
        let g = Arc::new(GroupBalancer::new(&spec, None, &ctx()));
        assert!(g.pick().is_none(), "only draining targets: nothing to pick");
        assert!(!g.failing_open());
    }

    #[test]
    fn fails_open_when_no_target_is_eligible_and_says_so_once() {
        let g = balancer(Algorithm::RoundRobin, &["10.0.0.1", "10.0.0.2"]);
        assert!(!g.failing_open());
        set_health(&g, 0, Health::Unhealthy);
        assert!(!g.failing_open());
        set_health(&g, 1, Health::Unhealthy);
        assert!(g.failing_open());
        let c = counts(&g, 10);
        assert_eq!(c.values().sum::<usize>(), 10);
        assert_eq!(c.len(), 2, "fail open spreads over all: {c:?}");
        assert_eq!(g.fail_open_picks(), 10);
        assert_eq!(g.fail_open_count(), 1);
        // More changes while failing open are not a new transition.
        set_health(&g, 0, Health::Unhealthy);
        assert!(g.failing_open());
        assert_eq!(g.fail_open_count(), 1);
        set_health(&g, 0, Health::Healthy);
        assert!(!g.failing_open());
        assert_eq!(counts(&g, 5)["10.0.0.1:8080"], 5);
        assert_eq!(g.fail_open_picks(), 10);
    }

    fn with_outliers(addrs: &[&str], percent: u32) -> Arc<GroupBalancer> {
        let mut spec = group("tg", Algorithm::RoundRobin, addrs);
        spec.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_errors: 0,
            consecutive_connect_failures: 0,
            base_ejection_ms: 1_000,
            max_ejection_ms: 10_000,
            max_ejection_percent: percent,
        });
        Arc::new(GroupBalancer::new(&spec, None, &ctx()))
    }

    fn fail(g: &GroupBalancer, i: usize, times: usize, now: u64) {
        for _ in 0..times {
            g.record_at(&g.endpoints()[i], Outcome::Status(500), || now);
        }
    }

    #[test]
    fn consecutive_failures_eject_within_the_cap() {
        let g = with_outliers(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], 50);
        let now = clock::now_ms();
        fail(&g, 0, 2, now);
        g.record_at(&g.endpoints()[0], Outcome::Status(204), || now);
        fail(&g, 0, 2, now);
        assert!(
            !g.endpoints()[0].state().outlier.is_ejected(now),
            "reset by the 204"
        );
        fail(&g, 0, 1, now);
        assert!(g.endpoints()[0].state().outlier.is_ejected(now));
        assert_eq!(
            g.endpoints()[0].state().outlier.reason(),
            "Ejected: 3 consecutive 5xx"
        );
        let c = counts(&g, 100);
        assert_eq!(c.get("10.0.0.1:8080"), None, "{c:?}");
        // 50 % of 3 is one target: the second is refused, and retried on
        // its next failure.
        fail(&g, 1, 3, now);
        assert!(!g.endpoints()[1].state().outlier.is_ejected(now));
        assert_eq!(g.ejections_refused(), 1);
        fail(&g, 1, 1, now);
        assert_eq!(g.ejections_refused(), 2);
        // Outcomes of requests still in flight to an ejected target are
        // ignored.
        fail(&g, 0, 10, now);
        assert_eq!(g.endpoints()[0].state().outlier.view().total, 1);
        // No outlier detection: nothing is counted.
        let plain = balancer(Algorithm::RoundRobin, &["10.0.0.1", "10.0.0.2"]);
        fail(&plain, 0, 100, now);
        assert_eq!(
            plain.endpoints()[0].state().outlier.view().consecutive_5xx,
            0
        );
    }

    #[test]
    fn the_only_target_is_never_ejected_and_all_ejected_fails_open() {
        let g = with_outliers(&["10.0.0.1"], 100);
        let now = clock::now_ms();
        fail(&g, 0, 5, now);
        assert!(!g.endpoints()[0].state().outlier.is_ejected(now));

        let g = with_outliers(&["10.0.0.1", "10.0.0.2"], 100);
        fail(&g, 0, 3, now);
        fail(&g, 1, 3, now);
        assert!(g.failing_open());
        assert_eq!(counts(&g, 10).len(), 2);
    }

    #[test]
    fn ejected_targets_return_when_their_time_passes() {
        let g = with_outliers(&["10.0.0.1", "10.0.0.2"], 50);
        // Eject "now" as seen 2 s ago: the base time (1 s) is over, and
        // the next pick notices without any timer.
        let past = clock::now_ms() - 2_000;
        fail(&g, 0, 3, past);
        assert!(g.endpoints()[0].state().outlier.until() != 0);
        let c = counts(&g, 10);
        assert_eq!(c["10.0.0.1:8080"], 5, "back in the rotation: {c:?}");
        assert_eq!(g.endpoints()[0].state().outlier.until(), 0, "cleared");

        // An ejection in the future holds.
        let now = clock::now_ms();
        fail(&g, 1, 3, now);
        let c = counts(&g, 10);
        assert_eq!(c.get("10.0.0.2:8080"), None, "{c:?}");
    }

    #[test]
    fn breaker_permits() {
        let mut spec = group("tg", Algorithm::RoundRobin, &["10.0.0.1"]);
        spec.circuit_breaker.max_requests = 2;
        spec.circuit_breaker.max_retries = 1;
        let g = Arc::new(GroupBalancer::new(&spec, None, &ctx()));
        let a = g.try_request().unwrap();
        let _b = g.try_request().unwrap();
        let over = g.try_request().unwrap_err();
        assert_eq!(over.limit, Limit::Requests);
        assert_eq!(g.breaker_counts(Limit::Requests), (2, 1));
        drop(a);
        assert_eq!(g.breaker_counts(Limit::Requests), (1, 1));
        let r = g.try_retry().unwrap();
        assert!(g.try_retry().is_err());
        drop(r);
        assert!(g.try_retry().is_ok());
        // A push that keeps the group id keeps the counters.
        spec.circuit_breaker.max_requests = 1;
        let next = GroupBalancer::new(&spec, Some(&g), &ctx());
        assert_eq!(next.breaker_counts(Limit::Requests), (1, 1));
        assert!(next.try_request().is_err(), "1 in flight, limit now 1");
    }
}
