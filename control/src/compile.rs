//! Resources -> one proxy's [`Snapshot`]: only the service networks in the
//! proxy's scope, every name resolved to an id, everything sorted so that
//! two compiles of the same model are equal (and an unchanged view is not
//! pushed again).

use crate::drain::{self, DrainingTarget};
use crate::model::Model;
use std::collections::{BTreeMap, BTreeSet};
use trellis_config::limits::DEFAULT_ACCOUNT;
use trellis_config::{
    AccessLogDestination, AccessLogResource, Action, FrontedService, ProxyRegistration, Resource,
    ServiceNetworkSpec, Snapshot, SnapshotNetwork, SnapshotService, SnapshotTarget,
    SnapshotTargetGroup, dns_name,
};

/// The account a proxy runs for.
pub fn proxy_account(reg: &ProxyRegistration) -> &str {
    reg.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
}

/// The access-log destinations of a service: its own subscriptions and
/// those of the networks in `networks` (ids of the in-scope networks it is
/// associated with), one per destination key, sorted by key. Two
/// subscriptions naming the same file with different rotation settings
/// keep the smaller settings (deterministically) and a warning says so.
pub fn access_logs(
    model: &Model,
    account: &str,
    service: &str,
    networks: &BTreeSet<String>,
) -> Vec<AccessLogDestination> {
    let network_names: BTreeSet<(&str, &str)> = networks
        .iter()
        .filter_map(|id| model.networks.by_id.get(id))
        .map(|n| (n.meta.account.as_str(), n.spec.name.as_str()))
        .collect();
    let mut out: BTreeMap<String, AccessLogDestination> = BTreeMap::new();
    for sub in model.access_log_subscriptions.by_id.values() {
        let applies = match &sub.spec.resource {
            AccessLogResource::Service(s) => sub.meta.account == account && s == service,
            AccessLogResource::ServiceNetwork(n) => {
                network_names.contains(&(sub.meta.account.as_str(), n.as_str()))
            }
        };
        if !applies {
            continue;
        }
        let dest = &sub.spec.destination;
        match out.entry(dest.key()) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(dest.clone());
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if e.get() != dest {
                    tracing::warn!(service, destination = %e.key(), subscription = %sub.spec.name, "two access-log subscriptions name the same file with different rotation settings; using the smaller");
                    if dest < e.get() {
                        e.insert(dest.clone());
                    }
                }
            }
        }
    }
    out.into_values().collect()
}

/// Ids of the service networks in a proxy's scope: those it named when it
/// registered plus those of matching proxy associations, in its account.
pub fn scope(model: &Model, reg: &ProxyRegistration) -> BTreeSet<String> {
    let account = proxy_account(reg);
    let mut ids = BTreeSet::new();
    for name in &reg.service_networks {
        if let Some(n) = model.network_for(account, name) {
            ids.insert(n.meta.id.clone());
        }
    }
    for a in model.proxy_associations.by_id.values() {
        if a.meta.account == account
            && a.spec.applies_to(&reg.name, reg.group.as_deref())
            && let Some(n) = model.network_for(account, &a.spec.service_network)
        {
            ids.insert(n.meta.id.clone());
        }
    }
    ids
}

/// A network as snapshots carry it, with the accounts that may use it.
fn snapshot_network(model: &Model, n: &Resource<ServiceNetworkSpec>) -> SnapshotNetwork {
    SnapshotNetwork {
        id: n.meta.id.clone(),
        name: n.spec.name.clone(),
        account: n.meta.account.clone(),
        accounts: model.network_accounts(&n.meta.id),
        auth_type: n.spec.auth_type,
        auth_policy: n.spec.auth_policy.clone(),
    }
}

/// Compile the snapshot of `reg` now (its `version` is left 0; the push
/// loop assigns versions).
pub fn compile(model: &Model, reg: &ProxyRegistration) -> Snapshot {
    compile_at(model, reg, crate::drain::now_ms())
}

