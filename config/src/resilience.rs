//! Resilience settings: passive outlier ejection, circuit breakers,
//! connection limits and timeouts (per target group); retries, timeouts
//! and rate limits (per listener, rule and service).
//!
//! Defaults follow Envoy where VPC Lattice has nothing to say, and each is
//! a named constant. Everything is validated with field paths like the
//! rest of the model.

use crate::validate::Validator;
use serde::{Deserialize, Serialize};

/// Envoy's default ejection base time: long enough for a restarting
/// process to come back, short enough that a flap costs little capacity.
pub const OUTLIER_BASE_EJECTION_MS_DEFAULT: u32 = 30_000;
/// Cap of the ejection time (base × number of ejections).
pub const OUTLIER_MAX_EJECTION_MS_DEFAULT: u32 = 300_000;
/// Envoy's default: never eject more than a tenth of a group, so outlier
/// detection cannot empty a group by itself.
pub const OUTLIER_MAX_EJECTION_PERCENT_DEFAULT: u32 = 10;
/// Consecutive 5xx from a target before it is ejected (Envoy: 5).
pub const OUTLIER_CONSECUTIVE_5XX_DEFAULT: u32 = 5;
/// Consecutive gateway errors (502/503/504 from the target, resets) (Envoy: 5).
pub const OUTLIER_CONSECUTIVE_GATEWAY_DEFAULT: u32 = 5;
/// Consecutive connect failures (refused, timed out).
pub const OUTLIER_CONSECUTIVE_CONNECT_DEFAULT: u32 = 3;

/// Envoy's default circuit-breaker thresholds (per target group, per proxy).
pub const BREAKER_MAX_CONNECTIONS_DEFAULT: u32 = 1024;
/// See [`BREAKER_MAX_CONNECTIONS_DEFAULT`].
pub const BREAKER_MAX_PENDING_DEFAULT: u32 = 1024;
/// See [`BREAKER_MAX_CONNECTIONS_DEFAULT`].
pub const BREAKER_MAX_REQUESTS_DEFAULT: u32 = 1024;
/// Retries in flight to a target group: 1024, like the other limits, and
/// not Envoy's 3.
///
/// Envoy's 3 dates from before retry budgets, and Envoy itself ignores
/// `max_retries` once a cluster has a retry budget. Every Trellis retry
/// policy has one (`budgetPercent` of the requests in flight plus
/// `minRetriesPerSecond`), and that budget is what keeps a failing
/// backend from a retry storm. A cap of 3 on top of it binds exactly when
/// retries matter: when a target dies under load, every request in flight
/// on it fails at once and all but 3 of their retries were turned away
/// (hundreds of failed requests in a load test that retries hid
/// completely with a wide cap; see the e2e test
/// `with_retries_a_killed_backend_under_load_fails_no_request`). Istio
/// makes the same choice (its default is effectively unlimited); Linkerd
/// has only the budget. `maxRetries` stays for a hard cap set on purpose.
pub const BREAKER_MAX_RETRIES_DEFAULT: u32 = 1024;

/// Time to open a TCP connection to a target (Envoy: 5 s).
pub const CONNECT_TIMEOUT_MS_DEFAULT: u32 = 5_000;
/// Idle time after which a pooled upstream connection is closed.
pub const UPSTREAM_IDLE_SECONDS_DEFAULT: u32 = 60;
/// Lattice keeps a deregistered target draining for 5 minutes.
pub const DEREGISTRATION_DELAY_SECONDS_DEFAULT: u32 = 300;
/// Longest deregistration delay accepted (Lattice: 0–3600).
pub const DEREGISTRATION_DELAY_SECONDS_MAX: u32 = 3600;

/// Lattice's idle timeout of a service's connections and its range.
pub const SERVICE_IDLE_SECONDS_DEFAULT: u32 = 60;
/// See [`SERVICE_IDLE_SECONDS_DEFAULT`].
pub const SERVICE_IDLE_SECONDS_RANGE: (u32, u32) = (60, 600);

