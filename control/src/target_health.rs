//! The targets of a target group as `GET /v1/target-groups/{key}/targets`
//! shows them: registered and draining targets, each with one state
//! aggregated over the proxies that report it, and each proxy's own view.
//!
//! Proxies check targets themselves and report what they see
//! (`POST /v1/proxies/{name}/health`, a [`HealthReport`]); the control
//! plane keeps the latest report per proxy in memory only: reports are
//! cheap to resend, and a control plane that restarts learns them again
//! from the next round.
//!
//! ## Aggregation
//!
//! For each target, in this order:
//!
//! 1. **DRAINING** if it was deregistered and its deregistration delay has
//!    not passed;
//! 2. **UNAVAILABLE** if the group's health checks are disabled, or no
//!    proxy reports checking it (reports of UNAVAILABLE or DRAINING say a
//!    proxy does not check it, e.g. it runs an older snapshot, so they do
//!    not count);
//! 3. **UNHEALTHY** if any reporting proxy says UNHEALTHY; the reason is
//!    that proxy's, prefixed with its name (the first by name, when several
//!    do);
//! 4. **HEALTHY** if every reporting proxy says HEALTHY;
//! 5. **INITIAL** otherwise (some proxy has not finished its first checks).
//!
//! One proxy's failure is enough for UNHEALTHY because proxies check from
//! different places: a target that one of them cannot reach is a problem
//! worth showing, even if the others still send it traffic.

use crate::drain::{self, DrainingTarget};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use trellis_config::{HealthReport, Resource, TargetGroupSpec, TargetState};

/// One proxy's view of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTargetReport {
    /// The reporting proxy.
    pub proxy: String,
    /// What it says.
    pub state: TargetState,
    /// Why, in its words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One target of a group, with its aggregated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// Target address.
    pub address: String,
    /// Effective port.
    pub port: u16,
    /// The proxy that fronts it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Aggregated state (see the module documentation for the rule).
    pub state: TargetState,
    /// Why, e.g. `proxy-a: HealthCheckFailed: status 500`; absent when healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a draining target: RFC 3339 time its drain ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_until: Option<String>,
    /// What each reporting proxy says, by proxy name.
    pub reports: Vec<ProxyTargetReport>,
}

/// The reply of `GET /v1/target-groups/{key}/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetList {
    /// The target group's id.
    pub target_group: String,
    /// Its name.
    pub name: String,
    /// Whether its health checks are enabled.
    pub health_checks: bool,
    /// Registered targets in spec order, then draining ones.
    pub items: Vec<TargetStatus>,
}

/// Reason of a target with health checks off.
pub const REASON_DISABLED: &str =
    "HealthCheckDisabled: health checks are off for this target group";
/// Reason of a target no proxy reports.
pub const REASON_NOT_REPORTED: &str =
    "NotReported: no connected proxy reports checking this target (none routes to this group yet?)";

/// Every target of `tg` with its state at `now_ms`, from `reports` (proxy
/// name and its latest report; the caller passes only live reports).
pub fn aggregate(
    tg: &Resource<TargetGroupSpec>,
    reports: &[(String, Arc<HealthReport>)],
    now_ms: u64,
) -> TargetList {
    // (address, port) -> reports by proxy name, for this group only.
    let mut seen: BTreeMap<(&str, u16), Vec<ProxyTargetReport>> = BTreeMap::new();
    let mut by_name: Vec<&(String, Arc<HealthReport>)> = reports.iter().collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    for (proxy, report) in by_name {
        for t in report
            .targets
            .iter()
            .filter(|t| t.target_group == tg.meta.id)
        {
            seen.entry((t.address.as_str(), t.port))
                .or_default()
                .push(ProxyTargetReport {
                    proxy: proxy.clone(),
                    state: t.state,
                    reason: t.reason.clone(),
                });
        }
    }
    let enabled = tg.spec.health_check.enabled;
    let mut items: Vec<TargetStatus> = tg
        .spec
        .targets
        .iter()
        .map(|t| {
            let port = t.effective_port(tg.spec.port);
            let reports = seen
                .get(&(t.address.as_str(), port))
                .cloned()
                .unwrap_or_default();
            let (state, reason) = if enabled {
                registered_state(&reports)
            } else {
                (TargetState::Unavailable, Some(REASON_DISABLED.to_string()))
            };
            TargetStatus {
                address: t.address.clone(),
                port,
                proxy: t.proxy.clone(),
                state,
                reason,
                draining_until: None,
                reports,
            }
        })
        .collect();
    items.extend(drain::active(tg, now_ms).into_iter().map(|d| {
        let reports = seen
            .get(&(d.address.as_str(), d.port))
            .cloned()
            .unwrap_or_default();
        draining_status(d, reports)
    }));
    TargetList {
        target_group: tg.meta.id.clone(),
        name: tg.spec.name.clone(),
        health_checks: enabled,
        items,
    }
}

