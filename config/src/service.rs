//! Services: what clients address by name, with their listeners.

use crate::kind::{Kind, Reference, Spec};
use crate::limits::*;
use crate::listener::ListenerSpec;
use crate::validate::Validator;
use serde::{Deserialize, Serialize};

/// A service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Unique per account; part of generated DNS names.
    pub name: String,
    /// A domain clients may use instead of the generated names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_domain: Option<String>,
    /// Auth type at the service level (enforced with auth policies).
    #[serde(default)]
    pub auth_type: crate::AuthType,
    /// The service-level auth policy (IAM-style JSON, at most 10 KB; see
    /// [`crate::policy`]), checked when `authType` is `IAM`. A string of
    /// JSON text is accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth_policy: Option<serde_json::Value>,
    /// At most two listeners, on distinct ports.
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
    /// Idle time of this service's connections, 60–600 s (Lattice); the
    /// proxy applies it to upstream connections and upgraded tunnels.
    #[serde(
        default = "crate::defaults::u32_of::<{ crate::resilience::SERVICE_IDLE_SECONDS_DEFAULT }>"
    )]
    pub idle_timeout_seconds: u32,
    /// A rate limit of all of this service's requests (per proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::resilience::RateLimit>,
}

/// The generated DNS name of `service` in `network`:
/// `<service>.<network>.trellis.internal`. A service associated with
/// several networks has one name in each; both names are DNS labels, so
/// the result is a valid host name.
pub fn dns_name(service: &str, network: &str) -> String {
    format!("{service}.{network}.{DNS_SUFFIX}")
}

impl Spec for ServiceSpec {
    const KIND: Kind = Kind::Service;

    fn name(&self) -> &str {
        &self.name
    }

    fn normalize(&mut self) {
        if let Some(d) = &mut self.custom_domain {
            *d = d.trim_end_matches('.').to_ascii_lowercase();
        }
        for l in &mut self.listeners {
            l.normalize();
        }
    }

    fn check(&self, v: &mut Validator) {
        v.name("name", &self.name);
        crate::policy::check_attached(v, self.auth_policy.as_ref());
        if let Some(d) = &self.custom_domain {
            if let Err(m) = crate::validate::check_domain(d) {
                v.error_at("customDomain", m);
            } else if d.ends_with(&format!(".{DNS_SUFFIX}")) {
                v.error_at(
                    "customDomain",
                    format!("must not be under the generated suffix '{DNS_SUFFIX}'"),
                );
            }
        }
        v.range(
            "idleTimeoutSeconds",
            self.idle_timeout_seconds,
            crate::resilience::SERVICE_IDLE_SECONDS_RANGE,
        );
        if let Some(l) = &self.rate_limit {
            v.field("rateLimit", |v| l.check(v));
        }
        if self.listeners.len() > MAX_LISTENERS_PER_SERVICE {
            v.error_at(
                "listeners",
                format!(
                    "at most {MAX_LISTENERS_PER_SERVICE} listeners per service, got {}",
                    self.listeners.len()
                ),
            );
        }
        let mut ports = std::collections::HashMap::new();
        let mut names = std::collections::HashSet::new();
        v.field("listeners", |v| {
            for (i, l) in self.listeners.iter().enumerate() {
                v.index(i, |v| {
                    l.check(v);
                    if !names.insert(&l.name) {
                        v.error_at(
                            "name",
                            format!("'{}' is used by another listener of this service", l.name),
                        );
                    }
                    if let Some(prev) = ports.insert(l.port, i) {
                        v.error_at(
                            "port",
                            format!("{} is already used by listeners[{prev}]", l.port),
                        );
                    }
                });
            }
        });
    }

    fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            l.references(&format!("listeners[{i}]"), &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> ServiceSpec {
        let mut s: ServiceSpec = serde_json::from_value(v).unwrap();
        s.normalize();
        s
    }

    #[test]
    fn the_issue_example_path() {
        let s = svc(serde_json::json!({
            "name": "api",
            "listeners": [{
                "name": "http", "defaultAction": {"fixedResponse": {"statusCode": 404}},
                "rules": [
                    {"name": "a", "priority": 1, "match": {"method": "GET"}, "action": {"fixedResponse": {"statusCode": 200}}},
                    {"name": "b", "priority": 2, "match": {"method": "GET"}, "action": {"fixedResponse": {"statusCode": 200}}},
                    {"name": "c", "priority": 3, "match": {"path": {"type": "prefix", "value": "api"}}, "action": {"fixedResponse": {"statusCode": 200}}}
                ]
            }]
        }));
        let e = s.validate().unwrap_err();
        assert_eq!(
            e.errors[0].to_string(),
            "listeners[0].rules[2].match.path.value: must start with '/', got 'api'"
        );
    }

    #[test]
    fn limits_and_uniqueness() {
        let rule = |n: u16| serde_json::json!({"name": format!("r{n}"), "priority": 5, "match": {"method": "GET"}, "action": {"forward": {"targetGroups": [{"targetGroup": "x", "weight": 1000}]}}});
        let s = svc(serde_json::json!({
            "name": "api", "customDomain": "API.Example.com.",
            "listeners": [
                {"name": "a", "defaultAction": {"fixedResponse": {"statusCode": 404}}, "rules": (0..11).map(rule).collect::<Vec<_>>()},
                {"name": "a", "defaultAction": {"fixedResponse": {"statusCode": 404}}},
                {"name": "c", "port": 443, "protocol": "HTTPS", "defaultAction": {"forward": {"targetGroups": []}}}
            ]
        }));
        assert_eq!(s.custom_domain.as_deref(), Some("api.example.com"));
        let fields: Vec<_> = s
            .validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        for f in [
            "listeners",
            "listeners[0].rules",
            "listeners[0].rules[1].priority",
            "listeners[0].rules[0].action.forward.targetGroups[0].weight",
            "listeners[1].name",
            "listeners[1].port",
            "listeners[2].defaultAction.forward.targetGroups",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn auth_policy_problems_have_field_paths() {
        let s = svc(
            serde_json::json!({"name": "api", "authType": "IAM", "authPolicy": {
                "Statement": [
                    {"Effect": "Permit", "Principal": "*", "Action": "trellis:Invoke", "Resource": "*"},
                    {"Effect": "Allow", "Principal": "*", "Action": "trellis:Invoke", "Resource": "*",
                     "Condition": {"StringEquals": {"trellis:Bogus": "x"}}}
                ]
            }}),
        );
        let fields: Vec<_> = s
            .validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert!(
            fields.contains(&"authPolicy.Statement[0].Effect".to_string()),
            "{fields:?}"
        );
        assert!(
            fields
                .iter()
                .any(|f| f.starts_with("authPolicy.Statement[1].Condition.StringEquals")),
            "{fields:?}"
        );
        let ok = svc(serde_json::json!({"name": "api", "authPolicy":
            {"Statement": {"Effect": "Allow", "Principal": {"AWS": "anonymous"}, "Action": "trellis:Invoke", "Resource": "api/*"}}}));
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn references_carry_field_paths() {
        let s = svc(
            serde_json::json!({"name": "api", "listeners": [{"name": "l", "defaultAction": {"forward": {"targetGroups": [{"targetGroup": "tg1"}]}}}]}),
        );
        let r = s.references();
        assert_eq!(r[0].name, "tg1");
        assert_eq!(
            r[0].field,
            "listeners[0].defaultAction.forward.targetGroups[0].targetGroup"
        );
        assert_eq!(s.listeners[0].port, 80);
    }
}
