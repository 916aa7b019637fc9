//! Target health as proxies see it and report it, and as the REST API
//! shows it (aggregated over the proxies that check a target).

use serde::{Deserialize, Serialize};

/// The state of a target, with VPC Lattice's names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetState {
    /// Registered, not checked yet (a new target must pass one check).
    Initial,
    /// Passing health checks.
    Healthy,
    /// Failing health checks (or ejected by outlier detection).
    Unhealthy,
    /// Health checks are off, or no proxy checks it.
    Unavailable,
    /// Deregistered; finishing the requests it has.
    Draining,
}

/// One target's health as one proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealth {
    /// Target group id.
    pub target_group: String,
    /// Target address.
    pub address: String,
    /// Effective port.
    pub port: u16,
    /// State.
    pub state: TargetState,
    /// Why, in words (e.g. `HealthCheckFailed: status 500`, `Ejected: 5 consecutive 5xx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a proxy sends to `POST /v1/proxies/{name}/health`: the full
/// current view (not a delta), so a lost report is repaired by the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Every target the proxy checks.
    pub targets: Vec<TargetHealth>,
}
