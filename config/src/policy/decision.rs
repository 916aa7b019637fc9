//! What evaluation says: the decision, the level and the statement that
//! made it, and each statement's verdict for `explain`. Nothing here holds
//! policy text.

use super::document::Effect;
use super::keys::Operator;
use std::fmt;

/// Where a policy is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// The service network's policy.
    Network,
    /// The service's own policy.
    Service,
}

impl Level {
    /// `network` or `service`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Network => "network",
            Level::Service => "service",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which statement of a policy: its position and its `Sid`. Never the
/// statement's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementRef<'p> {
    /// Position in the policy's `Statement` list, from 0.
    pub index: usize,
    /// Its `Sid`, if it has one.
    pub sid: Option<&'p str>,
}

impl fmt::Display for StatementRef<'_> {
    /// `Statement[2] (DenyPost)`, or `Statement[2]` without a Sid: the
    /// same path validation errors use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Statement[{}]", self.index)?;
        if let Some(sid) = self.sid {
            write!(f, " ({sid})")?;
        }
        Ok(())
    }
}

/// How one level let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelAllow<'p> {
    /// No check at this level: auth type `NONE`, or no such level (a
    /// request that did not come through a service network).
    NotChecked,
    /// This Allow statement applied (the first in document order).
    Statement(StatementRef<'p>),
}

/// Why a level refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyCause<'p> {
    /// This Deny statement applied (the first in document order).
    Statement(StatementRef<'p>),
    /// No Allow statement applied (the implicit deny).
    NoMatchingAllow,
    /// The auth type is `IAM` and no policy is attached.
    NoPolicy,
}

/// The outcome of evaluating a request. It names the level and the
/// statement that decided, for the access log, the `x-trellis-error`
/// reason and `explain`; it never carries policy text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'p> {
    /// Every checked level allowed the request and no Deny applied.
    Allowed {
        /// How the network level let it through.
        network: LevelAllow<'p>,
        /// How the service level let it through.
        service: LevelAllow<'p>,
    },
    /// Refused (HTTP 403).
    Denied {
        /// The level that refused (the network when both did).
        level: Level,
        /// Why.
        cause: DenyCause<'p>,
    },
    /// Refused because the caller is anonymous and every refusing level
    /// has an Allow statement an authenticated caller could satisfy
    /// (HTTP 401).
    Unauthenticated {
        /// The first level that wants an authenticated caller.
        level: Level,
    },
}

impl Decision<'_> {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// The status the proxy answers: `None` when allowed, 401 or 403.
    pub fn status(&self) -> Option<u16> {
        match self {
            Decision::Allowed { .. } => None,
            Decision::Denied { .. } => Some(403),
            Decision::Unauthenticated { .. } => Some(401),
        }
    }
}

impl fmt::Display for Decision<'_> {
    /// One line for logs and error bodies, e.g. `denied by the service
    /// policy: Statement[2] (DenyPost)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allow = |a: &LevelAllow<'_>| match a {
            LevelAllow::NotChecked => "not checked".to_string(),
            LevelAllow::Statement(s) => s.to_string(),
        };
        match self {
            Decision::Allowed { network, service } => write!(
                f,
                "allowed: network {}, service {}",
                allow(network),
                allow(service)
            ),
            Decision::Denied {
                level,
                cause: DenyCause::Statement(s),
            } => write!(f, "denied by the {level} policy: {s}"),
            Decision::Denied {
                level,
                cause: DenyCause::NoMatchingAllow,
            } => write!(
                f,
                "denied by the {level} policy: no statement allows the request"
            ),
            Decision::Denied {
                level,
                cause: DenyCause::NoPolicy,
            } => write!(f, "denied at the {level}: auth type IAM and no auth policy"),
            Decision::Unauthenticated { level } => write!(
                f,
                "the {level} policy admits only authenticated callers, and the request has no mesh identity"
            ),
        }
    }
}

/// How one statement relates to a request: whether it applies, and if not,
/// the first part that does not match (checked in this order: principal,
/// resource, then the conditions, cheapest to read first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementMatch<'p> {
    /// Every part matches: the statement's effect applies.
    Applies,
    /// The caller is not one of its principals.
    Principal,
    /// An Allow whose principals are all authenticated, and whose other
    /// parts match for this anonymous caller: it would apply to an
    /// authenticated one.
    NeedsAuthentication,
    /// The service or path is not one of its resources.
    Resource,
    /// This condition does not hold.
    Condition {
        /// Its operator.
        operator: Operator,
        /// Its key, canonically spelled (`trellis:RequestHeader/x-api-key`).
        key: &'p str,
    },
}

/// One statement's verdict, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementTrace<'p> {
    /// The statement.
    pub statement: StatementRef<'p>,
    /// Its effect.
    pub effect: Effect,
    /// Whether it applies, and if not why.
    pub outcome: StatementMatch<'p>,
}
