//! What one request is checked against ([`Subject`]), its verdict, and
//! the per-statement trace `explain` shows, all from the same evaluation.

use super::{LevelPolicy, ServiceEntry};
use crate::error::{Failure, Reason};
use std::net::IpAddr;
use trellis_config::AuthType;
use trellis_config::policy::{
    Caller, Decision, DenyCause, HeaderLookup, Level, LevelAllow, RequestFacts, StatementTrace,
    evaluate,
};

/// The network(s) a request is checked against, as positions in
/// [`super::Policies`]' network list.
#[derive(Debug, Clone, Copy)]
pub(super) enum Candidates<'a> {
    /// The one the host (or the calling proxy) named.
    One(usize),
    /// Every network of the service (a custom domain): all must allow.
    All(&'a [usize]),
}

/// What one request is checked against: its service, the network(s) it
/// came through, and the listener port.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub(super) service: &'a ServiceEntry,
    pub(super) networks: Candidates<'a>,
    pub(super) all: &'a [LevelPolicy],
    pub(super) port: u16,
}

/// The request's own facts; [`Subject`] adds the service, the network and
/// the port.
#[derive(Clone, Copy)]
pub struct RequestParts<'r> {
    /// The caller, `None` when anonymous.
    pub caller: Option<Caller<'r>>,
    /// Method as sent.
    pub method: &'r str,
    /// Path without the query.
    pub path: &'r str,
    /// Raw query, without `?`.
    pub query: &'r str,
    /// The headers.
    pub headers: &'r dyn HeaderLookup,
    /// The caller's address.
    pub source_ip: Option<IpAddr>,
}

/// The outcome for one request: the decision and the network it was
/// checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// What evaluation decided.
    pub decision: Decision<'a>,
    /// Name of the network whose policy took part, if any.
    pub network: Option<&'a str>,
}

/// One level's statements and their verdicts, for `explain`.
#[derive(Debug, Clone)]
pub struct LevelTrace<'a> {
    /// Network or service.
    pub level: Level,
    /// Its name.
    pub name: &'a str,
    /// Its auth type.
    pub auth_type: AuthType,
    /// Whether a policy is attached.
    pub has_policy: bool,
    /// Each statement's verdict, in document order (empty without a
    /// policy, or with auth type `NONE`: not evaluated).
    pub statements: Vec<StatementTrace<'a>>,
}

impl<'a> Subject<'a> {
    /// Whether any level has a check (auth type `IAM`); when not, the
    /// request passes without gathering its facts.
    pub fn needs_check(&self) -> bool {
        self.service.guarded
            && (self.service.level.checks() || self.networks().any(LevelPolicy::checks))
    }