/// Attempts (first try included) when a retry policy says nothing.
pub const RETRY_MAX_ATTEMPTS_DEFAULT: u32 = 2;
/// Most attempts a policy may ask for.
pub const RETRY_MAX_ATTEMPTS_MAX: u32 = 10;
/// First backoff (Envoy: 25 ms); doubles per retry, with full jitter.
pub const RETRY_BACKOFF_BASE_MS_DEFAULT: u32 = 25;
/// Backoff cap (Envoy: 10 × base).
pub const RETRY_BACKOFF_MAX_MS_DEFAULT: u32 = 250;
/// Retries may add at most this share of the active requests (Envoy's retry budget: 20 %).
pub const RETRY_BUDGET_PERCENT_DEFAULT: u32 = 20;
/// Retries always allowed per second regardless of the budget (Linkerd: 10; Envoy: 3 concurrent).
pub const RETRY_MIN_PER_SECOND_DEFAULT: u32 = 3;
/// A request body is kept for a retry only up to this size (Linkerd: 64 KiB).
pub const RETRY_MAX_BUFFER_BYTES_DEFAULT: u32 = 64 * 1024;
/// Longest request timeout accepted (1 hour).
pub const TIMEOUT_MS_MAX: u32 = 3_600_000;

/// Passive outlier ejection of a target group's targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx answers that eject a target (0: off).
    #[serde(
        default = "crate::defaults::u32_of::<OUTLIER_CONSECUTIVE_5XX_DEFAULT>",
        rename = "consecutive5xx"
    )]
    pub consecutive_5xx: u32,
    /// Consecutive gateway errors (502, 503, 504, resets) that eject a target (0: off).
    #[serde(default = "crate::defaults::u32_of::<OUTLIER_CONSECUTIVE_GATEWAY_DEFAULT>")]
    pub consecutive_gateway_errors: u32,
    /// Consecutive connect failures that eject a target (0: off).
    #[serde(default = "crate::defaults::u32_of::<OUTLIER_CONSECUTIVE_CONNECT_DEFAULT>")]
    pub consecutive_connect_failures: u32,
    /// Ejection time of a first ejection; the n-th lasts n times as long.
    #[serde(default = "crate::defaults::u32_of::<OUTLIER_BASE_EJECTION_MS_DEFAULT>")]
    pub base_ejection_ms: u32,
    /// Cap of the ejection time.
    #[serde(default = "crate::defaults::u32_of::<OUTLIER_MAX_EJECTION_MS_DEFAULT>")]
    pub max_ejection_ms: u32,
    /// Most targets of the group ejected at once, in percent (at least one
    /// target may always be ejected in a group of two or more).
    #[serde(default = "crate::defaults::u32_of::<OUTLIER_MAX_EJECTION_PERCENT_DEFAULT>")]
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: OUTLIER_CONSECUTIVE_5XX_DEFAULT,
            consecutive_gateway_errors: OUTLIER_CONSECUTIVE_GATEWAY_DEFAULT,
            consecutive_connect_failures: OUTLIER_CONSECUTIVE_CONNECT_DEFAULT,
            base_ejection_ms: OUTLIER_BASE_EJECTION_MS_DEFAULT,
            max_ejection_ms: OUTLIER_MAX_EJECTION_MS_DEFAULT,
            max_ejection_percent: OUTLIER_MAX_EJECTION_PERCENT_DEFAULT,
        }
    }
}

impl OutlierDetection {
    pub(crate) fn check(&self, v: &mut Validator) {
        for (f, n) in [
            ("consecutive5xx", self.consecutive_5xx),
            ("consecutiveGatewayErrors", self.consecutive_gateway_errors),
            (
                "consecutiveConnectFailures",
                self.consecutive_connect_failures,
            ),
        ] {
            v.range(f, n, (0, 1000));
        }
        if self.consecutive_5xx == 0
            && self.consecutive_gateway_errors == 0
            && self.consecutive_connect_failures == 0
        {
            v.error("at least one of consecutive5xx, consecutiveGatewayErrors and consecutiveConnectFailures must be above 0 (or leave outlierDetection out)");
        }
        v.range("baseEjectionMs", self.base_ejection_ms, (100, 3_600_000));
        v.range("maxEjectionMs", self.max_ejection_ms, (100, 3_600_000));
        if self.max_ejection_ms < self.base_ejection_ms {
            v.error_at("maxEjectionMs", "must not be less than baseEjectionMs");
        }
        v.range("maxEjectionPercent", self.max_ejection_percent, (0, 100));
    }
}

