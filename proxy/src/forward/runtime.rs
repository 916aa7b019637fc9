//! The request-side resilience settings of one snapshot, prepared once per
//! push, beside the runtime state they point to.
//!
//! A [`View`] holds, for the snapshot in use: each route's [`RoutePolicy`]
//! (request timeout, parsed retry policy, the rate limiters of its service
//! and rule) and each target group's [`GroupRuntime`] (connection pool and
//! retry budget). It is built the first time a request sees a new snapshot
//! and swapped in whole; requests read it without a lock.
//!
//! The state itself — rate-limit buckets, pools, budgets — lives in
//! registries keyed by stable ids (service id, `service/listener/rule`,
//! target group id) that a new view draws from, so a push keeps what it did
//! not change: a bucket survives while its limit is equal, a pool while
//! its connection settings are, a budget as long as the group exists.
//!
//! The common case costs one `arc_swap` load and a pointer comparison per
//! request: routes without a timeout, retry policy or rate limit of their
//! own are not in the table at all, and a snapshot with none of them skips
//! the lookup entirely.

use super::budget::RetryBudget;
use super::pool::{Pool, PoolSettings};
use super::retry::RetryConfig;
use crate::error::Failure;
use crate::identity::MeshTls;
use crate::listen::ratelimit::{Limiter, Limiters};
use crate::route::RouteInfo;
use crate::state::Prepared;
use arc_swap::ArcSwapOption;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use trellis_config::{RetryPolicy, Snapshot};

/// What applies to the requests of one route.
#[derive(Debug, Clone)]
pub(crate) struct RoutePolicy {
    /// Bound of the whole request, retries included (504 `upstream_timeout`).
    pub timeout: Duration,
    /// Retries and per-try timeout.
    pub retry: Option<Arc<RetryConfig>>,
    /// The service's limiter, then the rule's.
    limits: [Option<Arc<Limiter>>; 2],
}

impl RoutePolicy {
    fn plain(timeout: Duration) -> Self {
        Self {
            timeout,
            retry: None,
            limits: [None, None],
        }
    }

    fn is_plain(&self, default_timeout: Duration) -> bool {
        self.timeout == default_timeout
            && self.retry.is_none()
            && self.limits.iter().all(Option::is_none)
    }

