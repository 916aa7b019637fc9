//! Auth policies in the proxy: compiled once per snapshot ([`Policies`]),
//! evaluated per request with VPC Lattice's semantics
//! ([`trellis_config::policy`] has the language and the rules).
//!
//! # Where a request is checked
//!
//! In front of the target, with the caller's identity:
//!
//! - **Inbound** (a target this proxy fronts, called through another
//!   proxy): the calling proxy names the route it took in
//!   [`X_TRELLIS_SERVICE`], [`X_TRELLIS_NETWORK`] and [`X_TRELLIS_PORT`].
//!   The inbound accepts the claim only when that service forwards to a
//!   target group holding the requested target, is associated with that
//!   network and has a listener on that port ([`Policies::inbound`]);
//!   then it evaluates the service's and the network's policies with the
//!   caller from [`crate::identity::PeerIdentity`]. The headers are
//!   removed before the request goes on. A request that names no service
//!   is let through only when no service that reaches the target has a
//!   check, or when it is a health check (`GET` of a health-check path of
//!   a group holding the target, with the checker's `User-Agent`); callers
//!   cannot skip a policy by leaving the headers out.
//! - **Outbound** (the caller's own proxy): for a fixed response, and for
//!   a target group with a target that no other proxy fronts (no `via`:
//!   the outbound sends to it directly, so no one else could check). The
//!   caller is this proxy's own workload identity (see
//!   `listen::outbound::own_identity`). Groups all of whose targets are
//!   fronted elsewhere are checked there, not here.
//!
//! # Which network
//!
//! A generated host name (`<service>.<network>.trellis.internal`) names
//! the network. A custom domain of a service in several networks of the
//! proxy's scope is checked against each of them and must pass all (the
//! first refusal, in network id order, is reported), so a custom domain
//! never opens a way around a network's policy.
//!
//! # Costs
//!
//! A service without `IAM` at any level costs a hash lookup and a flag
//! test per request; facts are only gathered for services with a check.

use crate::error::{Failure, Reason};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use trellis_config::identity::WorkloadIdentity;
use trellis_config::limits::DNS_SUFFIX;
use trellis_config::policy::{
    Caller, CompiledPolicy, Decision, DenyCause, HeaderLookup, Level, LevelAllow, RequestFacts,
    StatementTrace, compile_attached, evaluate,
};
use trellis_config::{AuthType, Snapshot};

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;

/// Set by an outbound proxy on a request to a fronting proxy: the id of
/// the service the request was routed to. Stripped by the inbound proxy.
pub const X_TRELLIS_SERVICE: HeaderName = HeaderName::from_static("x-trellis-service");
/// ... the id of the service network it came through (absent when none).
pub const X_TRELLIS_NETWORK: HeaderName = HeaderName::from_static("x-trellis-network");
/// ... the service listener's port (`trellis:RequestPort`).
pub const X_TRELLIS_PORT: HeaderName = HeaderName::from_static("x-trellis-port");
/// Response header of a 401/403 made by an auth policy: the level and the
/// statement (or cause) that refused, e.g. `service; Statement[1] (DenyPost)`.
/// Never policy text.
pub const AUTH_DENIED_HEADER: HeaderName = HeaderName::from_static("x-trellis-auth-denied");

/// Lends an `http::HeaderMap` to policy conditions without copying it.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a>(pub &'a HeaderMap);

impl HeaderLookup for Headers<'_> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(f)
    }
}

/// Why a snapshot's policies could not be prepared (the proxy then keeps
/// its previous snapshot). The control plane validates every policy on
/// write, so this means a snapshot from a newer control plane.
#[derive(Debug, thiserror::Error)]
#[error("the auth policy of {what} '{name}' is invalid: {errors}")]
pub struct BuildError {
    /// `service` or `service network`.
    pub what: &'static str,
    /// Its name.
    pub name: String,
    /// The problems.
    pub errors: trellis_config::ValidationErrors,
}

