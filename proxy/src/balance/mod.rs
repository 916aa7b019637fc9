//! Target choice per target group, with runtime state (outstanding
//! requests, round-robin position) that lives beside the snapshot, keyed by
//! target group id and target address, so a config push does not reset it.
//!
//! INTERFACE STUB — implemented by the route/balance work.

use std::sync::Arc;
use trellis_config::{ProtocolVersion, Snapshot, SnapshotTarget};

/// One target and its live counters.
#[derive(Debug)]
pub struct Endpoint {
    /// The target as the snapshot describes it.
    pub target: SnapshotTarget,
}

impl Endpoint {
    /// Where to open the connection: the fronting proxy's inbound address
    /// (`via`) or the target itself.
    pub fn connect_authority(&self) -> String {
        todo!()
    }

    /// Requests in flight to this target.
    pub fn outstanding(&self) -> usize {
        todo!()
    }
}

/// A chosen endpoint; counts as outstanding until dropped.
#[derive(Debug)]
pub struct EndpointGuard {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
}

/// One target group's balancer.
#[derive(Debug)]
pub struct GroupBalancer {
    _private: (),
}

impl GroupBalancer {
    /// Target group id.
    pub fn id(&self) -> &str {
        todo!()
    }

    /// Target group name.
    pub fn name(&self) -> &str {
        todo!()
    }

    /// HTTP version to use upstream.
    pub fn protocol_version(&self) -> ProtocolVersion {
        todo!()
    }

    /// Pick a target (round robin or least request). `None` when the group
    /// has no targets (the caller answers 503 `no_healthy_target`).
    pub fn pick(&self) -> Option<EndpointGuard> {
        todo!()
    }
}

/// All target groups' balancers.
#[derive(Debug, Default)]
pub struct Balancer {
    _private: (),
}

impl Balancer {
    /// An empty balancer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take the target groups of a new snapshot, keeping the state of
    /// groups and targets that are still there.
    pub fn update(&self, snapshot: &Snapshot) {
        let _ = snapshot;
        todo!()
    }

    /// The balancer of a target group, by id.
    pub fn group(&self, target_group_id: &str) -> Option<Arc<GroupBalancer>> {
        let _ = target_group_id;
        todo!()
    }
}