fn draining_status(d: DrainingTarget, reports: Vec<ProxyTargetReport>) -> TargetStatus {
    let until = drain::rfc3339(d.until);
    TargetStatus {
        reason: Some(format!(
            "DeregistrationInProgress: finishing its requests until {until}"
        )),
        address: d.address,
        port: d.port,
        proxy: d.proxy,
        state: TargetState::Draining,
        draining_until: Some(until),
        reports,
    }
}

/// State and reason of a registered target with health checks on, from
/// the reports of it sorted by proxy name.
pub fn registered_state(reports: &[ProxyTargetReport]) -> (TargetState, Option<String>) {
    let checking: Vec<&ProxyTargetReport> = reports
        .iter()
        .filter(|r| {
            matches!(
                r.state,
                TargetState::Healthy | TargetState::Unhealthy | TargetState::Initial
            )
        })
        .collect();
    if checking.is_empty() {
        return (
            TargetState::Unavailable,
            Some(REASON_NOT_REPORTED.to_string()),
        );
    }
    let unhealthy: Vec<&&ProxyTargetReport> = checking
        .iter()
        .filter(|r| r.state == TargetState::Unhealthy)
        .collect();
    if let Some(first) = unhealthy.first() {
        let why = first.reason.as_deref().unwrap_or("failing health checks");
        let more = match unhealthy.len() - 1 {
            0 => String::new(),
            1 => " (and 1 other proxy)".to_string(),
            n => format!(" (and {n} other proxies)"),
        };
        return (
            TargetState::Unhealthy,
            Some(format!("{}: {why}{more}", first.proxy)),
        );
    }
    if checking.iter().all(|r| r.state == TargetState::Healthy) {
        return (TargetState::Healthy, None);
    }
    let initial = checking
        .iter()
        .find(|r| r.state == TargetState::Initial)
        .map(|r| {
            format!(
                "{}: {}",
                r.proxy,
                r.reason
                    .as_deref()
                    .unwrap_or("InitialHealthChecking: no passing check yet")
            )
        });
    (TargetState::Initial, initial)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;
    use trellis_config::TargetHealth;

    fn tg(spec: serde_json::Value, status: Option<serde_json::Value>) -> Resource<TargetGroupSpec> {
        serde_json::from_value(json!({
            "meta": {"id": "tg-1", "account": "a", "version": 1, "createdAt": "", "updatedAt": ""},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    fn r(proxy: &str, state: TargetState, reason: Option<&str>) -> ProxyTargetReport {
        ProxyTargetReport {
            proxy: proxy.into(),
            state,
            reason: reason.map(str::to_string),
        }
    }

    fn report(targets: &[(&str, &str, u16, TargetState, Option<&str>)]) -> Arc<HealthReport> {
        Arc::new(HealthReport {
            targets: targets
                .iter()
                .map(|(g, a, p, s, why)| TargetHealth {
                    target_group: g.to_string(),
                    address: a.to_string(),
                    port: *p,
                    state: *s,
                    reason: why.map(str::to_string),
                })
                .collect(),
        })
    }

    use TargetState::*;

    #[test]
    fn the_rule_for_registered_targets() {
        assert_eq!(registered_state(&[]).0, Unavailable);
        assert_eq!(
            registered_state(&[r("a", Healthy, None), r("b", Healthy, None)]),
            (Healthy, None)
        );
        assert_eq!(
            registered_state(&[
                r("a", Healthy, None),
                r("b", Unhealthy, Some("HealthCheckFailed: status 500")),
                r("c", Initial, None)
            ]),
            (
                Unhealthy,
                Some("b: HealthCheckFailed: status 500".to_string())
            )
        );
        assert_eq!(
            registered_state(&[
                r("a", Unhealthy, None),
                r("b", Unhealthy, Some("x")),
                r("c", Unhealthy, Some("y"))
            ])
            .1
            .unwrap(),
            "a: failing health checks (and 2 other proxies)"
        );
        assert_eq!(
            registered_state(&[r("a", Healthy, None), r("b", Initial, None)]),
            (
                Initial,
                Some("b: InitialHealthChecking: no passing check yet".to_string())
            )
        );
        // A proxy that does not check it (stale snapshot) does not count.
        assert_eq!(
            registered_state(&[r("a", Healthy, None), r("b", Draining, None)]),
            (Healthy, None)
        );
        assert_eq!(
            registered_state(&[r("a", Unavailable, None)]).0,
            Unavailable
        );
    }

    #[test]
    fn targets_are_aggregated_over_proxies_of_this_group_only() {
        let g = tg(
            json!({"name": "g", "port": 80, "targets": [
                {"address": "10.0.0.1"}, {"address": "10.0.0.2", "port": 81, "proxy": "front"}, {"address": "10.0.0.3"}]}),
            Some(json!({"draining": [
                {"address": "10.0.0.9", "port": 80, "until": 5_000},
                {"address": "10.0.0.8", "port": 80, "until": 500}
            ]})),
        );
        let reports = vec![
            (
                "p2".to_string(),
                report(&[
                    ("tg-1", "10.0.0.1", 80, Healthy, None),
                    (
                        "tg-1",
                        "10.0.0.2",
                        81,
                        Unhealthy,
                        Some("HealthCheckFailed: timeout"),
                    ),
                    ("tg-1", "10.0.0.9", 80, Healthy, None),
                ]),
            ),
            (
                "p1".to_string(),
                report(&[
                    ("tg-1", "10.0.0.1", 80, Healthy, None),
                    ("tg-1", "10.0.0.2", 81, Healthy, None),
                    // Another group's target of the same address: ignored.
                    ("tg-2", "10.0.0.3", 80, Healthy, None),
                    // Same address, other port: not this target.
                    ("tg-1", "10.0.0.3", 8080, Healthy, None),
                ]),
            ),
        ];
        let list = aggregate(&g, &reports, 1_000);
        assert_eq!(
            (list.target_group.as_str(), list.name.as_str()),
            ("tg-1", "g")
        );
        let rows: Vec<(&str, u16, TargetState, Option<&str>)> = list
            .items
            .iter()
            .map(|t| (t.address.as_str(), t.port, t.state, t.reason.as_deref()))
            .collect();
        assert_eq!(
            rows[..3],
            [
                ("10.0.0.1", 80, Healthy, None),
                (
                    "10.0.0.2",
                    81,
                    Unhealthy,
                    Some("p2: HealthCheckFailed: timeout")
                ),
                ("10.0.0.3", 80, Unavailable, Some(REASON_NOT_REPORTED)),
            ]
        );
        assert_eq!(rows.len(), 4, "the expired drain is gone: {rows:?}");
        let d = &list.items[3];
        assert_eq!((d.address.as_str(), d.state), ("10.0.0.9", Draining));
        assert_eq!(
            d.draining_until.as_deref(),
            Some("1970-01-01T00:00:05.000Z")
        );
        assert!(
            d.reason
                .as_deref()
                .unwrap()
                .starts_with("DeregistrationInProgress")
        );
        // Per-proxy detail, by proxy name.
        assert_eq!(
            list.items[1].reports,
            vec![
                r("p1", Healthy, None),
                r("p2", Unhealthy, Some("HealthCheckFailed: timeout"))
            ]
        );
        assert_eq!(list.items[3].reports, vec![r("p2", Healthy, None)]);
    }

    #[test]
    fn disabled_checks_make_every_registered_target_unavailable() {
        let g = tg(
            json!({"name": "g", "port": 80, "healthCheck": {"enabled": false},
                "targets": [{"address": "10.0.0.1"}]}),
            None,
        );
        let reports = vec![(
            "p".to_string(),
            report(&[("tg-1", "10.0.0.1", 80, Healthy, None)]),
        )];
        let list = aggregate(&g, &reports, 0);
        assert!(!list.health_checks);
        assert_eq!(list.items[0].state, Unavailable);
        assert_eq!(list.items[0].reason.as_deref(), Some(REASON_DISABLED));
        assert_eq!(list.items[0].reports.len(), 1, "detail is still shown");
    }

    #[test]
    fn json_shape() {
        let g = tg(
            json!({"name": "g", "port": 80, "targets": [{"address": "10.0.0.1"}]}),
            None,
        );
        let reports = vec![(
            "p".to_string(),
            report(&[(
                "tg-1",
                "10.0.0.1",
                80,
                Unhealthy,
                Some("Ejected: 5 consecutive 5xx"),
            )]),
        )];
        assert_eq!(
            serde_json::to_value(aggregate(&g, &reports, 0)).unwrap(),
            json!({"targetGroup": "tg-1", "name": "g", "healthChecks": true, "items": [
                {"address": "10.0.0.1", "port": 80, "state": "UNHEALTHY",
                 "reason": "p: Ejected: 5 consecutive 5xx",
                 "reports": [{"proxy": "p", "state": "UNHEALTHY", "reason": "Ejected: 5 consecutive 5xx"}]}
            ]})
        );
    }
}
