//! Deregistration draining, as VPC Lattice does it: a target removed from
//! a target group keeps finishing the requests it has for the group's
//! `deregistrationDelaySeconds`, then disappears.
//!
//! The control plane is the only place that knows a target *was* there, so
//! it keeps the removed targets in the target group's stored `status`:
//!
//! ```json
//! "status": {"draining": [{"address": "10.0.0.7", "port": 8080, "until": 1735689900000}]}
//! ```
//!
//! [`next_status`] computes that list when an update is written (in the same
//! store transaction, so every control-plane replica sees the same
//! deadlines); the compiler puts unexpired entries into snapshots with
//! `draining: true`, and the push hub recompiles when the earliest deadline
//! passes ([`earliest_deadline`]), so a drained target leaves the proxies'
//! snapshots on time without another write. Expired entries stay in the
//! stored status until the next write of the group and are ignored by every
//! reader.
//!
//! Deadlines are wall-clock Unix milliseconds: replicas share them through
//! the store and a restarted control plane keeps them.

use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trellis_config::{Resource, TargetGroupSpec};

/// A deregistered target that is still draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainingTarget {
    /// Target address.
    pub address: String,
    /// Effective port it had (override or the group's port then).
    pub port: u16,
    /// The proxy that fronted it, so callers keep reaching it through that
    /// proxy while it drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Unix time in milliseconds when draining ends and the target is gone.
    pub until: u64,
}

impl DrainingTarget {
    /// Whether it is still draining at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.until > now_ms
    }
}

/// The server-computed `status` of a target group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupStatus {
    /// Targets removed by an update that are still finishing requests,
    /// in the order they were removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<DrainingTarget>,
}

impl TargetGroupStatus {
    /// The status stored with a resource; an absent or unreadable status
    /// (written by an older control plane) counts as nothing draining.
    pub fn of(res: &Resource<TargetGroupSpec>) -> Self {
        res.status
            .as_ref()
            .and_then(|v| Self::deserialize(v).ok())
            .unwrap_or_default()
    }

    /// As stored: `None` when there is nothing to say.
    pub fn to_value(&self) -> Option<serde_json::Value> {
        if self.draining.is_empty() {
            None
        } else {
            serde_json::to_value(self).ok()
        }
    }
}

/// The current wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// A time as Unix milliseconds (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339, for people.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Identity of a target within a group: address and effective port.
fn key(address: &str, port: u16) -> (String, u16) {
    (address.to_string(), port)
}

/// The draining list after `old` is replaced by `new` at `now_ms`:
///
/// - every target of `old` that `new` no longer has (same address and
///   effective port) drains for `new`'s `deregistrationDelaySeconds`; with
///   a delay of 0 it is removed at once;
/// - entries that already drained, and targets registered again, are
///   dropped;
/// - entries still draining keep their deadline, cut to `now + delay` if
///   the delay was lowered, so lowering the delay (to 0, say) is how an
///   operator ends a long drain early.
pub fn next_status(
    old: &Resource<TargetGroupSpec>,
    new: &TargetGroupSpec,
    now_ms: u64,
) -> TargetGroupStatus {
    let delay_ms = u64::from(new.deregistration_delay_seconds) * 1000;
    let cap = now_ms.saturating_add(delay_ms);
    let registered: HashSet<(String, u16)> = new
        .targets
        .iter()
        .map(|t| key(&t.address, t.effective_port(new.port)))
        .collect();
    let mut draining: Vec<DrainingTarget> = Vec::new();
    let mut seen: HashSet<(String, u16)> = HashSet::new();
    let previous = TargetGroupStatus::of(old).draining;
    for mut d in previous {
        let k = key(&d.address, d.port);
        if !d.active(now_ms) || registered.contains(&k) || !seen.insert(k) {
            continue;
        }
        d.until = d.until.min(cap);
        if d.active(now_ms) {
            draining.push(d);
        }
    }
    if delay_ms > 0 {
        for t in &old.spec.targets {
            let port = t.effective_port(old.spec.port);
            let k = key(&t.address, port);
            if registered.contains(&k) || !seen.insert(k) {
                continue;
            }
            draining.push(DrainingTarget {
                address: t.address.clone(),
                port,
                proxy: t.proxy.clone(),
                until: cap,
            });
        }
    }
    TargetGroupStatus { draining }
}

