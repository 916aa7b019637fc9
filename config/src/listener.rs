//! Listeners and their rules: how a service's requests are matched and
//! where they go.

use crate::kind::{Kind, Reference};
use crate::limits::*;
use crate::validate::Validator;
use serde::{Deserialize, Serialize};

/// Protocol a listener accepts from clients.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    /// Plain HTTP/1.1 or HTTP/2 (h2c).
    #[default]
    Http,
    /// TLS-terminated HTTP (served with the identity work; stored now).
    Https,
}

impl ListenerProtocol {
    /// The port a listener of this protocol uses when none is given.
    pub fn default_port(self) -> u16 {
        match self {
            ListenerProtocol::Http => 80,
            ListenerProtocol::Https => 443,
        }
    }
}

/// One target group of a forward action and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedTargetGroup {
    /// Name of the target group (in a compiled snapshot: its id).
    pub target_group: String,
    /// Relative weight 0–999; 0 sends nothing.
    #[serde(default = "crate::defaults::u32_of::<1>")]
    pub weight: u32,
}

/// Forward to one or more target groups by weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardAction {
    /// 1–10 weighted target groups.
    pub target_groups: Vec<WeightedTargetGroup>,
}

/// Answer from the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixedResponseAction {
    /// Status code of the answer (100–599).
    pub status_code: u16,
}

/// What a rule or a listener's default does with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// Forward to target groups.
    Forward(ForwardAction),
    /// Answer with a fixed status.
    FixedResponse(FixedResponseAction),
}

impl Action {
    fn check(&self, v: &mut Validator) {
        match self {
            Action::Forward(f) => v.field("forward", |v| {
                let n = f.target_groups.len();
                if n == 0 || n > MAX_TARGET_GROUPS_PER_ACTION {
                    v.error_at(
                        "targetGroups",
                        format!(
                            "must list 1 to {MAX_TARGET_GROUPS_PER_ACTION} target groups, got {n}"
                        ),
                    );
                }
                let mut seen = std::collections::HashSet::new();
                v.field("targetGroups", |v| {
                    for (i, tg) in f.target_groups.iter().enumerate() {
                        v.index(i, |v| {
                            if tg.weight > MAX_WEIGHT {
                                v.error_at(
                                    "weight",
                                    format!(
                                        "must be between 0 and {MAX_WEIGHT}, got {}",
                                        tg.weight
                                    ),
                                );
                            }
                            if tg.target_group.is_empty() {
                                v.error_at("targetGroup", "must not be empty");
                            } else if !seen.insert(&tg.target_group) {
                                v.error_at(
                                    "targetGroup",
                                    format!("'{}' is listed twice", tg.target_group),
                                );
                            }
                        });
                    }
                });
                if n > 0 && f.target_groups.iter().all(|t| t.weight == 0) {
                    v.error_at(
                        "targetGroups",
                        "at least one target group needs a weight above 0",
                    );
                }
            }),
            Action::FixedResponse(r) => v.field("fixedResponse", |v| {
                if !(100..=599).contains(&r.status_code) {
                    v.error_at(
                        "statusCode",
                        format!("must be between 100 and 599, got {}", r.status_code),
                    );
                }
            }),
        }
    }

    fn references(&self, field: &str, out: &mut Vec<Reference>) {
        if let Action::Forward(f) = self {
            for (i, tg) in f.target_groups.iter().enumerate() {
                out.push(Reference {
                    kind: Kind::TargetGroup,
                    name: tg.target_group.clone(),
                    field: format!("{field}.forward.targetGroups[{i}].targetGroup"),
                });
            }
        }
    }
}

/// How a path is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PathMatchType {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value.
    Prefix,
}

/// A path match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// Exact or prefix.
    #[serde(rename = "type")]
    pub kind: PathMatchType,
    /// Starts with `/`, at most 200 characters.
    pub value: String,
    /// Compare case-sensitively (the default, as in Lattice).
    #[serde(default = "yes")]
    pub case_sensitive: bool,
}

fn yes() -> bool {
    true
}

/// How a header value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchType {
    /// Equal.
    Exact,
    /// Starts with.
    Prefix,
    /// Contains.
    Contains,
}

/// A header match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, compared case-insensitively.
    pub name: String,
    /// Exact, prefix or contains.
    #[serde(rename = "type")]
    pub kind: MatchType,
    /// Value to compare with.
    pub value: String,
    /// Compare the value case-sensitively (default false, as in Lattice).
    #[serde(default)]
    pub case_sensitive: bool,
}

/// The conditions of a rule; all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMatch {
    /// HTTP method, exact (upper case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Up to 5 header matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

