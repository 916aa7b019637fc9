//! Target groups: the backends a rule forwards to, how to reach them and
//! how to check them.

use crate::kind::{Kind, Reference, Spec};
use crate::limits::*;
use crate::validate::Validator;
use serde::{Deserialize, Serialize};

/// How the proxy talks to targets.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetProtocol {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS (arrives with the identity work; stored now).
    Https,
}

/// The HTTP version spoken to targets.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProtocolVersion {
    /// HTTP/1.1 (WebSocket upgrades need it).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// gRPC: HTTP/2 with trailers passed through.
    Grpc,
}

impl ProtocolVersion {
    /// Whether upstream connections use HTTP/2.
    pub fn is_h2(self) -> bool {
        matches!(self, ProtocolVersion::Http2 | ProtocolVersion::Grpc)
    }
}

/// How a target is picked for each request.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each target in turn.
    #[default]
    RoundRobin,
    /// Power of two random choices on outstanding requests.
    LeastRequest,
}

/// Active health-check settings, with VPC Lattice's defaults and ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Whether targets are checked at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Protocol of the check; defaults to the target group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<TargetProtocol>,
    /// HTTP version of the check; HTTP1 unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<ProtocolVersion>,
    /// Port of the check; defaults to the target's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path requested.
    #[serde(default = "default_path")]
    pub path: String,
    /// Seconds between checks (5–300).
    #[serde(default = "crate::defaults::u32_of::<HEALTH_CHECK_INTERVAL_DEFAULT_SECS>")]
    pub interval_seconds: u32,
    /// Seconds before a check counts as failed (1–120).
    #[serde(default = "crate::defaults::u32_of::<HEALTH_CHECK_TIMEOUT_DEFAULT_SECS>")]
    pub timeout_seconds: u32,
    /// Consecutive passes to become healthy (2–10).
    #[serde(default = "crate::defaults::u32_of::<HEALTHY_THRESHOLD_DEFAULT>")]
    pub healthy_threshold: u32,
    /// Consecutive failures to become unhealthy (2–10).
    #[serde(default = "crate::defaults::u32_of::<UNHEALTHY_THRESHOLD_DEFAULT>")]
    pub unhealthy_threshold: u32,
    /// Status codes that pass: `200`, `200-299` or `200,202`.
    #[serde(default = "default_matcher")]
    pub matcher: String,
    /// Sub-second checks, set explicitly (overrides intervalSeconds and timeoutSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast: Option<crate::resilience::FastHealthCheck>,
}

fn yes() -> bool {
    true
}
fn default_path() -> String {
    HEALTH_CHECK_PATH_DEFAULT.into()
}
fn default_matcher() -> String {
    HEALTH_CHECK_MATCHER_DEFAULT.into()
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            protocol: None,
            protocol_version: None,
            port: None,
            path: default_path(),
            interval_seconds: HEALTH_CHECK_INTERVAL_DEFAULT_SECS,
            timeout_seconds: HEALTH_CHECK_TIMEOUT_DEFAULT_SECS,
            healthy_threshold: HEALTHY_THRESHOLD_DEFAULT,
            unhealthy_threshold: UNHEALTHY_THRESHOLD_DEFAULT,
            matcher: default_matcher(),
            fast: None,
        }
    }
}

impl HealthCheck {
    fn check(&self, v: &mut Validator) {
        if !self.path.starts_with('/') {
            v.error_at("path", format!("must start with '/', got '{}'", self.path));
        }
        if self.port == Some(0) {
            v.error_at("port", "must be between 1 and 65535");
        }
        if let Some(f) = &self.fast {
            v.field("fast", |v| f.check(v));
        }
        v.range(
            "intervalSeconds",
            self.interval_seconds,
            HEALTH_CHECK_INTERVAL_RANGE_SECS,
        );
        v.range(
            "timeoutSeconds",
            self.timeout_seconds,
            HEALTH_CHECK_TIMEOUT_RANGE_SECS,
        );
        if self.timeout_seconds >= self.interval_seconds
            && (HEALTH_CHECK_INTERVAL_RANGE_SECS.0..=HEALTH_CHECK_INTERVAL_RANGE_SECS.1)
                .contains(&self.interval_seconds)
        {
            v.error_at("timeoutSeconds", "must be less than intervalSeconds");
        }
        v.range(
            "healthyThreshold",
            self.healthy_threshold,
            HEALTHY_THRESHOLD_RANGE,
        );
        v.range(
            "unhealthyThreshold",
            self.unhealthy_threshold,
            UNHEALTHY_THRESHOLD_RANGE,
        );
        if let Err(m) = parse_matcher(&self.matcher) {
            v.error_at("matcher", m);
        }
    }
}

