//! Service networks: the logical boundary that services and proxies join.

use crate::kind::{Kind, Reference, Spec};
use crate::validate::Validator;
use serde::{Deserialize, Serialize};

/// How callers are authenticated on a network (or a service). Enforcement
/// arrives with auth policies; the value is stored from the start so
/// existing configuration keeps its meaning.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthType {
    /// No check at this level.
    #[default]
    None,
    /// Requests must be allowed by the auth policy.
    Iam,
}

/// A service network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceNetworkSpec {
    /// Unique per account; part of generated DNS names.
    pub name: String,
    /// Authentication mode for requests to services in this network.
    #[serde(default)]
    pub auth_type: AuthType,
    /// The network-level auth policy (IAM-style JSON, at most 10 KB; see
    /// [`crate::policy`]), checked when `authType` is `IAM`. A string of
    /// JSON text is accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth_policy: Option<serde_json::Value>,
}

impl Spec for ServiceNetworkSpec {
    const KIND: Kind = Kind::ServiceNetwork;

    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, v: &mut Validator) {
        v.name("name", &self.name);
        crate::policy::check_attached(v, self.auth_policy.as_ref());
    }

    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
}
