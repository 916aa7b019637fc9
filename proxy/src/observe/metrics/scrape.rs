//! The families read from the proxy's runtime state at scrape time rather
//! than counted on the request path: target health, the target groups'
//! resilience counters (kept in the balancer's per-group runtime state,
//! which survives pushes), the access log's and the tracer's drop
//! counters, the snapshot in use, and the certificate expiry.

use super::view::View;
use crate::observe::trace::TraceStats;
use crate::state::Shared;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use std::sync::Arc;
use trellis_config::TargetState;

/// Every `state` label value of `trellis_target_health`, as the API
/// spells them.
const STATES: [TargetState; 5] = [
    TargetState::Initial,
    TargetState::Healthy,
    TargetState::Unhealthy,
    TargetState::Unavailable,
    TargetState::Draining,
];

fn state_str(s: TargetState) -> &'static str {
    match s {
        TargetState::Initial => "INITIAL",
        TargetState::Healthy => "HEALTHY",
        TargetState::Unhealthy => "UNHEALTHY",
        TargetState::Unavailable => "UNAVAILABLE",
        TargetState::Draining => "DRAINING",
    }
}

#[derive(Debug)]
struct TargetRow {
    group: Arc<str>,
    /// `address:port`.
    target: String,
    state: TargetState,
}

#[derive(Debug)]
struct GroupRow {
    group: Arc<str>,
    ejections: u64,
    request_overflows: u64,
    retry_overflows: u64,
    retries: u64,
    budget_exhausted: u64,
}

/// What one scrape read. (Help texts end with a period here: the
/// registry adds one to registered metrics, not to collectors.)
#[derive(Debug)]
pub(super) struct Scrape {
    targets: Vec<TargetRow>,
    groups: Vec<GroupRow>,
    access_log_dropped: u64,
    /// What happened to finished spans (all zero without tracing).
    traces: TraceStats,
    /// Version and time applied (Unix seconds) of the snapshot in use.
    snapshot: Option<(u64, f64)>,
    /// Unix seconds; `None` until a certificate is loaded.
    certificate_expiry: Option<u64>,
}

