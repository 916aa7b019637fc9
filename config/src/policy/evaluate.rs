//! Evaluation: one request against the network-level and service-level
//! policies, with Lattice's semantics (see the module documentation of
//! [`crate::policy`]).
//!
//! Nothing here allocates, except percent-decoding a query-string key or
//! value that contains `%` or `+`, when a condition asks for one, and
//! [`CompiledPolicy::explain`], which is not on the request path.

use super::compile::{CompiledCondition, CompiledPolicy, CompiledStatement, Principals, Test};
use super::decision::{
    Decision, DenyCause, Level, LevelAllow, StatementMatch, StatementRef, StatementTrace,
};
use super::document::Effect;
use super::facts::{Caller, RequestFacts, port_str, query_any};
use super::keys::ConditionKey;
use crate::network::AuthType;

impl CompiledPolicy {
    /// Every statement's verdict on `request`, in document order, computed
    /// by the same code [`evaluate`] runs. For `explain`, not per request.
    pub fn explain<'p>(&'p self, request: &RequestFacts<'_>) -> Vec<StatementTrace<'p>> {
        self.statements
            .iter()
            .map(|s| StatementTrace {
                statement: s.reference(),
                effect: s.effect,
                outcome: s.check(request),
            })
            .collect()
    }

    /// This policy's verdict alone: Deny statements first (any applying one
    /// refuses), then Allow statements (the first applying one allows).
    fn decide<'p>(&'p self, request: &RequestFacts<'_>) -> Outcome<'p> {
        for &i in &*self.denies {
            let s = &self.statements[i];
            if s.check(request) == StatementMatch::Applies {
                return Outcome::Denied(DenyCause::Statement(s.reference()));
            }
        }
        let mut needs_auth = false;
        for &i in &*self.allows {
            let s = &self.statements[i];
            match s.check(request) {
                StatementMatch::Applies => return Outcome::Allowed(s.reference()),
                StatementMatch::NeedsAuthentication => needs_auth = true,
                _ => {}
            }
        }
        Outcome::NoAllow { needs_auth }
    }
}

/// One level's verdict.
#[derive(Debug, Clone, Copy)]
enum Outcome<'p> {
    NotChecked,
    Allowed(StatementRef<'p>),
    Denied(DenyCause<'p>),
    /// No Deny and no Allow applied; `needs_auth`: an Allow would apply to
    /// an authenticated caller.
    NoAllow {
        needs_auth: bool,
    },
}

fn outcome<'p>(
    level: Option<(&AuthType, Option<&'p CompiledPolicy>)>,
    request: &RequestFacts<'_>,
) -> Outcome<'p> {
    match level {
        None | Some((AuthType::None, _)) => Outcome::NotChecked,
        Some((AuthType::Iam, None)) => Outcome::Denied(DenyCause::NoPolicy),
        Some((AuthType::Iam, Some(p))) => p.decide(request),
    }
}

/// Decide whether `request` may call its service.
///
/// Each level is `None` when it does not apply (no service network on the
/// way), else its auth type and its policy, if one is attached. An
/// applying Deny statement at either level refuses (403, the network's
/// first). Otherwise every level whose auth type is `IAM` must allow: no
/// policy refuses (403); no applying Allow refuses (401 for an anonymous
/// caller that some Allow would admit if authenticated, 403 otherwise).
pub fn evaluate<'p>(
    network: Option<(&AuthType, Option<&'p CompiledPolicy>)>,
    service: Option<(&AuthType, Option<&'p CompiledPolicy>)>,
    request: &RequestFacts<'_>,
) -> Decision<'p> {
    let net = outcome(network, request);
    if let Outcome::Denied(cause @ DenyCause::Statement(_)) = net {
        return Decision::Denied {
            level: Level::Network,
            cause,
        };
    }
    let svc = outcome(service, request);
    if let Outcome::Denied(cause @ DenyCause::Statement(_)) = svc {
        return Decision::Denied {
            level: Level::Service,
            cause,
        };
    }
    let allow = |o: Outcome<'p>| match o {
        Outcome::NotChecked => Some(LevelAllow::NotChecked),
        Outcome::Allowed(s) => Some(LevelAllow::Statement(s)),
        Outcome::Denied(_) | Outcome::NoAllow { .. } => None,
    };
    if let (Some(network), Some(service)) = (allow(net), allow(svc)) {
        return Decision::Allowed { network, service };
    }
    // At least one level refused implicitly. Report the first refusal that
    // authenticating would not cure; if every refusal would be cured, 401.
    let levels = [(Level::Network, net), (Level::Service, svc)];
    let hard = levels.iter().find_map(|&(level, o)| match o {
        Outcome::Denied(cause) => Some((level, cause)),
        Outcome::NoAllow { needs_auth: false } => Some((level, DenyCause::NoMatchingAllow)),
        _ => None,
    });
    if let Some((level, cause)) = hard {
        return Decision::Denied { level, cause };
    }
    let level = levels
        .iter()
        .find(|(_, o)| matches!(o, Outcome::NoAllow { .. }))
        .map_or(Level::Network, |(l, _)| *l);
    // `needs_auth` is only ever true for anonymous callers.
    Decision::Unauthenticated { level }
}