/// One level's settings: a network's or a service's auth type and
/// compiled policy.
#[derive(Debug)]
pub struct LevelPolicy {
    /// Resource id.
    pub id: Box<str>,
    /// Name (what `trellis:Service` / `trellis:ServiceNetwork` see).
    pub name: Box<str>,
    /// Owning account.
    pub account: Box<str>,
    /// `NONE`: no check at this level.
    pub auth_type: AuthType,
    /// The compiled policy, if one is attached.
    pub policy: Option<CompiledPolicy>,
}

impl LevelPolicy {
    fn new(
        what: &'static str,
        (id, name, account): (&str, &str, &str),
        auth_type: AuthType,
        policy: Option<&serde_json::Value>,
    ) -> Result<Self, BuildError> {
        let policy = policy
            .map(|p| {
                compile_attached(p).map_err(|errors| BuildError {
                    what,
                    name: name.to_string(),
                    errors,
                })
            })
            .transpose()?;
        Ok(Self {
            id: id.into(),
            name: name.into(),
            account: account.into(),
            auth_type,
            policy,
        })
    }

    fn checks(&self) -> bool {
        self.auth_type == AuthType::Iam
    }

    fn arg(&self) -> Option<(&AuthType, Option<&CompiledPolicy>)> {
        Some((&self.auth_type, self.policy.as_ref()))
    }
}

#[derive(Debug)]
struct ServiceEntry {
    level: LevelPolicy,
    /// Indexes into [`Policies::networks`], in network id order.
    networks: Box<[usize]>,
    /// Whether any level has a check.
    guarded: bool,
}

#[derive(Debug)]
struct FrontedEntry {
    service: ServiceEntry,
    ports: Box<[u16]>,
    /// `address:port` of the targets this proxy fronts that it reaches.
    targets: HashSet<Box<str>>,
}

/// Every auth policy of one snapshot, compiled: built once per push,
/// shared read-only by every request.
#[derive(Debug, Default)]
pub struct Policies {
    /// In-scope and fronted services' networks, by position.
    networks: Vec<LevelPolicy>,
    /// Services this proxy routes (outbound), by id.
    services: HashMap<Box<str>, ServiceEntry>,
    /// Services that reach targets this proxy fronts (inbound), by id.
    fronted: HashMap<Box<str>, FrontedEntry>,
    /// Fronted targets that a service with a check reaches.
    guarded_targets: HashSet<Box<str>>,
    /// Health-check paths of the groups holding each fronted target.
    probe_paths: HashMap<Box<str>, Vec<Box<str>>>,
    /// Target groups the outbound sends to directly (some target has no
    /// `via`): requests to them are checked by the outbound.
    checked_here: HashSet<Box<str>>,
    /// Target groups with a target behind another proxy: requests to them
    /// carry the route headers.
    via_groups: HashSet<Box<str>>,
}