impl RuleMatch {
    fn check(&self, v: &mut Validator) {
        if let Some(m) = &self.method
            && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            v.error_at(
                "method",
                format!("must be an upper-case HTTP method such as GET, got '{m}'"),
            );
        }
        if let Some(p) = &self.path {
            v.field("path", |v| {
                if !p.value.starts_with('/') {
                    v.error_at("value", format!("must start with '/', got '{}'", p.value));
                }
                if p.value.len() > MAX_PATH_MATCH_LEN {
                    v.error_at(
                        "value",
                        format!("must be at most {MAX_PATH_MATCH_LEN} characters"),
                    );
                }
            });
        }
        if self.headers.len() > MAX_HEADER_MATCHES {
            v.error_at(
                "headers",
                format!(
                    "at most {MAX_HEADER_MATCHES} header matches, got {}",
                    self.headers.len()
                ),
            );
        }
        v.field("headers", |v| {
            for (i, h) in self.headers.iter().enumerate() {
                v.index(i, |v| {
                    if h.name.is_empty() || http_token(&h.name).is_err() {
                        v.error_at("name", format!("'{}' is not a valid header name", h.name));
                    }
                    if h.value.is_empty() || h.value.len() > MAX_HEADER_MATCH_VALUE_LEN {
                        v.error_at(
                            "value",
                            format!("must be 1 to {MAX_HEADER_MATCH_VALUE_LEN} characters"),
                        );
                    }
                });
            }
        });
        if self.method.is_none() && self.path.is_none() && self.headers.is_empty() {
            v.error("must have at least one of method, path or headers");
        }
    }
}

fn check_timeout(v: &mut Validator, timeout_ms: Option<u32>) {
    if let Some(t) = timeout_ms {
        v.range("timeoutMs", t, (1, crate::resilience::TIMEOUT_MS_MAX));
    }
}

fn http_token(s: &str) -> Result<(), ()> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        Ok(())
    } else {
        Err(())
    }
}

/// A listener rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique within the listener.
    pub name: String,
    /// 1–100, unique within the listener; lower is evaluated first.
    pub priority: u16,
    /// Conditions (AND).
    #[serde(rename = "match")]
    pub matches: RuleMatch,
    /// What to do on a match.
    pub action: Action,
    /// Time for the whole request, retries included (504 `upstream_timeout`);
    /// the listener's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Retries; the listener's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<crate::resilience::RetryPolicy>,
    /// A rate limit of this rule's requests (in addition to the service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::resilience::RateLimit>,
}

/// A listener of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerSpec {
    /// Unique within the service.
    pub name: String,
    /// HTTP or HTTPS.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Port clients address; 80 for HTTP and 443 for HTTPS unless set.
    #[serde(default)]
    pub port: u16,
    /// What happens when no rule matches.
    pub default_action: Action,
    /// Up to 10 rules, evaluated by priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// Request timeout of the default action and of rules without their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Retry policy of the default action and of rules without their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<crate::resilience::RetryPolicy>,
}

impl ListenerSpec {
    pub(crate) fn normalize(&mut self) {
        if self.port == 0 {
            self.port = self.protocol.default_port();
        }
        self.rules.sort_by_key(|r| r.priority);
    }

    pub(crate) fn check(&self, v: &mut Validator) {
        v.name("name", &self.name);
        v.field("defaultAction", |v| self.default_action.check(v));
        check_timeout(v, self.timeout_ms);
        if let Some(p) = &self.retry_policy {
            v.field("retryPolicy", |v| p.check(v));
        }
        if self.rules.len() > MAX_RULES_PER_LISTENER {
            v.error_at(
                "rules",
                format!(
                    "at most {MAX_RULES_PER_LISTENER} rules per listener, got {}",
                    self.rules.len()
                ),
            );
        }
        let mut priorities = std::collections::HashMap::new();
        let mut names = std::collections::HashSet::new();
        v.field("rules", |v| {
            for (i, r) in self.rules.iter().enumerate() {
                v.index(i, |v| {
                    v.name("name", &r.name);
                    if !names.insert(&r.name) {
                        v.error_at(
                            "name",
                            format!("'{}' is used by another rule of this listener", r.name),
                        );
                    }
                    v.range(
                        "priority",
                        r.priority,
                        (MIN_RULE_PRIORITY, MAX_RULE_PRIORITY),
                    );
                    if let Some(prev) = priorities.insert(r.priority, i) {
                        v.error_at(
                            "priority",
                            format!("{} is already used by rules[{prev}]", r.priority),
                        );
                    }
                    v.field("match", |v| r.matches.check(v));
                    v.field("action", |v| r.action.check(v));
                    check_timeout(v, r.timeout_ms);
                    if let Some(p) = &r.retry_policy {
                        v.field("retryPolicy", |v| p.check(v));
                    }
                    if let Some(l) = &r.rate_limit {
                        v.field("rateLimit", |v| l.check(v));
                    }
                });
            }
        });
    }

    pub(crate) fn references(&self, field: &str, out: &mut Vec<Reference>) {
        self.default_action
            .references(&format!("{field}.defaultAction"), out);
        for (i, r) in self.rules.iter().enumerate() {
            r.action
                .references(&format!("{field}.rules[{i}].action"), out);
        }
    }
}