    /// Take a token from each rate limit of the route (the service's first).
    pub(crate) fn check_limits(&self, caller: IpAddr) -> Result<(), Failure> {
        for l in self.limits.iter().flatten() {
            l.check(caller)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct ListenerPolicies {
    name: Box<str>,
    default: RoutePolicy,
    rules: Vec<(Box<str>, RoutePolicy)>,
}

/// One target group's runtime state on the request side.
#[derive(Debug)]
pub(crate) struct GroupRuntime {
    /// Its connection pool.
    pub pool: Arc<Pool>,
    /// Its retry budget.
    pub budget: Arc<RetryBudget>,
}

/// The prepared settings of one snapshot.
#[derive(Debug)]
pub(crate) struct View {
    prepared: Weak<Prepared>,
    version: u64,
    plain: RoutePolicy,
    /// Service id -> its listeners' policies; only services with something
    /// other than the defaults.
    services: HashMap<Box<str>, Vec<ListenerPolicies>>,
    groups: HashMap<Box<str>, Arc<GroupRuntime>>,
}

impl View {
    /// The policy of the route a request took.
    pub(crate) fn policy(&self, info: &RouteInfo<'_>) -> &RoutePolicy {
        if self.services.is_empty() {
            return &self.plain;
        }
        let Some(listeners) = self.services.get(info.service_id) else {
            return &self.plain;
        };
        let Some(l) = listeners.iter().find(|l| &*l.name == info.listener) else {
            return &self.plain;
        };
        match info.rule {
            None => &l.default,
            Some(rule) => l
                .rules
                .iter()
                .find(|(name, _)| &**name == rule)
                .map_or(&l.default, |(_, p)| p),
        }
    }

    /// A target group's pool and budget.
    pub(crate) fn group(&self, id: &str) -> Option<&Arc<GroupRuntime>> {
        self.groups.get(id)
    }
}

/// The registries and the current [`View`].
#[derive(Debug)]
pub(crate) struct Runtime {
    upstream_timeout: Duration,
    view: ArcSwapOption<View>,
    /// Rate-limit buckets (swept by a task, see `ratelimit`).
    pub limiters: Limiters,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    budgets: Mutex<HashMap<String, Arc<RetryBudget>>>,
    /// Mesh TLS of the pools to peer proxies.
    mesh: MeshTls,
}

impl Runtime {
    /// [`Runtime::new`] whose pools use `mesh` to reach peer proxies.
    pub(crate) fn with_mesh(upstream_timeout: Duration, mesh: MeshTls) -> Self {
        Self {
            mesh,
            ..Self::new(upstream_timeout)
        }
    }

    /// Empty registries; `upstream_timeout` is the request timeout of
    /// routes that set none.
    pub(crate) fn new(upstream_timeout: Duration) -> Self {
        Self {
            upstream_timeout,
            view: ArcSwapOption::empty(),
            limiters: Limiters::default(),
            pools: Mutex::default(),
            budgets: Mutex::default(),
            mesh: MeshTls::new(false),
        }
    }

    /// Run `f` on the view of `prepared`, preparing it first if this is
    /// the first request to see that snapshot. A request still on an
    /// older snapshot than the view's uses the newer view (settings are
    /// looked up by name, so it finds its route's settings if they are
    /// still there, else the defaults); so does a snapshot of the same
    /// version installed again (from disk, then from the control plane),
    /// whose content is the same.
    pub(crate) fn with_view<R>(&self, prepared: &Arc<Prepared>, f: impl FnOnce(&View) -> R) -> R {
        {
            let current = self.view.load();
            if let Some(v) = current.as_ref()
                && (std::ptr::eq(v.prepared.as_ptr(), Arc::as_ptr(prepared))
                    || v.version >= prepared.snapshot.version)
            {
                return f(v);
            }
        }
        let built = Arc::new(self.build(prepared));
        let version = built.version;
        self.view.rcu(|cur| match cur {
            Some(c) if c.version >= version => Some(Arc::clone(c)),
            _ => Some(Arc::clone(&built)),
        });
        f(&built)
    }

    fn build(&self, prepared: &Arc<Prepared>) -> View {
        let snapshot = &prepared.snapshot;
        let plain = RoutePolicy::plain(self.upstream_timeout);
        // Equal policies are parsed once and shared.
        let mut parsed = Vec::new();
        let mut retry_of = |p| retry_config(&mut parsed, p);
        let mut limit_keys = HashSet::new();
        let mut services = HashMap::new();
        for svc in &snapshot.services {
            let svc_limit = svc.rate_limit.as_ref().map(|l| {
                let key = format!("svc/{}", svc.id);
                let lim = self
                    .limiters
                    .get(&key, l, || format!("service '{}'", svc.name));
                limit_keys.insert(key);
                lim
            });
            let mut listeners = Vec::with_capacity(svc.listeners.len());
            let mut any = false;
            for l in &svc.listeners {
                let listener_timeout = l.timeout_ms.map(ms).unwrap_or(self.upstream_timeout);
                let listener_retry = retry_of(l.retry_policy.as_ref());
                let default = RoutePolicy {
                    timeout: listener_timeout,
                    retry: listener_retry.clone(),
                    limits: [svc_limit.clone(), None],
                };
                any |= !default.is_plain(self.upstream_timeout);
                let mut rules = Vec::with_capacity(l.rules.len());
                for r in &l.rules {
                    let rule_limit = r.rate_limit.as_ref().map(|lim| {
                        let key = format!("rule/{}/{}/{}", svc.id, l.name, r.name);
                        let got = self.limiters.get(&key, lim, || {
                            format!("rule '{}' of service '{}'", r.name, svc.name)
                        });
                        limit_keys.insert(key);
                        got
                    });
                    let p = RoutePolicy {
                        timeout: r.timeout_ms.map(ms).unwrap_or(listener_timeout),
                        retry: match &r.retry_policy {
                            Some(p) => retry_of(Some(p)),
                            None => listener_retry.clone(),
                        },
                        limits: [svc_limit.clone(), rule_limit],
                    };
                    any |= !p.is_plain(self.upstream_timeout);
                    rules.push((r.name.as_str().into(), p));
                }
                listeners.push(ListenerPolicies {
                    name: l.name.as_str().into(),
                    default,
                    rules,
                });
            }
            if any {
                services.insert(svc.id.as_str().into(), listeners);
            }
        }
        self.limiters.retain(|k| limit_keys.contains(k));
        View {
            prepared: Arc::downgrade(prepared),
            version: snapshot.version,
            plain,
            services,
            groups: self.groups(snapshot),
        }
    }

    fn groups(&self, snapshot: &Snapshot) -> HashMap<Box<str>, Arc<GroupRuntime>> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = HashMap::with_capacity(snapshot.target_groups.len());
        for tg in &snapshot.target_groups {
            let settings = PoolSettings::for_group(
                tg.protocol_version.is_h2(),
                &tg.connection,
                &tg.circuit_breaker,
            );
            let pool = match pools.get(&tg.id) {
                Some(p) if p.settings == settings => Arc::clone(p),
                _ => {
                    let p = Arc::new(Pool::new(settings, &self.mesh));
                    pools.insert(tg.id.clone(), Arc::clone(&p));
                    p
                }
            };
            let budget = Arc::clone(budgets.entry(tg.id.clone()).or_default());
            out.insert(
                tg.id.as_str().into(),
                Arc::new(GroupRuntime { pool, budget }),
            );
        }
        pools.retain(|id, _| out.contains_key(id.as_str()));
        budgets.retain(|id, _| out.contains_key(id.as_str()));
        out
    }
}

fn retry_config<'a>(
    parsed: &mut Vec<(&'a RetryPolicy, Option<Arc<RetryConfig>>)>,
    policy: Option<&'a RetryPolicy>,
) -> Option<Arc<RetryConfig>> {
    let policy = policy?;
    if let Some((_, c)) = parsed.iter().find(|(q, _)| *q == policy) {
        return c.clone();
    }
    let c = RetryConfig::from_policy(policy).map(Arc::new);
    parsed.push((policy, c.clone()));
    c
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use trellis_config::{
        Action, FixedResponseAction, ListenerSpec, RateLimit, RateLimitKey, RuleMatch, RuleSpec,
        SnapshotService,
    };

    fn rule(name: &str, timeout: Option<u32>, limit: Option<u32>) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            priority: 1,
            matches: RuleMatch {
                method: Some("GET".into()),
                ..Default::default()
            },
            action: Action::FixedResponse(FixedResponseAction { status_code: 200 }),
            timeout_ms: timeout,
            retry_policy: None,
            rate_limit: limit.map(|burst| RateLimit {
                requests_per_second: 1,
                burst,
                key: RateLimitKey::All,
            }),
        }
    }

