//! Limits of the model. Most mirror Amazon VPC Lattice's quotas so that a
//! configuration that works there works here, and the other way round.

/// Longest resource name. Names end up in DNS labels, hence 63.
pub const MAX_NAME_LEN: usize = 63;
/// Lattice allows at most two listeners per service (typically HTTP + HTTPS).
pub const MAX_LISTENERS_PER_SERVICE: usize = 2;
/// Lattice's quota of rules per listener (the default action is not a rule).
pub const MAX_RULES_PER_LISTENER: usize = 10;
/// Rule priorities are 1 (evaluated first) to 100.
pub const MIN_RULE_PRIORITY: u16 = 1;
/// See [`MIN_RULE_PRIORITY`].
pub const MAX_RULE_PRIORITY: u16 = 100;
/// A rule's match may AND up to five header matches.
pub const MAX_HEADER_MATCHES: usize = 5;
/// A forward action splits traffic over at most ten target groups.
pub const MAX_TARGET_GROUPS_PER_ACTION: usize = 10;
/// Weights are relative; 0 keeps a target group configured but idle.
pub const MAX_WEIGHT: u32 = 999;
/// Longest path match value, as in Lattice.
pub const MAX_PATH_MATCH_LEN: usize = 200;
/// Longest header match value.
pub const MAX_HEADER_MATCH_VALUE_LEN: usize = 200;
/// Targets per target group (Lattice: 1000).
pub const MAX_TARGETS_PER_GROUP: usize = 1000;
/// Longest custom domain name (DNS limit).
pub const MAX_DOMAIN_LEN: usize = 253;

/// Health-check interval: Lattice default and range, in seconds.
pub const HEALTH_CHECK_INTERVAL_DEFAULT_SECS: u32 = 30;
/// See [`HEALTH_CHECK_INTERVAL_DEFAULT_SECS`].
pub const HEALTH_CHECK_INTERVAL_RANGE_SECS: (u32, u32) = (5, 300);
/// Health-check timeout: Lattice default and range, in seconds.
pub const HEALTH_CHECK_TIMEOUT_DEFAULT_SECS: u32 = 5;
/// See [`HEALTH_CHECK_TIMEOUT_DEFAULT_SECS`].
pub const HEALTH_CHECK_TIMEOUT_RANGE_SECS: (u32, u32) = (1, 120);
/// Consecutive successes to become healthy: Lattice default and range.
pub const HEALTHY_THRESHOLD_DEFAULT: u32 = 5;
/// See [`HEALTHY_THRESHOLD_DEFAULT`].
pub const HEALTHY_THRESHOLD_RANGE: (u32, u32) = (2, 10);
/// Consecutive failures to become unhealthy: Lattice default and range.
pub const UNHEALTHY_THRESHOLD_DEFAULT: u32 = 2;
/// See [`UNHEALTHY_THRESHOLD_DEFAULT`].
pub const UNHEALTHY_THRESHOLD_RANGE: (u32, u32) = (2, 10);
/// Default health-check path.
pub const HEALTH_CHECK_PATH_DEFAULT: &str = "/";
/// Default health-check matcher.
pub const HEALTH_CHECK_MATCHER_DEFAULT: &str = "200";

/// The DNS suffix of generated service names: `<service>.<network>.trellis.internal`.
pub const DNS_SUFFIX: &str = "trellis.internal";

/// Account that owns resources until accounts and tokens exist.
pub const DEFAULT_ACCOUNT: &str = "000000000000";
