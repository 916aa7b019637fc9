//! A policy document after validation: every field checked, every string
//! classified. [`PolicyDocument::parse`] and [`PolicyDocument::from_value`]
//! validate; the fields are public for readers (`explain`, tests), and a
//! document assembled by hand is unchecked, though
//! [`crate::policy::CompiledPolicy::new`] compiles any document without
//! failing.

use super::keys::{ConditionKey, Operator};
use super::pattern::Cidr;
use crate::error::ValidationErrors;

/// Largest policy, in bytes of JSON text: 10 KB, Lattice's quota for an
/// auth policy. A document given as a JSON value is measured in its compact
/// serialization.
pub const MAX_POLICY_BYTES: usize = 10 * 1024;
/// The only policy language version, as in IAM (`Version` may be omitted).
pub const POLICY_VERSION: &str = "2012-10-17";
/// The one action: calling a service.
pub const ACTION_INVOKE: &str = "trellis:Invoke";
/// Principal of callers without a mesh identity.
pub const ANONYMOUS: &str = "anonymous";
/// Longest `Sid`.
pub const MAX_SID_LEN: usize = 100;

/// A valid auth policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    /// `Version`, when given (always [`POLICY_VERSION`]).
    pub version: Option<String>,
    /// `Id`, when given (free text, not used).
    pub id: Option<String>,
    /// The statements in document order; never empty.
    pub statements: Vec<Statement>,
}

impl PolicyDocument {
    /// Parse and validate policy text (JSON, at most
    /// [`MAX_POLICY_BYTES`]). Every problem is reported, each with its field
    /// path, such as
    /// `Statement[1].Condition.StringLike.trellis:Bogus: unknown condition key; …`.
    pub fn parse(text: &str) -> Result<Self, ValidationErrors> {
        super::validate::parse_text(text)
    }

    /// Validate a policy already parsed as JSON (for example embedded in an
    /// API request body).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, ValidationErrors> {
        super::validate::parse_value(value)
    }
}

/// Whether a statement grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Grants the request, unless a Deny applies too.
    Allow,
    /// Refuses the request, whatever else allows it.
    Deny,
}

impl Effect {
    /// `Allow` or `Deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        }
    }
}

/// One statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// `Sid`: letters, digits, `-` and `_`, unique within the policy.
    pub sid: Option<String>,
    /// `Effect`.
    pub effect: Effect,
    /// `Principal`: who the statement is about (any may match).
    pub principals: Vec<Principal>,
    /// `Resource`: which services and paths (any may match).
    pub resources: Vec<Resource>,
    /// `Condition`: every condition must hold.
    pub conditions: Vec<Condition>,
}

/// One entry of `Principal`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// `*`: every authenticated caller in an Allow; every caller, anonymous
    /// ones included, in a Deny.
    Any,
    /// `anonymous`: callers without a mesh identity.
    Anonymous,
    /// A twelve-digit account id: every workload of that account.
    Account(String),
    /// A workload SPIFFE id pattern,
    /// `spiffe://<trust-domain>/account/<id>/workload/<name>`, where `*`
    /// and `?` match within one path segment.
    Workload(String),
}

/// One entry of `Resource`. Patterns are globs; a missing part matches
/// everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    /// Pattern of the account that owns the service; `None` = any.
    pub account: Option<String>,
    /// Pattern of the service name (never crosses a `/`).
    pub service: String,
    /// Pattern of the request path, starting with `/` or a wildcard;
    /// `None` = any path.
    pub path: Option<String>,
}

impl Resource {
    /// `*`: every service of every account, every path.
    pub fn any() -> Self {
        Self {
            account: None,
            service: "*".into(),
            path: None,
        }
    }
}

/// One operator–key pair of `Condition` with its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The operator.
    pub operator: Operator,
    /// The key.
    pub key: ConditionKey,
    /// The values (alternatives); never empty.
    pub values: ConditionValues,
}

/// Values of a condition, typed by the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionValues {
    /// String operators: literals or globs.
    Strings(Vec<String>),
    /// IP operators: ranges.
    Ips(Vec<Cidr>),
}
