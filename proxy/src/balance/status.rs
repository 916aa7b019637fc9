//! What the balancer shows: `GET /targets` on the admin listener
//! ([`TargetsStatus`]) and the health report sent to the control plane
//! ([`trellis_config::HealthReport`]), built from the same reading.
//!
//! A target's reported `state` and `reason`, first match wins:
//!
//! | condition | state | reason |
//! |---|---|---|
//! | draining | DRAINING | `DeregistrationInProgress` |
//! | ejected by outlier detection | UNHEALTHY | `Ejected: 5 consecutive 5xx` (or gateway errors, connect failures) |
//! | not checked, checks disabled | UNAVAILABLE | `HealthCheckDisabled` |
//! | not checked otherwise | UNAVAILABLE | `NotChecked` |
//! | INITIAL | INITIAL | the last failure, else `InitialHealthChecking` |
//! | HEALTHY | HEALTHY | none |
//! | UNHEALTHY | UNHEALTHY | the last failure (`HealthCheckFailed: status 500 (matcher 200)`, `HealthCheckTimeout: ...`) |

use super::breaker::Limit;
use super::clock;
use super::group::GroupBalancer;
use super::health::Health;
use super::probe::timing;
use serde::{Deserialize, Serialize};
use trellis_config::{Algorithm, OutlierDetection, ProtocolVersion, TargetHealth, TargetState};

/// `GET /targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetsStatus {
    /// Version of the snapshot in use (`None` before one is loaded).
    pub version: Option<u64>,
    /// Every target group of the snapshot, by id.
    pub target_groups: Vec<GroupStatus>,
}

/// One target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub id: String,
    pub name: String,
    pub algorithm: Algorithm,
    /// Every non-draining target is unhealthy, unchecked or ejected, so
    /// traffic goes to all of them.
    pub failing_open: bool,
    /// Times the group started failing open.
    pub fail_open_count: u64,
    /// Targets picked while failing open.
    pub fail_open_picks: u64,
    pub health_check: HealthCheckStatus,
    /// The settings, when outlier detection is on.
    pub outlier_detection: Option<OutlierDetection>,
    /// Ejections refused by `maxEjectionPercent`.
    pub ejections_refused: u64,
    pub circuit_breaker: BreakerStatus,
    pub targets: Vec<TargetStatus>,
}

/// A group's health-check settings as the checkers apply them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    pub enabled: bool,
    pub path: String,
    /// The check port, when not the target's.
    pub port: Option<u16>,
    pub protocol_version: ProtocolVersion,
    /// Effective interval (`fast.intervalMs`, else `intervalSeconds`).
    pub interval_ms: u64,
    /// Effective timeout.
    pub timeout_ms: u64,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub matcher: String,
}

/// A group's circuit breakers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    pub requests: LimitStatus,
    pub retries: LimitStatus,
    /// Enforced by the connection pools.
    pub max_connections: u32,
    /// Enforced by the connection pools.
    pub max_pending_requests: u32,
}

/// One breaker limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitStatus {
    pub in_flight: u32,
    pub max: u32,
    /// Attempts turned away (503 `overflow`) so far.
    pub overflows: u64,
}

/// One target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub address: String,
    pub port: u16,
    pub proxy: Option<String>,
    pub via: Option<String>,
    /// As in the health report (see the module table).
    pub state: TargetState,
    pub reason: Option<String>,
    pub draining: bool,
    /// Whether picks may choose it now (fail-open included).
    pub eligible: bool,
    /// Requests in flight to it.
    pub outstanding: usize,
    pub health_check: CheckStatus,
    pub ejection: EjectionStatus,
}

/// A target's active health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// INITIAL, HEALTHY, UNHEALTHY, or UNAVAILABLE when not checked.
    pub state: TargetState,
    pub consecutive_passes: u32,
    pub consecutive_failures: u32,
    /// Checks done by this proxy.
    pub checks: u64,
    /// Why the last check failed (cleared by a pass).
    pub last_failure: Option<String>,
}

/// A target's outlier detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EjectionStatus {
    pub ejected: bool,
    /// When the ejection ends (RFC 3339, UTC).
    pub until: Option<String>,
    pub remaining_ms: Option<u64>,
    /// The multiplier of the last ejection (see `balance::outlier`).
    pub ejections: u32,
    /// Ejections since the target joined.
    pub total: u64,
    #[serde(rename = "consecutive5xx")]
    pub consecutive_5xx: u32,
    pub consecutive_gateway_errors: u32,
    pub consecutive_connect_failures: u32,
}