impl Policies {
    /// Compile every policy of `snapshot` for the proxy called `proxy`.
    pub fn build(snapshot: &Snapshot, proxy: &str) -> Result<Self, BuildError> {
        let mut p = Policies::default();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for n in snapshot.networks.iter().chain(&snapshot.fronted_networks) {
            if index.contains_key(n.id.as_str()) {
                continue;
            }
            index.insert(&n.id, p.networks.len());
            p.networks.push(LevelPolicy::new(
                "service network",
                (&n.id, &n.name, &n.account),
                n.auth_type,
                n.auth_policy.as_ref(),
            )?);
        }
        let entry = |p: &Policies, level: LevelPolicy, ids: &[String]| {
            let mut networks: Vec<usize> = ids
                .iter()
                .filter_map(|id| index.get(id.as_str()).copied())
                .collect();
            networks.sort_by(|a, b| p.networks[*a].id.cmp(&p.networks[*b].id));
            let guarded = level.checks() || networks.iter().any(|&i| p.networks[i].checks());
            ServiceEntry {
                level,
                networks: networks.into(),
                guarded,
            }
        };
        for s in &snapshot.services {
            let level = LevelPolicy::new(
                "service",
                (&s.id, &s.name, &s.account),
                s.auth_type,
                s.auth_policy.as_ref(),
            )?;
            let e = entry(&p, level, &s.networks);
            p.services.insert(s.id.as_str().into(), e);
        }
        let mut fronted_by_group: HashMap<&str, HashSet<Box<str>>> = HashMap::new();
        for g in &snapshot.target_groups {
            let mine: HashSet<Box<str>> = g
                .targets
                .iter()
                .filter(|t| t.via.is_none() && t.proxy.as_deref() == Some(proxy))
                .map(|t| t.authority().into())
                .collect();
            if g.health_check.enabled {
                for t in &mine {
                    p.probe_paths
                        .entry(t.clone())
                        .or_default()
                        .push(g.health_check.path.as_str().into());
                }
            }
            if !mine.is_empty() {
                fronted_by_group.insert(&g.id, mine);
            }
            if g.targets.iter().any(|t| t.via.is_none()) {
                p.checked_here.insert(g.id.as_str().into());
            }
            if g.targets.iter().any(|t| t.via.is_some()) {
                p.via_groups.insert(g.id.as_str().into());
            }
        }
        for f in &snapshot.fronted_services {
            let level = LevelPolicy::new(
                "service",
                (&f.id, &f.name, &f.account),
                f.auth_type,
                f.auth_policy.as_ref(),
            )?;
            let service = entry(&p, level, &f.networks);
            let targets: HashSet<Box<str>> = f
                .target_groups
                .iter()
                .filter_map(|g| fronted_by_group.get(g.as_str()))
                .flatten()
                .cloned()
                .collect();
            if service.guarded {
                p.guarded_targets.extend(targets.iter().cloned());
            }
            p.fronted.insert(
                f.id.as_str().into(),
                FrontedEntry {
                    service,
                    ports: f.ports.clone().into(),
                    targets,
                },
            );
        }
        Ok(p)
    }

    /// What a request the outbound routed to service `service_id`, for
    /// `host` (as sent, with or without its port), on listener `port` is
    /// checked against. `None` for a service this snapshot does not route.
    pub fn outbound(&self, service_id: &str, host: &str, port: u16) -> Option<Subject<'_>> {
        let e = self.services.get(service_id)?;
        let named = network_label(host, &e.level.name).and_then(|label| {
            e.networks
                .iter()
                .copied()
                .find(|&i| self.networks[i].name.eq_ignore_ascii_case(label))
        });
        Some(Subject {
            service: e,
            networks: match named {
                Some(i) => Candidates::One(i),
                None => Candidates::All(&e.networks),
            },
            all: &self.networks,
            port,
        })
    }

    /// Whether some level of service `service_id` (as the outbound routes
    /// it) has a check; `false` for an unknown service.
    pub fn guarded(&self, service_id: &str) -> bool {
        self.services.get(service_id).is_some_and(|e| e.guarded)
    }

    /// Whether target group `group_id` has a target behind another proxy
    /// (requests to it name their route for that proxy).
    pub fn sends_via(&self, group_id: &str) -> bool {
        self.via_groups.contains(group_id)
    }

    /// Whether the outbound checks requests sent to target group
    /// `group_id` (it has a target no other proxy fronts).
    pub fn checked_here(&self, group_id: &str) -> bool {
        self.checked_here.contains(group_id)
    }

    /// The route a calling proxy claims for a request to fronted `target`:
    /// accepted when service `service_id` reaches `target`, is associated
    /// with network `network_id` (required when it has networks) and has a
    /// listener on `port`. The error says what does not hold. `Ok(None)`:
    /// no service with a check reaches `target`, so there is nothing to
    /// check whatever the claim (a snapshot from before fronted services
    /// were compiled, or a service without auth).
    pub fn inbound(
        &self,
        service_id: &str,
        network_id: Option<&str>,
        port: u16,
        target: &str,
    ) -> Result<Option<Subject<'_>>, String> {
        if !self.guarded_targets.contains(target) {
            return Ok(None);
        }
        let Some(f) = self.fronted.get(service_id) else {
            return Err(format!(
                "service {service_id} does not forward to any target this proxy fronts"
            ));
        };
        if !f.targets.contains(target) {
            return Err(format!(
                "service {service_id} does not forward to target {target}"
            ));
        }
        if !f.ports.contains(&port) {
            return Err(format!(
                "service {service_id} has no listener on port {port}"
            ));
        }
        let e = &f.service;
        let networks = match network_id {
            Some(id) => match e
                .networks
                .iter()
                .copied()
                .find(|&i| &*self.networks[i].id == id)
            {
                Some(i) => Candidates::One(i),
                None => {
                    return Err(format!(
                        "service {service_id} is not associated with service network {id}"
                    ));
                }
            },
            None if e.networks.is_empty() => Candidates::All(&[]),
            None => {
                return Err(format!(
                    "the request names no service network for service {service_id}"
                ));
            }
        };
        Ok(Some(Subject {
            service: e,
            networks,
            all: &self.networks,
            port,
        }))
    }

    /// Whether a request to fronted `target` that names no service may
    /// pass: no service with a check reaches the target, or it is a
    /// health check of it (see the module documentation).
    pub fn unrouted_allowed(
        &self,
        target: &str,
        is_probe: impl FnOnce(&[Box<str>]) -> bool,
    ) -> bool {
        if !self.guarded_targets.contains(target) {
            return true;
        }
        self.probe_paths
            .get(target)
            .is_some_and(|paths| is_probe(paths))
    }
}