    fn snapshot(
        version: u64,
        rules: Vec<RuleSpec>,
        listener_retry: Option<RetryPolicy>,
    ) -> Snapshot {
        Snapshot {
            version,
            services: vec![SnapshotService {
                id: "svc-1".into(),
                name: "s".into(),
                account: "000000000000".into(),
                networks: vec![],
                hosts: vec!["s.example".into()],
                auth_type: Default::default(),
                auth_policy: None,
                access_logs: Vec::new(),
                listeners: vec![ListenerSpec {
                    name: "l".into(),
                    protocol: Default::default(),
                    port: 80,
                    default_action: Action::FixedResponse(FixedResponseAction { status_code: 404 }),
                    rules,
                    timeout_ms: Some(700),
                    retry_policy: listener_retry,
                }],
                idle_timeout_seconds: 60,
                rate_limit: None,
            }],
            ..Default::default()
        }
    }

    fn prepared(s: Snapshot) -> Arc<Prepared> {
        Arc::new(Prepared::build(s, "").unwrap())
    }

    fn info<'a>(rule: Option<&'a str>) -> RouteInfo<'a> {
        RouteInfo {
            service_id: "svc-1",
            service: "s",
            listener: "l",
            rule,
        }
    }

    #[test]
    fn timeouts_resolve_rule_then_listener_then_proxy() {
        let rt = Runtime::new(Duration::from_secs(15));
        let p = prepared(snapshot(
            1,
            vec![rule("r", Some(300), None), rule("q", None, None)],
            None,
        ));
        rt.with_view(&p, |v| {
            assert_eq!(
                v.policy(&info(Some("r"))).timeout,
                Duration::from_millis(300)
            );
            assert_eq!(
                v.policy(&info(Some("q"))).timeout,
                Duration::from_millis(700)
            );
            assert_eq!(v.policy(&info(None)).timeout, Duration::from_millis(700));
            let other = RouteInfo {
                service_id: "svc-2",
                ..info(None)
            };
            assert_eq!(v.policy(&other).timeout, Duration::from_secs(15));
        });
    }

    #[test]
    fn rules_inherit_the_listener_retry_policy() {
        let rt = Runtime::new(Duration::from_secs(15));
        let p = prepared(snapshot(
            1,
            vec![rule("r", None, None)],
            Some(RetryPolicy::default()),
        ));
        rt.with_view(&p, |v| {
            let a = v.policy(&info(Some("r"))).retry.clone().unwrap();
            let b = v.policy(&info(None)).retry.clone().unwrap();
            assert!(Arc::ptr_eq(&a, &b), "parsed once per distinct policy");
        });
    }

    #[test]
    fn buckets_survive_a_push_that_keeps_the_limit() {
        let rt = Runtime::new(Duration::from_secs(15));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let p1 = prepared(snapshot(1, vec![rule("r", None, Some(1))], None));
        rt.with_view(&p1, |v| v.policy(&info(Some("r"))).check_limits(ip))
            .unwrap();
        // Same limit, other changes: the bucket is still empty.
        let p2 = prepared(snapshot(2, vec![rule("r", Some(5), Some(1))], None));
        let denied = rt.with_view(&p2, |v| v.policy(&info(Some("r"))).check_limits(ip));
        assert_eq!(
            denied.unwrap_err().reason,
            crate::error::Reason::RateLimited
        );
        // A changed limit starts full.
        let p3 = prepared(snapshot(3, vec![rule("r", None, Some(2))], None));
        rt.with_view(&p3, |v| v.policy(&info(Some("r"))).check_limits(ip))
            .unwrap();
        // A request still holding the older snapshot uses the newer view.
        let seen = rt.with_view(&p1, |v| v.version);
        assert_eq!(seen, 3);
    }

    #[test]
    fn a_snapshot_without_settings_has_an_empty_table() {
        let rt = Runtime::new(Duration::from_secs(15));
        let mut s = snapshot(1, vec![rule("r", None, None)], None);
        s.services[0].listeners[0].timeout_ms = None;
        rt.with_view(&prepared(s), |v| {
            assert!(v.services.is_empty());
            assert_eq!(v.policy(&info(Some("r"))).timeout, Duration::from_secs(15));
        });
    }
}
