//! A [`PolicyDocument`] prepared for evaluation: patterns compiled, keys
//! resolved, statements split by effect. Built once per policy (per
//! snapshot), shared read-only by every request.

use super::document::{ConditionValues, Effect, PolicyDocument, Principal, Resource, Statement};
use super::keys::{ConditionKey, Operator};
use super::pattern::{Cidr, Glob};
use crate::error::ValidationErrors;

/// A compiled auth policy. Immutable, `Send + Sync`; evaluate it with
/// [`crate::policy::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Every statement, in document order.
    pub(super) statements: Box<[CompiledStatement]>,
    /// Indexes of the Deny statements, in document order.
    pub(super) denies: Box<[usize]>,
    /// Indexes of the Allow statements, in document order.
    pub(super) allows: Box<[usize]>,
}

impl CompiledPolicy {
    /// Compile a validated document. Cannot fail: validation has already
    /// checked everything compilation relies on.
    pub fn new(doc: &PolicyDocument) -> Self {
        let statements: Box<[CompiledStatement]> = doc
            .statements
            .iter()
            .enumerate()
            .map(|(i, s)| CompiledStatement::new(i, s))
            .collect();
        let of = |e: Effect| -> Box<[usize]> {
            statements
                .iter()
                .filter(|s| s.effect == e)
                .map(|s| s.index)
                .collect()
        };
        Self {
            denies: of(Effect::Deny),
            allows: of(Effect::Allow),
            statements,
        }
    }

    /// Validate and compile policy text in one step.
    pub fn parse(text: &str) -> Result<Self, ValidationErrors> {
        PolicyDocument::parse(text).map(|d| Self::new(&d))
    }

    /// Number of statements.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether the policy has no statement (never true for a validated one).
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The `Sid` of statement `index`, if it has one.
    pub fn sid(&self, index: usize) -> Option<&str> {
        self.statements.get(index).and_then(|s| s.sid.as_deref())
    }

    /// The effect of statement `index`.
    pub fn effect(&self, index: usize) -> Option<Effect> {
        self.statements.get(index).map(|s| s.effect)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CompiledStatement {
    /// Position in the document.
    pub(super) index: usize,
    pub(super) sid: Option<Box<str>>,
    pub(super) effect: Effect,
    pub(super) principals: Principals,
    /// Empty: every resource (`*`).
    pub(super) resources: Box<[CompiledResource]>,
    pub(super) conditions: Box<[CompiledCondition]>,
}

impl CompiledStatement {
    fn new(index: usize, s: &Statement) -> Self {
        let resources: Box<[CompiledResource]> = if s.resources.contains(&Resource::any()) {
            Box::new([])
        } else {
            s.resources.iter().map(CompiledResource::new).collect()
        };
        // Every condition must hold, so their order changes no result:
        // check the cheap ones first.
        let mut conditions: Vec<CompiledCondition> =
            s.conditions.iter().map(CompiledCondition::new).collect();
        conditions.sort_by_key(|c| cost(&c.key));
        Self {
            index,
            sid: s.sid.as_deref().map(Box::from),
            effect: s.effect,
            principals: Principals::new(s.effect, &s.principals),
            resources,
            conditions: conditions.into(),
        }
    }
}

/// Relative cost of reading a key from a request.
fn cost(key: &ConditionKey) -> u8 {
    match key {
        ConditionKey::RequestMethod
        | ConditionKey::RequestPort
        | ConditionKey::Service
        | ConditionKey::ServiceNetwork
        | ConditionKey::SourceAccount => 0,
        ConditionKey::RequestPath | ConditionKey::SourceWorkload | ConditionKey::SourceIp => 1,
        ConditionKey::RequestQueryString(_) => 2,
        ConditionKey::RequestHeader(_) => 3,
    }
}

/// Who a statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Principals {
    /// Every authenticated caller (`*`).
    pub(super) authenticated: bool,
    /// Callers without identity (`anonymous`, or `*` in a Deny).
    pub(super) anonymous: bool,
    /// Account ids.
    pub(super) accounts: Box<[Box<str>]>,
    /// SPIFFE id patterns.
    pub(super) workloads: Box<[WorkloadPattern]>,
}

impl Principals {
    fn new(effect: Effect, list: &[Principal]) -> Self {
        let any = list.contains(&Principal::Any);
        let mut accounts = Vec::new();
        let mut workloads = Vec::new();
        if !any {
            for p in list {
                match p {
                    Principal::Account(a) => accounts.push(Box::from(a.as_str())),
                    Principal::Workload(w) => workloads.push(WorkloadPattern::new(w)),
                    Principal::Any | Principal::Anonymous => {}
                }
            }
        }
        Self {
            authenticated: any,
            // `*` never *grants* anonymous access, but it always *refuses*
            // it: see the module documentation.
            anonymous: list.contains(&Principal::Anonymous) || (any && effect == Effect::Deny),
            accounts: accounts.into(),
            workloads: workloads.into(),
        }
    }