    /// The service's name.
    pub fn service_name(&self) -> &'a str {
        &self.service.level.name
    }

    fn networks(&self) -> impl Iterator<Item = &'a LevelPolicy> + 'a {
        let all = self.all;
        let ids: &'a [usize] = match self.networks {
            Candidates::One(_) => &[],
            Candidates::All(ids) => ids,
        };
        let one = match self.networks {
            Candidates::One(i) => all.get(i),
            Candidates::All(_) => None,
        };
        one.into_iter()
            .chain(ids.iter().filter_map(move |&i| all.get(i)))
    }

    fn facts<'r>(&self, parts: &RequestParts<'r>, network: Option<&'r str>) -> RequestFacts<'r>
    where
        'a: 'r,
    {
        RequestFacts {
            caller: parts.caller,
            method: parts.method,
            path: parts.path,
            query: parts.query,
            headers: parts.headers,
            port: self.port,
            source_ip: parts.source_ip,
            service_network: network,
            service: &self.service.level.name,
            service_account: &self.service.level.account,
        }
    }

    /// Decide `parts` at every level. With several candidate networks,
    /// every one must allow; the first refusal is returned.
    pub fn evaluate(&self, parts: &RequestParts<'_>) -> Verdict<'a> {
        let service = self.service.level.arg();
        let mut first: Option<Verdict<'a>> = None;
        for net in self.networks() {
            let decision = evaluate(net.arg(), service, &self.facts(parts, Some(&net.name)));
            let v = Verdict {
                decision,
                network: Some(&net.name),
            };
            if !decision.is_allowed() {
                return v;
            }
            first.get_or_insert(v);
        }
        first.unwrap_or_else(|| Verdict {
            decision: evaluate(None, service, &self.facts(parts, None)),
            network: None,
        })
    }

    /// [`Subject::evaluate`] with every statement's verdict at every level
    /// (the networks first), computed by the same matching code.
    pub fn explain(&self, parts: &RequestParts<'_>) -> (Verdict<'a>, Vec<LevelTrace<'a>>) {
        let verdict = self.evaluate(parts);
        let trace = |level: Level, l: &'a LevelPolicy, network: Option<&str>| LevelTrace {
            level,
            name: &l.name,
            auth_type: l.auth_type,
            has_policy: l.policy.is_some(),
            statements: match (&l.policy, l.auth_type) {
                (Some(p), AuthType::Iam) => p.explain(&self.facts(parts, network)),
                _ => Vec::new(),
            },
        };
        let mut out: Vec<LevelTrace<'a>> = self
            .networks()
            .map(|n| trace(Level::Network, n, Some(&n.name)))
            .collect();
        out.push(trace(Level::Service, &self.service.level, verdict.network));
        (verdict, out)
    }
}

impl Verdict<'_> {
    /// The failure to answer, `None` when allowed: 403 `access_denied` or
    /// 401 `unauthenticated`, with the level and statement in the message
    /// and in [`AUTH_DENIED_HEADER`].
    pub fn failure(&self, service: &str) -> Option<Failure> {
        let (reason, summary) = match self.decision {
            Decision::Allowed { .. } => return None,
            Decision::Denied { .. } => (Reason::AccessDenied, self.summary()),
            Decision::Unauthenticated { .. } => (Reason::Unauthenticated, self.summary()),
        };
        let network = self.network.unwrap_or("-");
        let message = format!(
            "service '{service}' (network '{network}'): {}",
            self.decision
        );
        Some(Failure::new(reason, message).with_auth_denied(summary))
    }

    /// `<level>; <statement or cause>`: what [`AUTH_DENIED_HEADER`] and the
    /// access log's `authDeniedReason` say. Only `Sid`s (letters, digits,
    /// `-`, `_`) and fixed words, so it is always a valid header value.
    pub fn summary(&self) -> String {
        match self.decision {
            Decision::Allowed { network, service } => {
                let a = |l: LevelAllow<'_>| match l {
                    LevelAllow::NotChecked => "not checked".to_string(),
                    LevelAllow::Statement(s) => s.to_string(),
                };
                format!("allowed; network {}, service {}", a(network), a(service))
            }
            Decision::Denied {
                level,
                cause: DenyCause::Statement(s),
            } => format!("{level}; {s}"),
            Decision::Denied {
                level,
                cause: DenyCause::NoMatchingAllow,
            } => format!("{level}; no statement allows"),
            Decision::Denied {
                level,
                cause: DenyCause::NoPolicy,
            } => format!("{level}; IAM without a policy"),
            Decision::Unauthenticated { level } => {
                format!("{level}; needs an authenticated caller")
            }
        }
    }
}

impl Subject<'_> {
    /// The network id a calling proxy names to the fronting one
    /// ([`X_TRELLIS_NETWORK`]): the one the host named, else the first
    /// candidate (a custom domain of a service in several networks is
    /// checked against all of them here, against that one there).
    pub fn network_id(&self) -> Option<&str> {
        self.networks().next().map(|n| &*n.id)
    }

    /// The service's id.
    pub fn service_id(&self) -> &str {
        &self.service.level.id
    }

    /// The listener port.
    pub fn port(&self) -> u16 {
        self.port
    }
}