fn limit(g: &GroupBalancer, which: Limit, max: u32) -> LimitStatus {
    let (in_flight, overflows) = g.breaker_counts(which);
    LimitStatus {
        in_flight,
        max,
        overflows,
    }
}

/// The status of one group, read now.
pub(super) fn group_status(g: &GroupBalancer) -> GroupStatus {
    let spec = g.spec();
    let hc = &spec.health_check;
    let (interval, timeout) = timing(hc);
    let view = g.view();
    let now = clock::now_ms();
    let targets = g
        .endpoints()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let state = e.state();
            let detail = state.health.detail();
            let outlier = state.outlier.view();
            let ejected = state.outlier.is_ejected(now);
            let health = detail.machine.health;
            let (reported, reason) = if e.target.draining {
                (
                    TargetState::Draining,
                    Some("DeregistrationInProgress".to_string()),
                )
            } else if ejected {
                (TargetState::Unhealthy, Some(state.outlier.reason()))
            } else {
                match health {
                    Health::Unchecked if !hc.enabled => (
                        TargetState::Unavailable,
                        Some("HealthCheckDisabled".to_string()),
                    ),
                    Health::Unchecked => (TargetState::Unavailable, Some("NotChecked".to_string())),
                    Health::Initial => (
                        TargetState::Initial,
                        Some(
                            detail
                                .reason
                                .clone()
                                .unwrap_or_else(|| "InitialHealthChecking".to_string()),
                        ),
                    ),
                    Health::Healthy => (TargetState::Healthy, None),
                    Health::Unhealthy => (
                        TargetState::Unhealthy,
                        Some(
                            detail
                                .reason
                                .clone()
                                .unwrap_or_else(|| "HealthCheckFailed".to_string()),
                        ),
                    ),
                }
            };
            TargetStatus {
                address: e.target.address.clone(),
                port: e.target.port,
                proxy: e.target.proxy.clone(),
                via: e.target.via.clone(),
                state: reported,
                reason,
                draining: e.target.draining,
                eligible: view.eligible.contains(&i),
                outstanding: e.outstanding(),
                health_check: CheckStatus {
                    state: match health {
                        Health::Unchecked => TargetState::Unavailable,
                        Health::Initial => TargetState::Initial,
                        Health::Healthy => TargetState::Healthy,
                        Health::Unhealthy => TargetState::Unhealthy,
                    },
                    consecutive_passes: detail.machine.passes,
                    consecutive_failures: detail.machine.failures,
                    checks: detail.checks,
                    last_failure: detail.reason,
                },
                ejection: EjectionStatus {
                    ejected,
                    until: ejected.then(|| {
                        humantime::format_rfc3339_millis(clock::wall_time(outlier.until, now))
                            .to_string()
                    }),
                    remaining_ms: ejected.then(|| outlier.until.saturating_sub(now)),
                    ejections: outlier.ejections,
                    total: outlier.total,
                    consecutive_5xx: outlier.consecutive_5xx,
                    consecutive_gateway_errors: outlier.consecutive_gateway,
                    consecutive_connect_failures: outlier.consecutive_connect,
                },
            }
        })
        .collect();
    GroupStatus {
        id: spec.id.clone(),
        name: spec.name.clone(),
        algorithm: spec.algorithm,
        failing_open: view.failing_open,
        fail_open_count: g.fail_open_count(),
        fail_open_picks: g.fail_open_picks(),
        health_check: HealthCheckStatus {
            enabled: hc.enabled,
            path: hc.path.clone(),
            port: hc.port,
            protocol_version: hc.protocol_version.unwrap_or_default(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            healthy_threshold: hc.healthy_threshold,
            unhealthy_threshold: hc.unhealthy_threshold,
            matcher: hc.matcher.clone(),
        },
        outlier_detection: spec.outlier_detection.clone(),
        ejections_refused: g.ejections_refused(),
        circuit_breaker: BreakerStatus {
            requests: limit(g, Limit::Requests, spec.circuit_breaker.max_requests),
            retries: limit(g, Limit::Retries, spec.circuit_breaker.max_retries),
            max_connections: spec.circuit_breaker.max_connections,
            max_pending_requests: spec.circuit_breaker.max_pending_requests,
        },
        targets,
    }
}

/// The health report entries of one group.
pub(super) fn report_entries(g: &GroupStatus) -> impl Iterator<Item = TargetHealth> + '_ {
    g.targets.iter().map(|t| TargetHealth {
        target_group: g.id.clone(),
        address: t.address.clone(),
        port: t.port,
        state: t.state,
        reason: t.reason.clone(),
    })
}