    /// Whether any authenticated caller at all could match.
    pub(super) fn admits_authenticated(&self) -> bool {
        self.authenticated || !self.accounts.is_empty() || !self.workloads.is_empty()
    }
}

/// A workload principal: the segmented glob over the SPIFFE id, and the
/// account segment when it is literal, compared first because it is short
/// and tells most callers apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WorkloadPattern {
    pub(super) account: Option<Box<str>>,
    pub(super) glob: Glob,
}

impl WorkloadPattern {
    fn new(pattern: &str) -> Self {
        // spiffe://<td>/account/<id>/workload/<name>, as validated.
        let account = pattern
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').nth(2))
            .filter(|id| !id.contains(['*', '?']))
            .map(Box::from);
        Self {
            account,
            glob: Glob::segmented(pattern),
        }
    }

    /// Whether the caller's workload id matches; `account` must be the
    /// account named in `workload` (as [`super::Caller`] requires).
    pub(super) fn matches(&self, account: &str, workload: &str) -> bool {
        self.account.as_deref().is_none_or(|a| a == account) && self.glob.matches(workload)
    }
}

/// One `Resource` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CompiledResource {
    pub(super) account: Option<Glob>,
    pub(super) service: Glob,
    pub(super) path: Option<Glob>,
}

impl CompiledResource {
    fn new(r: &Resource) -> Self {
        Self {
            account: r.account.as_deref().map(Glob::new),
            service: Glob::new(&r.service),
            path: r.path.as_deref().map(Glob::new),
        }
    }
}

/// One operator–key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CompiledCondition {
    pub(super) operator: Operator,
    pub(super) key: ConditionKey,
    /// The key as `explain` prints it (`trellis:RequestHeader/x-api-key`).
    pub(super) key_name: Box<str>,
    pub(super) test: Test,
}

impl CompiledCondition {
    fn new(c: &super::document::Condition) -> Self {
        let test = match (&c.values, c.operator) {
            (ConditionValues::Ips(ips), _) => Test::Ip(ips.clone().into()),
            (ConditionValues::Strings(v), Operator::StringLike | Operator::StringNotLike) => {
                Test::Like(v.iter().map(|s| Glob::new(s)).collect())
            }
            (
                ConditionValues::Strings(v),
                Operator::StringEqualsIgnoreCase | Operator::StringNotEqualsIgnoreCase,
            ) => Test::EqualsIgnoreCase(v.iter().map(|s| Box::from(s.as_str())).collect()),
            (ConditionValues::Strings(v), _) => {
                Test::Equals(v.iter().map(|s| Box::from(s.as_str())).collect())
            }
        };
        Self {
            operator: c.operator,
            key_name: c.key.to_string().into(),
            key: c.key.clone(),
            test,
        }
    }
}

/// The positive test of a condition; negated operators invert it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Test {
    Equals(Box<[Box<str>]>),
    EqualsIgnoreCase(Box<[Box<str>]>),
    Like(Box<[Glob]>),
    Ip(Box<[Cidr]>),
}

impl Test {
    /// Whether `value` satisfies the test (for string tests).
    pub(super) fn string(&self, value: &str) -> bool {
        match self {
            Test::Equals(v) => v.iter().any(|x| **x == *value),
            Test::EqualsIgnoreCase(v) => v.iter().any(|x| x.eq_ignore_ascii_case(value)),
            Test::Like(v) => v.iter().any(|g| g.matches(value)),
            Test::Ip(_) => false,
        }
    }
}
