//! One target of a target group and the runtime state that follows it
//! across snapshot pushes.

use super::group::GroupBalancer;
use super::health::{Health, HealthCell};
use super::outcome::Outcome;
use super::outlier::OutlierState;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use trellis_config::SnapshotTarget;

/// Runtime state of one target, shared by every [`Endpoint`] built for it
/// while it stays in its group. A target is the same target across pushes
/// when its group id, address and port are; `via` and `proxy` do not count,
/// so a target whose fronting proxy moved keeps its state.
///
/// Keeping it apart from [`Endpoint`] lets a push that changes how a
/// target is reached (`via`) replace the `Endpoint` yet keep the state.
#[derive(Debug, Default)]
pub(super) struct EndpointState {
    /// Requests picked for this target and not yet finished.
    outstanding: AtomicUsize,
    /// Active health (written by its checker).
    pub(super) health: HealthCell,
    /// Passive outlier detection (written by the data path).
    pub(super) outlier: OutlierState,
}

impl EndpointState {
    /// State of a target that joins its group in `health`.
    pub(super) fn new(health: Health) -> Self {
        Self {
            health: HealthCell::new(health),
            ..Default::default()
        }
    }
}

/// One target and its live counters.
#[derive(Debug)]
pub struct Endpoint {
    /// The target as the snapshot describes it.
    pub target: SnapshotTarget,
    /// `via`, or the target's own `address:port`; computed once.
    connect_authority: Box<str>,
    /// The target's own `address:port` (IPv6 bracketed); computed once.
    target_authority: Box<str>,
    state: Arc<EndpointState>,
}

impl Endpoint {
    /// An endpoint for `target` with the given (possibly inherited) state.
    pub(super) fn new(target: SnapshotTarget, state: Arc<EndpointState>) -> Self {
        let target_authority: Box<str> = target.authority().into();
        let connect_authority = match &target.via {
            Some(via) => via.as_str().into(),
            None => target_authority.clone(),
        };
        Self {
            target,
            connect_authority,
            target_authority,
            state,
        }
    }

    /// A copy that describes `target` but shares this one's state; used
    /// when a push changes a target's `via` or fronting proxy.
    pub(super) fn with_target(&self, target: SnapshotTarget) -> Self {
        Self::new(target, Arc::clone(&self.state))
    }

    /// Where to open the connection: the fronting proxy's inbound address
    /// (`via`) or the target itself. Prepared when the snapshot arrives,
    /// so it costs nothing per request.
    pub fn connect_authority(&self) -> &str {
        &self.connect_authority
    }

    /// The target's own `address:port` (IPv6 bracketed), also when traffic
    /// goes through a fronting proxy: that proxy needs to be told which of
    /// its targets the request is for.
    pub fn target_authority(&self) -> &str {
        &self.target_authority
    }

    /// Whether traffic to this target goes through another proxy (`via`).
    pub fn is_fronted(&self) -> bool {
        self.target.via.is_some()
    }

    /// Requests in flight to this target.
    pub fn outstanding(&self) -> usize {
        self.state.outstanding.load(Ordering::Relaxed)
    }

    /// Whether `self` and `other` share runtime state (the same target of
    /// the same group, possibly across pushes).
    pub fn same_state(&self, other: &Endpoint) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    pub(super) fn state(&self) -> &Arc<EndpointState> {
        &self.state
    }
}

/// A chosen endpoint; counts as outstanding until dropped.
///
/// Hold it for the whole exchange with the target (until the response
/// body is finished), so that least-request sees real load, and report
/// what became of each attempt with [`EndpointGuard::record`].
#[derive(Debug)]
pub struct EndpointGuard {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// The balancer that picked it: outlier settings and the ejection cap.
    group: Arc<GroupBalancer>,
    /// The counter this guard raised, kept apart from `endpoint` so the
    /// count stays right whatever is done with the public field.
    state: Arc<EndpointState>,
}

impl EndpointGuard {
    /// Count a request as outstanding on `endpoint` until the guard drops.
    pub(super) fn new(group: Arc<GroupBalancer>, endpoint: Arc<Endpoint>) -> Self {
        let state = Arc::clone(endpoint.state());
        state.outstanding.fetch_add(1, Ordering::Relaxed);
        Self {
            endpoint,
            group,
            state,
        }
    }

    /// Report the outcome of one attempt on this endpoint to passive
    /// outlier detection (a no-op when the group has none). Call once per
    /// attempt; see [`Outcome`] for what counts. Lock-free: a few atomic
    /// operations, plus, rarely, the ejection itself.
    pub fn record(&self, outcome: Outcome) {
        self.group.record(&self.endpoint, outcome);
    }

    /// The balancer of the group the endpoint was picked from (for
    /// [`GroupBalancer::try_retry`] and the group's settings).
    pub fn group(&self) -> &Arc<GroupBalancer> {
        &self.group
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.state.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for EndpointGuard {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::super::group::tests::balancer;
    use super::*;
    use trellis_config::Algorithm;

    fn target(address: &str, port: u16, via: Option<&str>) -> SnapshotTarget {
        SnapshotTarget {
            draining: false,
            address: address.into(),
            port,
            proxy: via.map(|_| "edge-1".into()),
            via: via.map(Into::into),
        }
    }

    #[test]
    fn authorities() {
        let direct = Endpoint::new(target("10.0.0.1", 8080, None), Default::default());
        assert_eq!(direct.connect_authority(), "10.0.0.1:8080");
        assert_eq!(direct.target_authority(), "10.0.0.1:8080");
        assert!(!direct.is_fronted());

        let v6 = Endpoint::new(target("fd00::1", 80, None), Default::default());
        assert_eq!(v6.connect_authority(), "[fd00::1]:80");

        let fronted = Endpoint::new(
            target("fd00::2", 9000, Some("192.0.2.7:15001")),
            Default::default(),
        );
        assert_eq!(fronted.connect_authority(), "192.0.2.7:15001");
        assert_eq!(fronted.target_authority(), "[fd00::2]:9000");
        assert!(fronted.is_fronted());
    }

    #[test]
    fn guard_counts_until_dropped() {
        let g = balancer(Algorithm::RoundRobin, &["10.0.0.1"]);
        let ep = Arc::clone(&g.endpoints()[0]);
        let a = EndpointGuard::new(Arc::clone(&g), Arc::clone(&ep));
        let b = g.pick().unwrap();
        assert_eq!(ep.outstanding(), 2);
        assert!(Arc::ptr_eq(b.group(), &g));
        drop(a);
        assert_eq!(ep.outstanding(), 1);
        drop(b);
        assert_eq!(ep.outstanding(), 0);
    }

    #[test]
    fn with_target_shares_state() {
        let g = balancer(Algorithm::RoundRobin, &["10.0.0.1"]);
        let ep = Arc::clone(&g.endpoints()[0]);
        let _g = g.pick().unwrap();
        let moved = ep.with_target(target("10.0.0.1", 8080, Some("192.0.2.1:15001")));
        assert_eq!(moved.outstanding(), 1);
        assert!(moved.same_state(&ep));
        assert_eq!(moved.connect_authority(), "192.0.2.1:15001");
    }
}