impl Scrape {
    /// Read everything now.
    pub(super) fn read(
        shared: &Shared,
        view: &View,
        applied_at_ms: u64,
        certificate_expiry: Option<u64>,
    ) -> Self {
        let mut targets = Vec::new();
        let mut groups = Vec::new();
        for g in shared.balancer.status() {
            let label = view
                .group_label(&g.id)
                .cloned()
                .unwrap_or_else(|| g.name.as_str().into());
            for t in &g.targets {
                let target = if t.address.contains(':') {
                    format!("[{}]:{}", t.address, t.port)
                } else {
                    format!("{}:{}", t.address, t.port)
                };
                targets.push(TargetRow {
                    group: Arc::clone(&label),
                    target,
                    state: t.state,
                });
            }
            let (ejections, retries, budget_exhausted) =
                shared.balancer.group(&g.id).map_or((0, 0, 0), |b| {
                    (
                        b.ejections_total(),
                        b.retries_total(),
                        b.retry_budget_exhausted_total(),
                    )
                });
            groups.push(GroupRow {
                group: label,
                ejections,
                request_overflows: g.circuit_breaker.requests.overflows,
                retry_overflows: g.circuit_breaker.retries.overflows,
                retries,
                budget_exhausted,
            });
        }
        Self {
            targets,
            groups,
            access_log_dropped: shared.access_log.dropped(),
            traces: shared
                .traces
                .as_ref()
                .map(|t| t.stats())
                .unwrap_or_default(),
            snapshot: shared
                .current_version()
                .map(|v| (v, applied_at_ms as f64 / 1000.0)),
            certificate_expiry,
        }
    }
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !self.targets.is_empty() {
            let mut m = enc.encode_descriptor(
                "target_health",
                "Health of each target as this proxy sees it: 1 for its current state, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for t in &self.targets {
                for s in STATES {
                    let labels = [
                        ("target_group", &*t.group),
                        ("target", t.target.as_str()),
                        ("state", state_str(s)),
                    ];
                    m.encode_family(&labels)?
                        .encode_gauge(&i64::from(t.state == s))?;
                }
            }
        }
        if !self.groups.is_empty() {
            type Pick = fn(&GroupRow) -> u64;
            let per_group: [(&str, &str, Pick); 3] = [
                ("ejections", "Targets ejected by outlier detection.", |g| {
                    g.ejections
                }),
                ("retries", "Retries sent (attempts after the first).", |g| {
                    g.retries
                }),
                (
                    "retry_budget_exhausted",
                    "Retries not sent because the retry budget was used up.",
                    |g| g.budget_exhausted,
                ),
            ];
            for (name, help, pick) in per_group {
                let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
                for g in &self.groups {
                    counter(pick(g)).encode(m.encode_family(&[("target_group", &*g.group)])?)?;
                }
            }
            let mut m = enc.encode_descriptor(
                "breaker_overflows",
                "Attempts turned away by a full circuit breaker (503 overflow, or a retry not sent).",
                None,
                MetricType::Counter,
            )?;
            for g in &self.groups {
                for (limit, v) in [
                    ("max_requests", g.request_overflows),
                    ("max_retries", g.retry_overflows),
                ] {
                    counter(v).encode(
                        m.encode_family(&[("target_group", &*g.group), ("limit", limit)])?,
                    )?;
                }
            }
        }
        counter(self.access_log_dropped).encode(enc.encode_descriptor(
            "access_log_dropped",
            "Access log lines dropped (queue full or destination failing).",
            None,
            MetricType::Counter,
        )?)?;
        counter(self.traces.failed_exports).encode(enc.encode_descriptor(
            "trace_export_failures",
            "Span exports that failed (collector unreachable, refused or too slow).",
            None,
            MetricType::Counter,
        )?)?;
        let mut m = enc.encode_descriptor(
            "trace_spans",
            "Finished spans by outcome: exported (the collector took them), failed (in an export that failed) or dropped (the export queue was full).",
            None,
            MetricType::Counter,
        )?;
        for (outcome, v) in [
            ("exported", self.traces.spans_exported),
            ("failed", self.traces.spans_failed),
            ("dropped", self.traces.spans_dropped),
        ] {
            counter(v).encode(m.encode_family(&[("outcome", outcome)])?)?;
        }
        if let Some((version, applied)) = self.snapshot {
            enc.encode_descriptor(
                "snapshot_version",
                "Version of the configuration snapshot in use.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&version)?;
            enc.encode_descriptor(
                "snapshot_applied_timestamp_seconds",
                "When the snapshot in use was applied (Unix time).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&applied)?;
        }
        if let Some(at) = self.certificate_expiry {
            enc.encode_descriptor(
                "certificate_expiry_timestamp_seconds",
                "When the proxy's mTLS certificate expires (Unix time).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    #[test]
    fn runtime_state_is_encoded_with_bounded_labels() {
        let s = Scrape {
            targets: vec![TargetRow {
                group: "api-v1".into(),
                target: "[::1]:8080".into(),
                state: TargetState::Healthy,
            }],
            groups: vec![GroupRow {
                group: "api-v1".into(),
                ejections: 1,
                request_overflows: 2,
                retry_overflows: 3,
                retries: 4,
                budget_exhausted: 5,
            }],
            access_log_dropped: 6,
            traces: TraceStats {
                spans_exported: 8,
                spans_failed: 9,
                spans_dropped: 10,
                failed_exports: 7,
            },
            snapshot: Some((42, 1_700_000_000.5)),
            certificate_expiry: None,
        };
        let mut r = Registry::with_prefix("trellis");
        r.register_collector(Box::new(s));
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        let h = |state: &str, v: u8| {
            format!(
                "trellis_target_health{{target_group=\"api-v1\",target=\"[::1]:8080\",state=\"{state}\"}} {v}"
            )
        };
        let want = [
            h("INITIAL", 0),
            h("HEALTHY", 1),
            h("UNHEALTHY", 0),
            h("UNAVAILABLE", 0),
            h("DRAINING", 0),
            "trellis_ejections_total{target_group=\"api-v1\"} 1".into(),
            "trellis_retries_total{target_group=\"api-v1\"} 4".into(),
            "trellis_retry_budget_exhausted_total{target_group=\"api-v1\"} 5".into(),
            "trellis_breaker_overflows_total{target_group=\"api-v1\",limit=\"max_requests\"} 2"
                .into(),
            "trellis_breaker_overflows_total{target_group=\"api-v1\",limit=\"max_retries\"} 3"
                .into(),
            "trellis_access_log_dropped_total 6".into(),
            "trellis_trace_export_failures_total 7".into(),
            "trellis_trace_spans_total{outcome=\"exported\"} 8".into(),
            "trellis_trace_spans_total{outcome=\"failed\"} 9".into(),
            "trellis_trace_spans_total{outcome=\"dropped\"} 10".into(),
            "trellis_snapshot_version 42".into(),
            "trellis_snapshot_applied_timestamp_seconds 1700000000.5".into(),
        ];
        assert_eq!(samples, want, "{out}");
        assert!(out.contains("# TYPE trellis_target_health gauge\n"));
        assert!(out.contains("# TYPE trellis_ejections counter\n"));
        assert!(!out.contains("certificate_expiry"), "absent until set");
    }

    #[test]
    fn certificate_expiry_appears_once_set() {
        let s = Scrape {
            targets: vec![],
            groups: vec![],
            access_log_dropped: 0,
            traces: TraceStats::default(),
            snapshot: None,
            certificate_expiry: Some(1_800_000_000),
        };
        let mut r = Registry::with_prefix("trellis");
        r.register_collector(Box::new(s));
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        assert!(
            out.contains("\ntrellis_certificate_expiry_timestamp_seconds 1800000000\n"),
            "{out}"
        );
        assert!(!out.contains("target_health"), "no targets, no family");
        assert!(!out.contains("snapshot_version"), "no snapshot yet");
    }
}