impl CompiledStatement {
    fn reference(&self) -> StatementRef<'_> {
        StatementRef {
            index: self.index,
            sid: self.sid.as_deref(),
        }
    }

    /// The one matching routine: [`evaluate`] and `explain` both use it.
    fn check(&self, request: &RequestFacts<'_>) -> StatementMatch<'_> {
        if !self.principals.matches(request.caller) {
            let cured_by_auth = request.caller.is_none()
                && self.effect == Effect::Allow
                && self.principals.admits_authenticated()
                && self.resource_matches(request)
                && self.failing_condition(request, true).is_none();
            return if cured_by_auth {
                StatementMatch::NeedsAuthentication
            } else {
                StatementMatch::Principal
            };
        }
        if !self.resource_matches(request) {
            return StatementMatch::Resource;
        }
        match self.failing_condition(request, false) {
            Some(c) => StatementMatch::Condition {
                operator: c.operator,
                key: &c.key_name,
            },
            None => StatementMatch::Applies,
        }
    }

    fn resource_matches(&self, request: &RequestFacts<'_>) -> bool {
        self.resources.is_empty()
            || self.resources.iter().any(|r| {
                r.service.matches(request.service)
                    && r.path.as_ref().is_none_or(|g| g.matches(request.path))
                    && r.account
                        .as_ref()
                        .is_none_or(|g| g.matches(request.service_account))
            })
    }

    /// The first condition that does not hold. With `assume_identity`,
    /// conditions on the caller's identity count as holding (an
    /// authenticated caller might satisfy them).
    fn failing_condition(
        &self,
        request: &RequestFacts<'_>,
        assume_identity: bool,
    ) -> Option<&CompiledCondition> {
        self.conditions
            .iter()
            .filter(|c| !(assume_identity && c.key.is_identity()))
            .find(|c| !c.holds(request))
    }
}

impl Principals {
    fn matches(&self, caller: Option<Caller<'_>>) -> bool {
        match caller {
            None => self.anonymous,
            Some(c) => {
                self.authenticated
                    || self.accounts.iter().any(|a| **a == *c.account)
                    || self
                        .workloads
                        .iter()
                        .any(|w| w.matches(c.account, c.workload))
            }
        }
    }
}

impl CompiledCondition {
    /// Whether the condition holds. The positive test holds when some value
    /// of the key passes; a key the request lacks has no value.
    fn holds(&self, request: &RequestFacts<'_>) -> bool {
        let test = &self.test;
        let positive = match (test, &self.key) {
            (Test::Ip(ranges), _) => request
                .source_ip
                .is_some_and(|ip| ranges.iter().any(|r| r.contains(ip))),
            // Multi-valued keys: through a callback.
            (_, ConditionKey::RequestHeader(name)) => {
                request.headers.any_value(name, &mut |v| test.string(v))
            }
            (_, ConditionKey::RequestQueryString(k)) => {
                query_any(request.query, k, &mut |v| test.string(v))
            }
            (_, ConditionKey::RequestPort) => {
                let mut buf = [0u8; 5];
                test.string(port_str(request.port, &mut buf))
            }
            // Single-valued keys: directly.
            (_, ConditionKey::RequestMethod) => test.string(request.method),
            (_, ConditionKey::RequestPath) => test.string(request.path),
            (_, ConditionKey::Service) => test.string(request.service),
            (_, ConditionKey::ServiceNetwork) => {
                request.service_network.is_some_and(|n| test.string(n))
            }
            (_, ConditionKey::SourceAccount) => {
                request.caller.is_some_and(|c| test.string(c.account))
            }
            (_, ConditionKey::SourceWorkload) => {
                request.caller.is_some_and(|c| test.string(c.workload))
            }
            // Validation only lets IP operators use this key.
            (_, ConditionKey::SourceIp) => false,
        };
        positive != self.operator.is_negated()
    }
}