/// The network label of a generated host name of `service`
/// (`<service>.<network>.trellis.internal[:port]`), if `host` is one.
fn network_label<'h>(host: &'h str, service: &str) -> Option<&'h str> {
    let name = crate::route::split_host_port(host).map_or(host, |(n, _)| n);
    let suffix_at = name.len().checked_sub(DNS_SUFFIX.len() + 1)?;
    let (rest, suffix) = name.split_at(suffix_at);
    if !suffix[1..].eq_ignore_ascii_case(DNS_SUFFIX) || !suffix.starts_with('.') {
        return None;
    }
    let (svc, net) = rest.split_once('.')?;
    (svc.eq_ignore_ascii_case(service) && !net.contains('.')).then_some(net)
}

#[derive(Debug, Clone, Copy)]
enum Candidates<'a> {
    One(usize),
    All(&'a [usize]),
}

/// What one request is checked against: its service, the network(s) it
/// came through, and the listener port.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    service: &'a ServiceEntry,
    networks: Candidates<'a>,
    all: &'a [LevelPolicy],
    port: u16,
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

/// [`AUTH_DENIED_HEADER`]'s value for `summary`, if it can be one.
pub(crate) fn header_value(summary: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(summary).ok()
}

/// A caller's identity as policies see it: account and SPIFFE id. Owns
/// the id's text for the duration of one check.
#[derive(Debug)]
pub struct CallerId {
    account: String,
    uri: String,
}

impl CallerId {
    /// The caller named by `identity`, if any.
    pub fn of(identity: Option<&WorkloadIdentity>) -> Option<Self> {
        identity.map(|id| Self {
            account: id.account().to_string(),
            uri: id.uri(),
        })
    }

    /// As a policy's [`Caller`].
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            account: &self.account,
            workload: &self.uri,
        }
    }
}

/// The facts of `method`, `uri` and `headers` from `caller` at
/// `source_ip`: what the proxy (and `explain`) give a [`Subject`].
pub fn request_parts<'r>(
    method: &'r http::Method,
    uri: &'r http::Uri,
    headers: &'r Headers<'r>,
    caller: Option<&'r CallerId>,
    source_ip: Option<IpAddr>,
) -> RequestParts<'r> {
    RequestParts {
        caller: caller.map(CallerId::caller),
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        source_ip,
    }
}

/// Check a request against `subject`: `Ok` when it may proceed (at once
/// when no level has a check), else the 401/403 to answer.
pub fn check<B>(
    subject: &Subject<'_>,
    req: &http::Request<B>,
    caller: Option<&WorkloadIdentity>,
    source_ip: IpAddr,
) -> Result<(), Failure> {
    if !subject.needs_check() {
        return Ok(());
    }
    let caller = CallerId::of(caller);
    let headers = Headers(req.headers());
    let parts = request_parts(
        req.method(),
        req.uri(),
        &headers,
        caller.as_ref(),
        Some(source_ip),
    );
    match subject.evaluate(&parts).failure(subject.service_name()) {
        None => Ok(()),
        Some(f) => Err(f),
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
