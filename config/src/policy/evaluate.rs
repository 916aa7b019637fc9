//! Evaluation: one request against the network-level and service-level
//! policies, with Lattice's semantics (see the module documentation of
//! [`crate::policy`]).
//!
//! Nothing here allocates, except percent-decoding a query-string key or
//! value that contains `%` or `+`, when a condition asks for one, and
//! [`CompiledPolicy::explain`], which is not on the request path.

use super::compile::{CompiledCondition, CompiledPolicy, CompiledStatement, Principals, Test};
use super::document::Effect;
use super::keys::{ConditionKey, Operator};
use crate::network::AuthType;
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// Access to the request's headers, so the proxy can lend its own header
/// map without copying it (wrap `http::HeaderMap` in a newtype and call
/// `get_all(name)`).
pub trait HeaderLookup {
    /// Call `f` with each value of header `name` (given in lowercase), in
    /// order, until it returns `true`; return whether it did. An absent
    /// header has no value. Values that are not valid UTF-8 may be skipped.
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool;
}

fn pairs_any<N: AsRef<str>, V: AsRef<str>>(
    pairs: &[(N, V)],
    name: &str,
    f: &mut dyn FnMut(&str) -> bool,
) -> bool {
    pairs
        .iter()
        .any(|(n, v)| n.as_ref().eq_ignore_ascii_case(name) && f(v.as_ref()))
}

/// Headers as name–value pairs (names compared ignoring ASCII case), for
/// tests, benches and `explain`.
impl<N: AsRef<str>, V: AsRef<str>, const K: usize> HeaderLookup for [(N, V); K] {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        pairs_any(self, name, f)
    }
}

/// See the array implementation.
impl<N: AsRef<str>, V: AsRef<str>> HeaderLookup for Vec<(N, V)> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        pairs_any(self, name, f)
    }
}

/// A request without headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl HeaderLookup for NoHeaders {
    fn any_value(&self, _: &str, _: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
}

/// An authenticated caller: what its mesh certificate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'r> {
    /// Its twelve-digit account id.
    pub account: &'r str,
    /// Its SPIFFE id,
    /// `spiffe://<trust-domain>/account/<id>/workload/<name>`.
    pub workload: &'r str,
}

/// What a policy may look at, borrowed from the request being served.
#[derive(Clone, Copy)]
pub struct RequestFacts<'r> {
    /// The caller, or `None` for an anonymous one (no mesh certificate).
    pub caller: Option<Caller<'r>>,
    /// HTTP method, as sent (`GET`).
    pub method: &'r str,
    /// Path without the query string, exactly as the router matched it.
    pub path: &'r str,
    /// Raw query string without the `?` (empty when there is none).
    pub query: &'r str,
    /// The request headers.
    pub headers: &'r dyn HeaderLookup,
    /// The listener port the request arrived on.
    pub port: u16,
    /// The caller's IP address, when known.
    pub source_ip: Option<IpAddr>,
    /// Name of the service network the request came through, if any.
    pub service_network: Option<&'r str>,
    /// Name of the service called.
    pub service: &'r str,
    /// Account that owns the service called.
    pub service_account: &'r str,
}

impl fmt::Debug for RequestFacts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestFacts")
            .field("caller", &self.caller)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("port", &self.port)
            .field("source_ip", &self.source_ip)
            .field("service_network", &self.service_network)
            .field("service", &self.service)
            .field("service_account", &self.service_account)
            .finish_non_exhaustive()
    }
}

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
/// resource, conditions in document order).
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
                    || self.workloads.iter().any(|g| g.matches(c.workload))
            }
        }
    }
}

impl CompiledCondition {
    fn holds(&self, request: &RequestFacts<'_>) -> bool {
        let positive = match &self.test {
            Test::Ip(ranges) => request
                .source_ip
                .is_some_and(|ip| ranges.iter().any(|r| r.contains(ip))),
            test => any_value(&self.key, request, &mut |v| test.string(v)),
        };
        positive != self.operator.is_negated()
    }
}

/// Call `f` with each value `key` has in `request` until it returns true.
/// A key the request lacks has no value (so `f` is never called).
fn any_value(
    key: &ConditionKey,
    request: &RequestFacts<'_>,
    f: &mut dyn FnMut(&str) -> bool,
) -> bool {
    match key {
        ConditionKey::RequestMethod => f(request.method),
        ConditionKey::RequestPath => f(request.path),
        ConditionKey::RequestHeader(name) => request.headers.any_value(name, f),
        ConditionKey::RequestQueryString(k) => query_any(request.query, k, f),
        ConditionKey::RequestPort => {
            let mut buf = [0u8; 5];
            f(port_str(request.port, &mut buf))
        }
        ConditionKey::SourceAccount => request.caller.is_some_and(|c| f(c.account)),
        ConditionKey::SourceWorkload => request.caller.is_some_and(|c| f(c.workload)),
        ConditionKey::ServiceNetwork => request.service_network.is_some_and(f),
        ConditionKey::Service => f(request.service),
        // Validation only lets IP operators use this key.
        ConditionKey::SourceIp => false,
    }
}

/// `port` in decimal, written into `buf`.
fn port_str(port: u16, buf: &mut [u8; 5]) -> &str {
    let mut i = buf.len();
    let mut n = port;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// Values of query parameter `key` (keys and values percent-decoded, `+`
/// as space; a parameter without `=` has the empty value).
fn query_any(query: &str, key: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
    query.split('&').filter(|p| !p.is_empty()).any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        decode(k) == key && f(&decode(v))
    })
}

/// Percent-decode `s` (form encoding: `+` is a space). Borrows when there
/// is nothing to decode; a `%` not followed by two hex digits stays as it
/// is; bytes that are not UTF-8 become U+FFFD.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_print_without_allocating() {
        let mut buf = [0u8; 5];
        assert_eq!(port_str(0, &mut buf), "0");
        assert_eq!(port_str(8, &mut buf), "8");
        assert_eq!(port_str(80, &mut buf), "80");
        assert_eq!(port_str(65535, &mut buf), "65535");
    }

    #[test]
    fn query_values_are_decoded() {
        let values = |q: &str, k: &str| {
            let mut out = Vec::new();
            query_any(q, k, &mut |v| {
                out.push(v.to_string());
                false
            });
            out
        };
        assert_eq!(values("a=1&b=2&a=3", "a"), ["1", "3"]);
        assert_eq!(values("admin=%74rue", "admin"), ["true"]);
        assert_eq!(values("%61dmin=x", "admin"), ["x"]);
        assert_eq!(values("q=a+b%2Fc", "q"), ["a b/c"]);
        assert_eq!(values("flag&x=1", "flag"), [""]);
        assert_eq!(values("p=100%", "p"), ["100%"]);
        assert_eq!(values("p=%4", "p"), ["%4"]);
        assert_eq!(values("p=%zz", "p"), ["%zz"]);
        assert_eq!(
            values("A=1", "a"),
            Vec::<String>::new(),
            "keys are case-sensitive"
        );
        assert_eq!(values("", "a"), Vec::<String>::new());
    }
}