/// Compile the snapshot of `reg` as of `now_ms` (Unix milliseconds), which
/// decides which deregistered targets are still draining: those are listed
/// after the registered ones with `draining: true`, so proxies finish what
/// they sent them and send nothing new.
pub fn compile_at(model: &Model, reg: &ProxyRegistration, now_ms: u64) -> Snapshot {
    let account = proxy_account(reg);
    let scope = scope(model, reg);

    let networks: Vec<SnapshotNetwork> = scope
        .iter()
        .filter_map(|id| model.networks.by_id.get(id))
        .map(|n| snapshot_network(model, n))
        .collect();

    // service id -> (network ids, hosts); associations in creation order so
    // that the first claim on a host name wins deterministically.
    let mut assocs: Vec<_> = model.service_associations.by_id.values().collect();
    assocs.sort_by(|a, b| (&a.meta.created_at, &a.meta.id).cmp(&(&b.meta.created_at, &b.meta.id)));
    let mut members: BTreeMap<String, (BTreeSet<String>, Vec<String>)> = BTreeMap::new();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    for a in assocs {
        // A sharee's association counts only while the share lasts.
        let Some(net) = model.network_for(&a.meta.account, &a.spec.service_network) else {
            continue;
        };
        if !scope.contains(&net.meta.id) {
            continue;
        }
        let Some(svc) = model.services.named(&a.meta.account, &a.spec.service) else {
            continue;
        };
        let entry = members.entry(svc.meta.id.clone()).or_default();
        entry.0.insert(net.meta.id.clone());
        let host = dns_name(&svc.spec.name, &net.spec.name);
        if claimed.insert(host.clone()) {
            entry.1.push(host);
        } else {
            tracing::warn!(proxy = %reg.name, host, service = %svc.meta.id, "host name already taken in this proxy's scope; skipped");
        }
    }

    let mut used_groups: BTreeSet<String> = BTreeSet::new();
    let mut services = Vec::new();
    for (svc_id, (nets, mut hosts)) in members {
        let Some(svc) = model.services.by_id.get(&svc_id) else {
            continue;
        };
        if let Some(d) = &svc.spec.custom_domain {
            if claimed.insert(d.clone()) {
                hosts.push(d.clone());
            } else {
                tracing::warn!(proxy = %reg.name, host = %d, service = %svc_id, "custom domain already taken in this proxy's scope; skipped");
            }
        }
        let mut listeners = svc.spec.listeners.clone();
        for l in &mut listeners {
            let actions = std::iter::once(&mut l.default_action)
                .chain(l.rules.iter_mut().map(|r| &mut r.action));
            for action in actions {
                if let Action::Forward(f) = action {
                    for wtg in &mut f.target_groups {
                        if let Some(tg) = model
                            .target_groups
                            .named(&svc.meta.account, &wtg.target_group)
                        {
                            wtg.target_group = tg.meta.id.clone();
                            used_groups.insert(tg.meta.id.clone());
                        }
                    }
                }
            }
            l.rules.sort_by_key(|r| r.priority);
        }
        let logs = access_logs(model, &svc.meta.account, &svc.spec.name, &nets);
        services.push(SnapshotService {
            id: svc.meta.id.clone(),
            name: svc.spec.name.clone(),
            account: svc.meta.account.clone(),
            networks: nets.into_iter().collect(),
            hosts,
            auth_type: svc.spec.auth_type,
            auth_policy: svc.spec.auth_policy.clone(),
            listeners,
            idle_timeout_seconds: svc.spec.idle_timeout_seconds,
            rate_limit: svc.spec.rate_limit.clone(),
            access_logs: logs,
        });
    }

    // Target groups with targets this proxy fronts, for its inbound
    // listener; draining ones count, since callers still send them the
    // requests they started.
    let draining: BTreeMap<&str, Vec<DrainingTarget>> = model
        .target_groups
        .by_id
        .values()
        .filter(|tg| tg.status.is_some())
        .map(|tg| (tg.meta.id.as_str(), drain::active(tg, now_ms)))
        .filter(|(_, d)| !d.is_empty())
        .collect();
    let me = Some(reg.name.as_str());
    let mut fronted_groups: BTreeSet<String> = BTreeSet::new();
    for tg in model.target_groups.by_id.values() {
        if tg.meta.account == account
            && (tg.spec.targets.iter().any(|t| t.proxy.as_deref() == me)
                || draining
                    .get(tg.meta.id.as_str())
                    .is_some_and(|d| d.iter().any(|t| t.proxy.as_deref() == me)))
        {
            used_groups.insert(tg.meta.id.clone());
            fronted_groups.insert(tg.meta.id.clone());
        }
    }
    let (fronted_services, fronted_networks) = fronted(model, &fronted_groups);

    let target_groups = used_groups
        .iter()
        .filter_map(|id| model.target_groups.by_id.get(id))
        .map(|tg| SnapshotTargetGroup {
            id: tg.meta.id.clone(),
            name: tg.spec.name.clone(),
            account: tg.meta.account.clone(),
            protocol: tg.spec.protocol,
            protocol_version: tg.spec.protocol_version,
            port: tg.spec.port,
            algorithm: tg.spec.algorithm,
            health_check: tg.spec.health_check.clone(),
            targets: tg
                .spec
                .targets
                .iter()
                .map(|t| (t.address.as_str(), t.effective_port(tg.spec.port), t.proxy.as_deref(), false))
                .chain(
                    draining
                        .get(tg.meta.id.as_str())
                        .into_iter()
                        .flatten()
                        .map(|d| (d.address.as_str(), d.port, d.proxy.as_deref(), true)),
                )
                .filter_map(|(address, port, proxy, draining)| {
                    let via = match proxy {
                        None => None,
                        Some(p) if p == reg.name => None,
                        Some(p) => match model.proxies.get(p).and_then(|r| r.inbound_address.clone()) {
                            Some(addr) => Some(addr),
                            None => {
                                tracing::debug!(proxy = %reg.name, fronting = p, target = %address, "fronting proxy unknown or without inbound address; target left out");
                                return None;
                            }
                        },
                    };
                    Some(SnapshotTarget {
                        address: address.to_string(),
                        port,
                        proxy: proxy.map(str::to_string),
                        via,
                        draining,
                    })
                })
                .collect(),
            outlier_detection: tg.spec.outlier_detection.clone(),
            circuit_breaker: tg.spec.circuit_breaker.clone(),
            connection: tg.spec.connection.clone(),
        })
        .collect();

    Snapshot {
        version: 0,
        proxy: reg.name.clone(),
        networks,
        services,
        target_groups,
        fronted_services,
        fronted_networks,
    }
}