/// Limits that fail fast (503 `overflow`) instead of queueing, per target
/// group, enforced by each proxy on its own traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Open upstream connections.
    #[serde(default = "crate::defaults::u32_of::<BREAKER_MAX_CONNECTIONS_DEFAULT>")]
    pub max_connections: u32,
    /// Requests waiting for a connection.
    #[serde(default = "crate::defaults::u32_of::<BREAKER_MAX_PENDING_DEFAULT>")]
    pub max_pending_requests: u32,
    /// Requests in flight.
    #[serde(default = "crate::defaults::u32_of::<BREAKER_MAX_REQUESTS_DEFAULT>")]
    pub max_requests: u32,
    /// Retries in flight.
    #[serde(default = "crate::defaults::u32_of::<BREAKER_MAX_RETRIES_DEFAULT>")]
    pub max_retries: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_connections: BREAKER_MAX_CONNECTIONS_DEFAULT,
            max_pending_requests: BREAKER_MAX_PENDING_DEFAULT,
            max_requests: BREAKER_MAX_REQUESTS_DEFAULT,
            max_retries: BREAKER_MAX_RETRIES_DEFAULT,
        }
    }
}

impl CircuitBreaker {
    pub(crate) fn check(&self, v: &mut Validator) {
        v.range("maxConnections", self.max_connections, (1, 1_000_000));
        v.range(
            "maxPendingRequests",
            self.max_pending_requests,
            (0, 1_000_000),
        );
        v.range("maxRequests", self.max_requests, (1, 1_000_000));
        v.range("maxRetries", self.max_retries, (0, 1_000_000));
    }
}

/// Upstream connection settings of a target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Time to open a connection (a failure is a 502 `upstream_connect_failed`, and retryable).
    #[serde(default = "crate::defaults::u32_of::<CONNECT_TIMEOUT_MS_DEFAULT>")]
    pub connect_timeout_ms: u32,
    /// A pooled connection idle this long is closed.
    #[serde(default = "crate::defaults::u32_of::<UPSTREAM_IDLE_SECONDS_DEFAULT>")]
    pub idle_timeout_seconds: u32,
    /// A connection older than this takes no new requests (0: no limit).
    #[serde(default)]
    pub max_lifetime_seconds: u32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            idle_timeout_seconds: UPSTREAM_IDLE_SECONDS_DEFAULT,
            max_lifetime_seconds: 0,
        }
    }
}

impl ConnectionSettings {
    pub(crate) fn check(&self, v: &mut Validator) {
        v.range("connectTimeoutMs", self.connect_timeout_ms, (10, 60_000));
        v.range("idleTimeoutSeconds", self.idle_timeout_seconds, (1, 3600));
        v.range("maxLifetimeSeconds", self.max_lifetime_seconds, (0, 86_400));
    }
}

/// When to retry a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 disables retries; at most 10).
    #[serde(default = "crate::defaults::u32_of::<RETRY_MAX_ATTEMPTS_DEFAULT>")]
    pub max_attempts: u32,
    /// Conditions: `connect-failure`, `reset`, `gateway-error` (502, 503,
    /// 504), `per-try-timeout`, or a status code such as `503` or `429`.
    #[serde(default = "d_retry_on")]
    pub retry_on: Vec<String>,
    /// Time limit of one attempt (retried on `per-try-timeout`); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u32>,
    /// First backoff; doubles per retry up to `backoffMaxMs`, with full jitter.
    #[serde(default = "crate::defaults::u32_of::<RETRY_BACKOFF_BASE_MS_DEFAULT>")]
    pub backoff_base_ms: u32,
    /// Backoff cap.
    #[serde(default = "crate::defaults::u32_of::<RETRY_BACKOFF_MAX_MS_DEFAULT>")]
    pub backoff_max_ms: u32,
    /// Retries at most this percentage of the requests in flight to the
    /// target group, so a failing backend is not hit with a retry storm.
    #[serde(default = "crate::defaults::u32_of::<RETRY_BUDGET_PERCENT_DEFAULT>")]
    pub budget_percent: u32,
    /// Retries per second allowed whatever the budget (a floor for low traffic).
    #[serde(default = "crate::defaults::u32_of::<RETRY_MIN_PER_SECOND_DEFAULT>")]
    pub min_retries_per_second: u32,
    /// Also retry methods that are not idempotent (POST, PATCH). Off by default.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// A request body is buffered for a retry up to this size; a larger one is not retried.
    #[serde(default = "crate::defaults::u32_of::<RETRY_MAX_BUFFER_BYTES_DEFAULT>")]
    pub max_buffered_body_bytes: u32,
}

