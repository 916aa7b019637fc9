//! The routing table of one snapshot: host -> service -> listener (by
//! port) -> first matching rule by priority -> action.

use super::host::{HostMap, split_host_port};
use super::rules::Conditions;
use super::{BuildError, Route, RouteInfo, WeightedGroups};
use http::{HeaderMap, Method};
use std::collections::HashSet;
use trellis_config::{Action, ListenerSpec, Snapshot, SnapshotService};

/// The routing table of one snapshot.
///
/// Built once when a snapshot arrives and then only read, so requests
/// share it without locks; a lookup allocates nothing.
#[derive(Debug)]
pub struct RouteTable {
    hosts: HostMap,
    services: Vec<ServiceRoutes>,
}

#[derive(Debug)]
struct ServiceRoutes {
    id: Box<str>,
    name: Box<str>,
    /// At most two (Lattice's quota), so a scan beats a map.
    listeners: Vec<ListenerRoutes>,
}

#[derive(Debug)]
struct ListenerRoutes {
    name: Box<str>,
    port: u16,
    /// Sorted by priority.
    rules: Vec<Rule>,
    default_action: Prepared,
}

#[derive(Debug)]
struct Rule {
    name: Box<str>,
    conditions: Conditions,
    action: Prepared,
}

#[derive(Debug)]
enum Prepared {
    Fixed(u16),
    Forward(WeightedGroups),
}

impl RouteTable {
    /// Prepare lookups for `snapshot`.
    ///
    /// Fails, naming the service and listener, when an action names a
    /// target group the snapshot lacks, a forward action has no group with
    /// a weight above 0, or two services claim the same host: routing
    /// with such a table would send requests nowhere or to the wrong
    /// service, so the proxy keeps its previous snapshot instead.
    pub fn build(snapshot: &Snapshot) -> Result<Self, BuildError> {
        let known: HashSet<&str> = snapshot
            .target_groups
            .iter()
            .map(|tg| tg.id.as_str())
            .collect();
        let mut hosts = HostMap::default();
        let mut services = Vec::with_capacity(snapshot.services.len());
        for (index, svc) in snapshot.services.iter().enumerate() {
            for host in &svc.hosts {
                if let Err(first) = hosts.insert(host, index) {
                    return Err(BuildError::DuplicateHost {
                        host: HostMap::key(host),
                        // `first` is an index this loop already visited.
                        first: snapshot.services[first].name.clone(),
                        second: svc.name.clone(),
                    });
                }
            }
            services.push(ServiceRoutes::new(svc, &known)?);
        }
        Ok(Self { hosts, services })
    }

    /// Route a request. `host` is the Host header or `:authority`, possibly
    /// with a port (no port means 80); matching is case-insensitive on the host.
    ///
    /// A host that cannot be parsed (see [`super::split_host_port`]) routes
    /// to [`Route::NoService`]; a listener that wants to answer it with 400
    /// instead checks it with `split_host_port` first.
    pub fn route<'a>(
        &'a self,
        host: &str,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Route<'a> {
        let Some((name, port)) = split_host_port(host) else {
            return Route::NoService;
        };
        let Some(svc) = self.hosts.get(name).and_then(|i| self.services.get(i)) else {
            return Route::NoService;
        };
        let Some(listener) = svc.listeners.iter().find(|l| l.port == port) else {
            return Route::NoListener { port };
        };
        let (rule, action) = listener
            .rules
            .iter()
            .find(|r| r.conditions.matches(method, path, headers))
            .map_or((None, &listener.default_action), |r| {
                (Some(&*r.name), &r.action)
            });
        let info = RouteInfo {
            service_id: &svc.id,
            service: &svc.name,
            listener: &listener.name,
            rule,
        };
        match action {
            Prepared::Fixed(status) => Route::Fixed {
                status: *status,
                info,
            },
            Prepared::Forward(groups) => Route::Forward { groups, info },
        }
    }

    /// Number of services in the table.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Number of host names the table answers to.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }
}

impl ServiceRoutes {
    fn new(svc: &SnapshotService, known: &HashSet<&str>) -> Result<Self, BuildError> {
        let mut listeners = Vec::with_capacity(svc.listeners.len());
        for l in &svc.listeners {
            listeners.push(ListenerRoutes::new(svc, l, known)?);
        }
        Ok(Self {
            id: svc.id.as_str().into(),
            name: svc.name.as_str().into(),
            listeners,
        })
    }
}

impl ListenerRoutes {
    fn new(
        svc: &SnapshotService,
        l: &ListenerSpec,
        known: &HashSet<&str>,
    ) -> Result<Self, BuildError> {
        let prepare = |a: &Action| Prepared::new(a, svc, l, known);
        let mut specs: Vec<_> = l.rules.iter().collect();
        // Stable: equal priorities (rejected by validation) keep their order.
        specs.sort_by_key(|r| r.priority);
        let mut rules = Vec::with_capacity(specs.len());
        for r in specs {
            rules.push(Rule {
                name: r.name.as_str().into(),
                conditions: Conditions::new(&r.matches),
                action: prepare(&r.action)?,
            });
        }
        Ok(Self {
            name: l.name.as_str().into(),
            // A snapshot carries normalised ports; 0 would mean "default".
            port: match l.port {
                0 => l.protocol.default_port(),
                p => p,
            },
            rules,
            default_action: prepare(&l.default_action)?,
        })
    }
}

impl Prepared {
    fn new(
        action: &Action,
        svc: &SnapshotService,
        l: &ListenerSpec,
        known: &HashSet<&str>,
    ) -> Result<Self, BuildError> {
        match action {
            Action::FixedResponse(f) => Ok(Prepared::Fixed(f.status_code)),
            Action::Forward(f) => {
                if let Some(missing) = f
                    .target_groups
                    .iter()
                    .find(|tg| !known.contains(tg.target_group.as_str()))
                {
                    return Err(BuildError::UnknownTargetGroup {
                        service: svc.name.clone(),
                        listener: l.name.clone(),
                        target_group: missing.target_group.clone(),
                    });
                }
                WeightedGroups::new(f)
                    .map(Prepared::Forward)
                    .ok_or_else(|| BuildError::NoWeightedTargetGroup {
                        service: svc.name.clone(),
                        listener: l.name.clone(),
                    })
            }
        }
    }
}