/// The services that forward to any of `groups` (target groups with
/// targets this proxy fronts), whatever the proxy's own scope, and every
/// network they are associated with: what the inbound listener needs to
/// check a calling proxy's route and the auth policies on it. Sorted by id.
fn fronted(
    model: &Model,
    groups: &BTreeSet<String>,
) -> (Vec<FrontedService>, Vec<SnapshotNetwork>) {
    if groups.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let mut services = BTreeMap::new();
    let mut network_ids = BTreeSet::new();
    for svc in model.services.by_id.values() {
        let account = &svc.meta.account;
        let mut hit = BTreeSet::new();
        for l in &svc.spec.listeners {
            let actions =
                std::iter::once(&l.default_action).chain(l.rules.iter().map(|r| &r.action));
            for action in actions {
                if let Action::Forward(f) = action {
                    for wtg in &f.target_groups {
                        if let Some(tg) = model.target_groups.named(account, &wtg.target_group)
                            && groups.contains(&tg.meta.id)
                        {
                            hit.insert(tg.meta.id.clone());
                        }
                    }
                }
            }
        }
        if hit.is_empty() {
            continue;
        }
        let networks: BTreeSet<String> = model
            .service_associations
            .by_id
            .values()
            .filter(|a| &a.meta.account == account && a.spec.service == svc.spec.name)
            // A sharee's association counts only while the share lasts.
            .filter_map(|a| model.network_for(&a.meta.account, &a.spec.service_network))
            .map(|n| n.meta.id.clone())
            .collect();
        network_ids.extend(networks.iter().cloned());
        let mut ports: Vec<u16> = svc
            .spec
            .listeners
            .iter()
            .map(|l| match l.port {
                0 => l.protocol.default_port(),
                p => p,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        services.insert(
            svc.meta.id.clone(),
            FrontedService {
                id: svc.meta.id.clone(),
                name: svc.spec.name.clone(),
                account: account.clone(),
                networks: networks.into_iter().collect(),
                ports,
                target_groups: hit.into_iter().collect(),
                auth_type: svc.spec.auth_type,
                auth_policy: svc.spec.auth_policy.clone(),
            },
        );
    }
    let networks = network_ids
        .iter()
        .filter_map(|id| model.networks.by_id.get(id))
        .map(|n| snapshot_network(model, n))
        .collect();
    (services.into_values().collect(), networks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::keys;
    use crate::store::KeyValue;
    use serde_json::{Value, json};
    use trellis_config::Kind;

    fn kv(key: String, v: Value) -> KeyValue {
        KeyValue {
            key,
            value: serde_json::to_vec(&v).unwrap(),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    fn meta(id: &str) -> Value {
        json!({"id": id, "account": DEFAULT_ACCOUNT, "version": 1, "createdAt": "t", "updatedAt": "t"})
    }

    /// A network, a service forwarding to group `g` (one registered target,
    /// two draining: one direct, one fronted by proxy `front`), and the
    /// proxies `me` and `front`.
    fn model() -> Model {
        let tg = json!({"meta": meta("tg-1"), "spec": {"name": "g", "port": 80,
        "targets": [{"address": "10.0.0.1"}]},
        "status": {"draining": [
            {"address": "10.0.0.2", "port": 80, "until": 5_000},
            {"address": "10.0.0.3", "port": 81, "proxy": "front", "until": 9_000}
        ]}});
        let svc = json!({"meta": meta("svc-1"), "spec": {"name": "s", "listeners": [{"name": "l",
            "defaultAction": {"forward": {"targetGroups": [{"targetGroup": "g", "weight": 1}]}}}]}});
        let net = json!({"meta": meta("sn-1"), "spec": {"name": "n"}});
        let assoc = json!({"meta": meta("sna-1"), "spec": {"name": "a", "serviceNetwork": "n", "service": "s"}});
        let kvs = vec![
            kv(keys::resource(Kind::TargetGroup, "tg-1"), tg),
            kv(keys::resource(Kind::Service, "svc-1"), svc),
            kv(keys::resource(Kind::ServiceNetwork, "sn-1"), net),
            kv(keys::resource(Kind::ServiceAssociation, "sna-1"), assoc),
            kv(
                keys::proxy("me"),
                json!({"name": "me", "serviceNetworks": ["n"]}),
            ),
            kv(
                keys::proxy("front"),
                json!({"name": "front", "inboundAddress": "127.0.0.1:9000"}),
            ),
        ];
        Model::load(&kvs, 1)
    }

    fn targets(snap: &Snapshot) -> Vec<(String, bool, Option<String>)> {
        snap.target_groups
            .iter()
            .flat_map(|g| &g.targets)
            .map(|t| (t.authority(), t.draining, t.via.clone()))
            .collect()
    }

    #[test]
    fn draining_targets_are_listed_until_their_deadline() {
        let m = model();
        let me = &m.proxies["me"];
        assert_eq!(
            targets(&compile_at(&m, me, 1_000)),
            vec![
                ("10.0.0.1:80".into(), false, None),
                ("10.0.0.2:80".into(), true, None),
                ("10.0.0.3:81".into(), true, Some("127.0.0.1:9000".into())),
            ]
        );
        assert_eq!(
            targets(&compile_at(&m, me, 5_000)),
            vec![
                ("10.0.0.1:80".into(), false, None),
                ("10.0.0.3:81".into(), true, Some("127.0.0.1:9000".into())),
            ]
        );
        assert_eq!(
            targets(&compile_at(&m, me, 9_000)),
            vec![("10.0.0.1:80".into(), false, None)]
        );
    }

    #[test]
    fn a_fronting_proxy_gets_the_services_and_networks_in_front_of_its_targets() {
        let m = model();
        let snap = compile_at(&m, &m.proxies["front"], 1_000);
        assert!(snap.services.is_empty(), "not in its scope: {snap:?}");
        assert_eq!(snap.fronted_services.len(), 1);
        let f = &snap.fronted_services[0];
        assert_eq!(
            (
                f.id.as_str(),
                f.networks.clone(),
                f.ports.clone(),
                f.target_groups.clone()
            ),
            (
                "svc-1",
                vec!["sn-1".to_string()],
                vec![80],
                vec!["tg-1".to_string()]
            )
        );
        assert_eq!(snap.fronted_networks.len(), 1);
        assert_eq!(snap.fronted_networks[0].id, "sn-1");
        let me = compile_at(&m, &m.proxies["me"], 1_000);
        assert!(me.fronted_services.is_empty() && me.fronted_networks.is_empty());
    }

    #[test]
    fn a_fronting_proxy_keeps_its_draining_target_until_the_deadline() {
        let m = model();
        let front = &m.proxies["front"];
        let snap = compile_at(&m, front, 1_000);
        assert_eq!(snap.target_groups.len(), 1, "{snap:?}");
        assert!(
            snap.target_groups[0]
                .targets
                .iter()
                .any(|t| t.address == "10.0.0.3" && t.draining && t.via.is_none())
        );
        assert!(compile_at(&m, front, 9_000).target_groups.is_empty());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod access_log_tests {
    use super::*;
    use crate::keys;
    use crate::store::KeyValue;
    use serde_json::{Value, json};
    use trellis_config::{FileDestination, Kind};

    fn kv(key: String, v: Value) -> KeyValue {
        KeyValue {
            key,
            value: serde_json::to_vec(&v).unwrap(),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    fn res(kind: Kind, id: &str, spec: Value) -> KeyValue {
        let meta = json!({"id": id, "account": DEFAULT_ACCOUNT, "version": 1,
            "createdAt": id, "updatedAt": "t"});
        kv(
            keys::resource(kind, id),
            json!({"meta": meta, "spec": spec}),
        )
    }

    fn file(path: &str, max_files: u32) -> Value {
        json!({"file": {"path": path, "maxFiles": max_files}})
    }

    /// Networks `a` and `b` (the proxy sees only `a`), service `s` in both,
    /// service `t` in `a` only, and subscriptions on each.
    #[test]
    fn a_service_gets_its_own_and_its_in_scope_networks_subscriptions_once() {
        let als = |id: &str, resource: Value, destination: Value| {
            res(
                Kind::AccessLogSubscription,
                id,
                json!({"name": id, "resource": resource, "destination": destination}),
            )
        };
        let kvs = vec![
            res(Kind::ServiceNetwork, "sn-a", json!({"name": "a"})),
            res(Kind::ServiceNetwork, "sn-b", json!({"name": "b"})),
            res(Kind::Service, "svc-s", json!({"name": "s"})),
            res(Kind::Service, "svc-t", json!({"name": "t"})),
            res(
                Kind::ServiceAssociation,
                "sna-1",
                json!({"name": "s-a", "serviceNetwork": "a", "service": "s"}),
            ),
            res(
                Kind::ServiceAssociation,
                "sna-2",
                json!({"name": "s-b", "serviceNetwork": "b", "service": "s"}),
            ),
            res(
                Kind::ServiceAssociation,
                "sna-3",
                json!({"name": "t-a", "serviceNetwork": "a", "service": "t"}),
            ),
            als(
                "als-1",
                json!({"serviceNetwork": "a"}),
                file("/l/net-a.log", 5),
            ),
            als(
                "als-2",
                json!({"serviceNetwork": "b"}),
                file("/l/net-b.log", 5),
            ),
            als("als-3", json!({"service": "s"}), json!("stdout")),
            // The same file as the network's, with other settings: once.
            als("als-4", json!({"service": "s"}), file("/l/net-a.log", 3)),
            als("als-5", json!({"serviceNetwork": "a"}), json!("stdout")),
            kv(
                keys::proxy("me"),
                json!({"name": "me", "serviceNetworks": ["a"]}),
            ),
        ];
        let m = Model::load(&kvs, 1);
        let snap = compile(&m, &m.proxies["me"]);
        let logs = |name: &str| {
            snap.services
                .iter()
                .find(|s| s.name == name)
                .unwrap()
                .access_logs
                .clone()
        };
        let smaller = FileDestination {
            max_files: 3,
            ..FileDestination::new("/l/net-a.log")
        };
        assert_eq!(
            logs("s"),
            vec![
                AccessLogDestination::File(smaller),
                AccessLogDestination::Stdout
            ],
            "network b is out of scope; stdout and the file once each"
        );
        assert_eq!(
            logs("t"),
            vec![
                AccessLogDestination::File(FileDestination::new("/l/net-a.log")),
                AccessLogDestination::Stdout
            ]
        );
    }

    #[test]
    fn old_snapshots_without_access_logs_still_load() {
        let old = json!({"id": "svc-1", "name": "s", "account": "0", "networks": [],
            "hosts": [], "authType": "NONE", "listeners": []});
        let s: trellis_config::SnapshotService = serde_json::from_value(old).unwrap();
        assert!(s.access_logs.is_empty());
        assert!(
            serde_json::to_value(&s)
                .unwrap()
                .get("accessLogs")
                .is_none()
        );
    }

    /// Network `n` of the default account shared with account B; B's
    /// service `bs` associated with it by id; B's proxy joined by id.
    #[test]
    fn a_share_puts_the_network_and_the_sharees_services_in_scope_until_revoked() {
        const B: &str = "222222222222";
        let of_b = |kind: Kind, id: &str, spec: Value| {
            let meta =
                json!({"id": id, "account": B, "version": 1, "createdAt": id, "updatedAt": "t"});
            kv(
                keys::resource(kind, id),
                json!({"meta": meta, "spec": spec}),
            )
        };
        let share = kv(keys::share("sn-n", B), json!({}));
        let base = vec![
            res(Kind::ServiceNetwork, "sn-n", json!({"name": "n"})),
            of_b(Kind::Service, "svc-bs", json!({"name": "bs"})),
            of_b(
                Kind::ServiceAssociation,
                "sna-b",
                json!({"name": "b", "serviceNetwork": "sn-n", "service": "bs"}),
            ),
        ];
        let b_proxy = ProxyRegistration {
            name: "pb".into(),
            account: Some(B.into()),
            group: None,
            inbound_address: None,
            service_networks: vec!["sn-n".into()],
        };
        let a_proxy = ProxyRegistration {
            name: "pa".into(),
            account: None,
            group: None,
            inbound_address: None,
            service_networks: vec!["n".into()],
        };

        let mut shared = base.clone();
        shared.push(share);
        let model = Model::load(&shared, 1);
        let snap = compile_at(&model, &b_proxy, 0);
        assert_eq!(snap.networks.len(), 1);
        assert_eq!(snap.networks[0].accounts, [DEFAULT_ACCOUNT, B]);
        let a_snap = compile_at(&model, &a_proxy, 0);
        assert_eq!(
            a_snap.services.len(),
            1,
            "the owner's proxy sees the sharee's service"
        );
        assert_eq!(a_snap.services[0].hosts, ["bs.n.trellis.internal"]);
        assert_eq!(a_snap.networks[0].accounts, [DEFAULT_ACCOUNT, B]);

        // Revoked (no share key): out of B's scope, B's association inactive.
        let model = Model::load(&base, 1);
        assert!(compile_at(&model, &b_proxy, 0).networks.is_empty());
        let a_snap = compile_at(&model, &a_proxy, 0);
        assert!(a_snap.services.is_empty());
        assert_eq!(a_snap.networks[0].accounts, [DEFAULT_ACCOUNT]);
    }
}