fn d_retry_on() -> Vec<String> {
    vec![
        "connect-failure".into(),
        "reset".into(),
        "gateway-error".into(),
    ]
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: RETRY_MAX_ATTEMPTS_DEFAULT,
            retry_on: d_retry_on(),
            per_try_timeout_ms: None,
            backoff_base_ms: RETRY_BACKOFF_BASE_MS_DEFAULT,
            backoff_max_ms: RETRY_BACKOFF_MAX_MS_DEFAULT,
            budget_percent: RETRY_BUDGET_PERCENT_DEFAULT,
            min_retries_per_second: RETRY_MIN_PER_SECOND_DEFAULT,
            retry_non_idempotent: false,
            max_buffered_body_bytes: RETRY_MAX_BUFFER_BYTES_DEFAULT,
        }
    }
}

/// A parsed `retryOn` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The connection could not be opened.
    ConnectFailure,
    /// The connection was reset or closed before a response head.
    Reset,
    /// 502, 503 or 504 from the target.
    GatewayError,
    /// An attempt exceeded `perTryTimeoutMs`.
    PerTryTimeout,
    /// This status from the target.
    Status(u16),
}

impl std::str::FromStr for RetryOn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "connect-failure" => RetryOn::ConnectFailure,
            "reset" => RetryOn::Reset,
            "gateway-error" => RetryOn::GatewayError,
            "per-try-timeout" => RetryOn::PerTryTimeout,
            code => match code.parse::<u16>() {
                Ok(c) if (400..=599).contains(&c) => RetryOn::Status(c),
                _ => {
                    return Err(format!(
                        "'{s}' is not a retry condition: use connect-failure, reset, gateway-error, per-try-timeout or a status code 400-599"
                    ));
                }
            },
        })
    }
}

impl RetryPolicy {
    /// The conditions, parsed (invalid ones are rejected by validation).
    pub fn conditions(&self) -> Vec<RetryOn> {
        self.retry_on
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    pub(crate) fn check(&self, v: &mut Validator) {
        v.range(
            "maxAttempts",
            self.max_attempts,
            (1, RETRY_MAX_ATTEMPTS_MAX),
        );
        v.field("retryOn", |v| {
            for (i, c) in self.retry_on.iter().enumerate() {
                if let Err(m) = c.parse::<RetryOn>() {
                    v.index(i, |v| v.error(m));
                }
            }
        });
        if let Some(t) = self.per_try_timeout_ms {
            v.range("perTryTimeoutMs", t, (1, TIMEOUT_MS_MAX));
        }
        v.range("backoffBaseMs", self.backoff_base_ms, (1, 60_000));
        v.range("backoffMaxMs", self.backoff_max_ms, (1, 600_000));
        if self.backoff_max_ms < self.backoff_base_ms {
            v.error_at("backoffMaxMs", "must not be less than backoffBaseMs");
        }
        v.range("budgetPercent", self.budget_percent, (0, 100));
        v.range(
            "minRetriesPerSecond",
            self.min_retries_per_second,
            (0, 100_000),
        );
        v.range(
            "maxBufferedBodyBytes",
            self.max_buffered_body_bytes,
            (0, 16 * 1024 * 1024),
        );
    }
}

/// Which requests share a token bucket.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// One bucket for all requests (per proxy).
    #[default]
    All,
    /// One bucket per caller: the caller's mesh identity once identities
    /// exist, the client address until then.
    Caller,
}