/// Parse a status matcher (`200`, `200-299`, `200,202`) into inclusive ranges.
pub fn parse_matcher(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |x: &str| -> Result<u16, String> {
            x.parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("'{s}' is not a status matcher: '{x}' is not a status code 100-599 (use e.g. 200, 200-299 or 200,202)"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(format!("'{s}': range {lo}-{hi} is reversed"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

/// One backend of a target group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// IP address or host name of the target.
    pub address: String,
    /// Port to use instead of the target group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Name of the proxy that fronts this target. Traffic then goes to that
    /// proxy's inbound listener, which forwards to the target locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

impl Target {
    /// The port traffic goes to: the override, or the group's.
    pub fn effective_port(&self, group_port: u16) -> u16 {
        self.port.unwrap_or(group_port)
    }
}

/// A target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetGroupSpec {
    /// Unique per account.
    pub name: String,
    /// Protocol to targets.
    #[serde(default)]
    pub protocol: TargetProtocol,
    /// HTTP version to targets.
    #[serde(default)]
    pub protocol_version: ProtocolVersion,
    /// Default port of targets.
    pub port: u16,
    /// Load-balancing algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Active health checks.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// The backends.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Passive outlier ejection; off unless present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<crate::resilience::OutlierDetection>,
    /// Fail-fast limits (Envoy's defaults when absent).
    #[serde(default)]
    pub circuit_breaker: crate::resilience::CircuitBreaker,
    /// Upstream connection settings.
    #[serde(default)]
    pub connection: crate::resilience::ConnectionSettings,
    /// Seconds a deregistered target keeps finishing requests (DRAINING) before it is removed (Lattice: 300; 0–3600).
    #[serde(
        default = "crate::defaults::u32_of::<{ crate::resilience::DEREGISTRATION_DELAY_SECONDS_DEFAULT }>"
    )]
    pub deregistration_delay_seconds: u32,
}

impl Spec for TargetGroupSpec {
    const KIND: Kind = Kind::TargetGroup;

    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, v: &mut Validator) {
        v.name("name", &self.name);
        if self.port == 0 {
            v.error_at("port", "must be between 1 and 65535");
        }
        v.field("healthCheck", |v| self.health_check.check(v));
        if let Some(o) = &self.outlier_detection {
            v.field("outlierDetection", |v| o.check(v));
        }
        v.field("circuitBreaker", |v| self.circuit_breaker.check(v));
        v.field("connection", |v| self.connection.check(v));
        v.range(
            "deregistrationDelaySeconds",
            self.deregistration_delay_seconds,
            (0, crate::resilience::DEREGISTRATION_DELAY_SECONDS_MAX),
        );
        if self.targets.len() > MAX_TARGETS_PER_GROUP {
            v.error_at(
                "targets",
                format!(
                    "at most {MAX_TARGETS_PER_GROUP} targets, got {}",
                    self.targets.len()
                ),
            );
        }
        let mut seen = std::collections::HashSet::new();
        v.field("targets", |v| {
            for (i, t) in self.targets.iter().enumerate() {
                v.index(i, |v| {
                    if let Err(m) = check_address(&t.address) {
                        v.error_at("address", m);
                    }
                    if t.port == Some(0) {
                        v.error_at("port", "must be between 1 and 65535");
                    }
                    if let Some(p) = &t.proxy
                        && let Err(m) = crate::validate::check_dns_label(p)
                    {
                        v.error_at("proxy", m);
                    }
                    if !seen.insert((t.address.as_str(), t.effective_port(self.port))) {
                        v.error(format!(
                            "duplicate target {}:{}",
                            t.address,
                            t.effective_port(self.port)
                        ));
                    }
                });
            }
        });
    }

    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
}

/// Why `addr` is neither an IP address nor a host name, if it is not.
pub fn check_address(addr: &str) -> Result<(), String> {
    if addr.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !addr.is_empty()
        && addr.len() <= MAX_DOMAIN_LEN
        && addr.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("'{addr}' is neither an IP address nor a host name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice_defaults_fill_in() {
        let tg: TargetGroupSpec =
            serde_json::from_value(serde_json::json!({"name": "a", "port": 80})).unwrap();
        assert_eq!(tg.health_check.interval_seconds, 30);
        assert_eq!(tg.health_check.timeout_seconds, 5);
        assert_eq!(tg.health_check.healthy_threshold, 5);
        assert_eq!(tg.health_check.unhealthy_threshold, 2);
        assert_eq!(tg.health_check.matcher, "200");
        assert!(tg.validate().is_ok());
    }

    #[test]
    fn every_problem_is_reported() {
        let tg: TargetGroupSpec = serde_json::from_value(serde_json::json!({
            "name": "A", "port": 0,
            "healthCheck": {"intervalSeconds": 1, "matcher": "abc", "healthyThreshold": 11},
            "targets": [{"address": "bad host!"}, {"address": "10.0.0.1", "port": 80}, {"address": "10.0.0.1", "port": 80}]
        }))
        .unwrap();
        let fields: Vec<_> = tg
            .validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        for f in [
            "name",
            "port",
            "healthCheck.intervalSeconds",
            "healthCheck.matcher",
            "healthCheck.healthyThreshold",
            "targets[0].address",
            "targets[2]",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn matchers() {
        assert_eq!(parse_matcher("200").unwrap(), vec![(200, 200)]);
        assert_eq!(
            parse_matcher("200-299,404").unwrap(),
            vec![(200, 299), (404, 404)]
        );
        assert!(parse_matcher("299-200").is_err());
        assert!(parse_matcher("2000").is_err());
    }
}