/// The targets of a group still draining at `now_ms` (none registered
/// again: a stored status never lists a registered target, but a reader
/// checks anyway).
pub fn active(res: &Resource<TargetGroupSpec>, now_ms: u64) -> Vec<DrainingTarget> {
    let registered: HashSet<(String, u16)> = res
        .spec
        .targets
        .iter()
        .map(|t| key(&t.address, t.effective_port(res.spec.port)))
        .collect();
    TargetGroupStatus::of(res)
        .draining
        .into_iter()
        .filter(|d| d.active(now_ms) && !registered.contains(&key(&d.address, d.port)))
        .collect()
}

/// The earliest deadline after `now_ms` of any draining target in the
/// model: when snapshots must be compiled again to drop it.
pub fn earliest_deadline(model: &Model, now_ms: u64) -> Option<u64> {
    model
        .target_groups
        .by_id
        .values()
        .filter(|tg| tg.status.is_some())
        .flat_map(|tg| TargetGroupStatus::of(tg).draining)
        .filter(|d| d.active(now_ms))
        .map(|d| d.until)
        .min()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;
    use trellis_config::Meta;

    fn spec(v: serde_json::Value) -> TargetGroupSpec {
        serde_json::from_value(v).unwrap()
    }

    fn res(spec: TargetGroupSpec, status: Option<serde_json::Value>) -> Resource<TargetGroupSpec> {
        Resource {
            meta: Meta {
                id: "tg-1".into(),
                account: "a".into(),
                version: 1,
                created_at: String::new(),
                updated_at: String::new(),
            },
            spec,
            status,
        }
    }

    fn two_targets(delay: u32) -> TargetGroupSpec {
        spec(
            json!({"name": "g", "port": 80, "deregistrationDelaySeconds": delay,
            "targets": [{"address": "10.0.0.1"}, {"address": "10.0.0.2", "port": 81, "proxy": "p"}]}),
        )
    }

    fn one_target(delay: u32) -> TargetGroupSpec {
        spec(
            json!({"name": "g", "port": 80, "deregistrationDelaySeconds": delay,
            "targets": [{"address": "10.0.0.1"}]}),
        )
    }

    #[test]
    fn a_removed_target_drains_for_the_delay() {
        let old = res(two_targets(30), None);
        let s = next_status(&old, &one_target(30), 1_000);
        assert_eq!(
            s.draining,
            vec![DrainingTarget {
                address: "10.0.0.2".into(),
                port: 81,
                proxy: Some("p".into()),
                until: 31_000
            }]
        );
        assert_eq!(
            s.to_value().unwrap(),
            json!({"draining": [{"address": "10.0.0.2", "port": 81, "proxy": "p", "until": 31_000}]})
        );
    }

    #[test]
    fn delay_zero_removes_at_once() {
        let old = res(two_targets(0), None);
        let s = next_status(&old, &one_target(0), 1_000);
        assert!(s.draining.is_empty());
        assert_eq!(s.to_value(), None);
    }

    #[test]
    fn a_target_is_identified_by_address_and_effective_port() {
        // Same address, port moved from the group's 80 to 8080: the old one drains.
        let old = res(one_target(10), None);
        let moved = spec(
            json!({"name": "g", "port": 80, "deregistrationDelaySeconds": 10,
            "targets": [{"address": "10.0.0.1", "port": 8080}]}),
        );
        let s = next_status(&old, &moved, 0);
        assert_eq!(s.draining.len(), 1);
        assert_eq!(
            (s.draining[0].address.as_str(), s.draining[0].port),
            ("10.0.0.1", 80)
        );
        // An explicit port equal to the group's is the same target: nothing drains.
        let explicit = spec(
            json!({"name": "g", "port": 80, "deregistrationDelaySeconds": 10,
            "targets": [{"address": "10.0.0.1", "port": 80}]}),
        );
        assert!(next_status(&old, &explicit, 0).draining.is_empty());
    }

    #[test]
    fn expired_and_registered_again_entries_are_dropped() {
        let status = json!({"draining": [
            {"address": "10.0.0.8", "port": 80, "until": 500},
            {"address": "10.0.0.9", "port": 80, "until": 5_000},
            {"address": "10.0.0.1", "port": 80, "until": 5_000}
        ]});
        let old = res(one_target(30), Some(status));
        // 10.0.0.1 stays registered; 10.0.0.8 expired; 10.0.0.9 still drains.
        let s = next_status(&old, &one_target(30), 1_000);
        assert_eq!(s.draining.len(), 1);
        assert_eq!(s.draining[0].address, "10.0.0.9");
        assert_eq!(s.draining[0].until, 5_000);
        // Registering 10.0.0.9 again ends its drain.
        let back = spec(
            json!({"name": "g", "port": 80, "deregistrationDelaySeconds": 30,
            "targets": [{"address": "10.0.0.1"}, {"address": "10.0.0.9"}]}),
        );
        assert!(next_status(&old, &back, 1_000).draining.is_empty());
    }

    #[test]
    fn lowering_the_delay_cuts_running_drains() {
        let status = json!({"draining": [{"address": "10.0.0.9", "port": 80, "until": 300_000}]});
        let old = res(one_target(300), Some(status.clone()));
        let s = next_status(&old, &one_target(5), 1_000);
        assert_eq!(s.draining[0].until, 6_000);
        let old = res(one_target(300), Some(status));
        assert!(next_status(&old, &one_target(0), 1_000).draining.is_empty());
    }

    #[test]
    fn removing_then_re_removing_keeps_the_first_deadline() {
        let old = res(two_targets(30), None);
        let first = next_status(&old, &one_target(30), 1_000);
        let mid = res(one_target(30), first.to_value());
        // An unrelated edit later does not restart the drain.
        let edited = spec(
            json!({"name": "g", "port": 80, "deregistrationDelaySeconds": 30,
            "algorithm": "least_request", "targets": [{"address": "10.0.0.1"}]}),
        );
        let second = next_status(&mid, &edited, 10_000);
        assert_eq!(second.draining, first.draining);
    }

    #[test]
    fn readers_ignore_expired_and_unreadable_status() {
        let r = res(
            one_target(30),
            Some(json!({"draining": [
                {"address": "10.0.0.8", "port": 80, "until": 500},
                {"address": "10.0.0.9", "port": 80, "until": 5_000}
            ]})),
        );
        let a = active(&r, 1_000);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].address, "10.0.0.9");
        assert!(active(&r, 5_000).is_empty(), "the deadline itself is gone");
        let odd = res(one_target(30), Some(json!({"draining": "yes"})));
        assert!(active(&odd, 0).is_empty());
    }

    #[test]
    fn earliest_deadline_spans_groups() {
        let mut m = Model::default();
        let a = res(
            one_target(30),
            Some(json!({"draining": [{"address": "10.0.0.8", "port": 80, "until": 9_000}]})),
        );
        let mut b = res(
            one_target(30),
            Some(json!({"draining": [
                {"address": "10.0.0.8", "port": 80, "until": 500},
                {"address": "10.0.0.9", "port": 80, "until": 4_000}
            ]})),
        );
        b.meta.id = "tg-2".into();
        m.target_groups.by_id.insert("tg-1".into(), a);
        m.target_groups.by_id.insert("tg-2".into(), b);
        assert_eq!(earliest_deadline(&m, 1_000), Some(4_000));
        assert_eq!(earliest_deadline(&m, 4_000), Some(9_000));
        assert_eq!(earliest_deadline(&m, 9_000), None);
    }
}