/// A token-bucket rate limit, enforced by each proxy on its own traffic
/// (limits are local, not global: N proxies admit up to N times the rate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// Requests allowed at once on top of an idle bucket (at least 1).
    pub burst: u32,
    /// What a bucket is kept per.
    #[serde(default)]
    pub key: RateLimitKey,
}

impl RateLimit {
    pub(crate) fn check(&self, v: &mut Validator) {
        v.range(
            "requestsPerSecond",
            self.requests_per_second,
            (1, 10_000_000),
        );
        v.range("burst", self.burst, (1, 10_000_000));
    }
}

/// Fast health checks: sub-second intervals, for tests and latency-critical
/// targets. Set explicitly; the Lattice-range `intervalSeconds` and
/// `timeoutSeconds` are ignored while this is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FastHealthCheck {
    /// Milliseconds between checks (50–4999).
    pub interval_ms: u32,
    /// Milliseconds before a check fails (10–4999, less than the interval).
    pub timeout_ms: u32,
}

impl FastHealthCheck {
    pub(crate) fn check(&self, v: &mut Validator) {
        v.range("intervalMs", self.interval_ms, (50, 4999));
        v.range("timeoutMs", self.timeout_ms, (10, 4999));
        if self.timeout_ms >= self.interval_ms {
            v.error_at("timeoutMs", "must be less than intervalMs");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kind::Spec;
    use crate::{ServiceSpec, TargetGroupSpec};

    #[test]
    fn defaults_are_envoy_and_lattice() {
        let tg: TargetGroupSpec =
            serde_json::from_value(serde_json::json!({"name": "a", "port": 80})).unwrap();
        assert_eq!(tg.circuit_breaker.max_requests, 1024);
        assert_eq!(tg.deregistration_delay_seconds, 300);
        assert!(tg.outlier_detection.is_none());
        let svc: ServiceSpec = serde_json::from_value(serde_json::json!({"name": "s"})).unwrap();
        assert_eq!(svc.idle_timeout_seconds, 60);
    }

    #[test]
    fn resilience_settings_are_validated_with_field_paths() {
        let tg: TargetGroupSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "port": 80,
            "healthCheck": {"fast": {"intervalMs": 100, "timeoutMs": 200}},
            "outlierDetection": {"consecutive5xx": 0, "consecutiveGatewayErrors": 0, "consecutiveConnectFailures": 0, "maxEjectionPercent": 101},
            "circuitBreaker": {"maxRequests": 0},
            "deregistrationDelaySeconds": 4000
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
            "healthCheck.fast.timeoutMs",
            "outlierDetection",
            "outlierDetection.maxEjectionPercent",
            "circuitBreaker.maxRequests",
            "deregistrationDelaySeconds",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
        let mut svc: ServiceSpec = serde_json::from_value(serde_json::json!({
            "name": "s", "idleTimeoutSeconds": 30, "rateLimit": {"requestsPerSecond": 0, "burst": 1},
            "listeners": [{"name": "l", "defaultAction": {"fixedResponse": {"statusCode": 200}},
                "retryPolicy": {"maxAttempts": 11, "retryOn": ["reset", "teapot"]},
                "rules": [{"name": "r", "priority": 1, "match": {"method": "GET"}, "action": {"fixedResponse": {"statusCode": 200}}, "timeoutMs": 0, "rateLimit": {"requestsPerSecond": 1, "burst": 0, "key": "caller"}}]}]
        }))
        .unwrap();
        svc.normalize();
        let fields: Vec<_> = svc
            .validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        for f in [
            "idleTimeoutSeconds",
            "rateLimit.requestsPerSecond",
            "listeners[0].retryPolicy.maxAttempts",
            "listeners[0].retryPolicy.retryOn[1]",
            "listeners[0].rules[0].timeoutMs",
            "listeners[0].rules[0].rateLimit.burst",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn retry_conditions_parse() {
        let p = super::RetryPolicy {
            retry_on: vec!["gateway-error".into(), "429".into()],
            ..Default::default()
        };
        assert_eq!(
            p.conditions(),
            vec![super::RetryOn::GatewayError, super::RetryOn::Status(429)]
        );
    }
}
