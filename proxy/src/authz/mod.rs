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
//! - **Network membership** (inbound, every service, `NONE` too): the
//!   calling proxy's account (from its certificate, also when it forwards
//!   for an anonymous client) must be one that may use the claimed
//!   network: its owner or an account it is shared with (the snapshot's
//!   `accounts`). A request naming no service needs an account with some
//!   way to the target (owner of a service reaching it, or of one of that
//!   service's networks' accounts), health checks excepted. So a proxy of
//!   an account whose share was revoked gets nowhere, even one that still
//!   claims the route it had. A plaintext inbound (development mode, no
//!   identities) checks no membership.
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

use http::{HeaderName, HeaderValue};
use std::collections::{HashMap, HashSet};
use trellis_config::limits::DNS_SUFFIX;
use trellis_config::policy::{CompiledPolicy, compile_attached};
use trellis_config::{AuthType, Snapshot};

mod request;
mod subject;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;

pub use request::{CallerId, Headers, check, request_parts};
use subject::Candidates;
pub use subject::{LevelTrace, RequestParts, Subject, Verdict};

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
    /// Accounts that may use each network (its owner and sharees), by id.
    network_accounts: HashMap<Box<str>, HashSet<Box<str>>>,
    /// Accounts with a way to each fronted target: the owners of the
    /// services reaching it and the accounts of their networks.
    target_accounts: HashMap<Box<str>, HashSet<Box<str>>>,
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
            // A snapshot from before `accounts` existed: the owner alone.
            let accounts = if n.accounts.is_empty() {
                std::slice::from_ref(&n.account)
            } else {
                n.accounts.as_slice()
            };
            p.network_accounts.insert(
                n.id.as_str().into(),
                accounts.iter().map(|a| a.as_str().into()).collect(),
            );
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
            let mut accounts: HashSet<Box<str>> = HashSet::from([f.account.as_str().into()]);
            for &i in &service.networks {
                if let Some(a) = p.network_accounts.get(&p.networks[i].id) {
                    accounts.extend(a.iter().cloned());
                }
            }
            for t in &targets {
                p.target_accounts
                    .entry(t.clone())
                    .or_default()
                    .extend(accounts.iter().cloned());
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
    /// with network `network_id` (required when it has networks), has a
    /// listener on `port`, and the caller's account (`caller_account`,
    /// from its certificate) may use that network: its owner or a sharee
    /// (for a service in no network, the service's own account). The
    /// error says what does not hold. `Ok(None)`: no service with a check
    /// reaches `target`, so no policy applies (the route and the account
    /// are still checked). Without a caller identity (a plaintext,
    /// development-mode inbound) an unguarded target is not checked at
    /// all.
    pub fn inbound(
        &self,
        service_id: &str,
        network_id: Option<&str>,
        port: u16,
        target: &str,
        caller_account: Option<&str>,
    ) -> Result<Option<Subject<'_>>, String> {
        let guarded = self.guarded_targets.contains(target);
        if !guarded && caller_account.is_none() {
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
        if let Some(account) = caller_account {
            self.member(account, e, networks)?;
        }
        if !guarded {
            return Ok(None);
        }
        Ok(Some(Subject {
            service: e,
            networks,
            all: &self.networks,
            port,
        }))
    }

    /// Whether `account` may use the network of a claimed route (for a
    /// service in no network: whether it owns the service).
    fn member(
        &self,
        account: &str,
        service: &ServiceEntry,
        networks: Candidates<'_>,
    ) -> Result<(), String> {
        match networks {
            Candidates::One(i) => {
                let n = &self.networks[i];
                if self
                    .network_accounts
                    .get(&n.id)
                    .is_some_and(|a| a.contains(account))
                {
                    Ok(())
                } else {
                    Err(format!(
                        "account {account} has no access to service network {} ('{}'): it is neither its owner nor shared with it",
                        n.id, n.name
                    ))
                }
            }
            Candidates::All(_) if *service.level.account == *account => Ok(()),
            Candidates::All(_) => Err(format!(
                "account {account} has no access to service {}: it is in no service network and not the caller's",
                service.level.id
            )),
        }
    }

    /// Whether a request to fronted `target` that names no service may
    /// pass: a health check of it (see the module documentation) always;
    /// otherwise only when no service with a check reaches the target and
    /// the caller's account has a way to it (owns a service reaching it,
    /// or may use one of that service's networks). `caller_account`
    /// `None` (a plaintext inbound) is not checked. The error says why.
    pub fn unrouted(
        &self,
        target: &str,
        caller_account: Option<&str>,
        is_probe: impl FnOnce(&[Box<str>]) -> bool,
    ) -> Result<(), String> {
        if self
            .probe_paths
            .get(target)
            .is_some_and(|paths| is_probe(paths))
        {
            return Ok(());
        }
        if self.guarded_targets.contains(target) {
            return Err(format!(
                "an auth policy guards {target} and the request names no service (x-trellis-service)"
            ));
        }
        match caller_account {
            None => Ok(()),
            Some(a)
                if self
                    .target_accounts
                    .get(target)
                    .is_some_and(|s| s.contains(a)) =>
            {
                Ok(())
            }
            Some(a) => Err(format!(
                "account {a} has no access to a service network of a service reaching {target}"
            )),
        }
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

/// [`AUTH_DENIED_HEADER`]'s value for `summary`, if it can be one.
pub(crate) fn header_value(summary: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(summary).ok()
}
