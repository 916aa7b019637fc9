//! Resources -> one proxy's [`Snapshot`]: only the service networks in the
//! proxy's scope, every name resolved to an id, everything sorted so that
//! two compiles of the same model are equal (and an unchanged view is not
//! pushed again).

use crate::model::Model;
use std::collections::{BTreeMap, BTreeSet};
use trellis_config::limits::DEFAULT_ACCOUNT;
use trellis_config::{
    Action, ProxyRegistration, Snapshot, SnapshotNetwork, SnapshotService, SnapshotTarget,
    SnapshotTargetGroup, dns_name,
};

/// The account a proxy runs for.
pub fn proxy_account(reg: &ProxyRegistration) -> &str {
    reg.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
}

/// Ids of the service networks in a proxy's scope: those it named when it
/// registered plus those of matching proxy associations, in its account.
pub fn scope(model: &Model, reg: &ProxyRegistration) -> BTreeSet<String> {
    let account = proxy_account(reg);
    let mut ids = BTreeSet::new();
    for name in &reg.service_networks {
        if let Some(n) = model.networks.named(account, name) {
            ids.insert(n.meta.id.clone());
        }
    }
    for a in model.proxy_associations.by_id.values() {
        if a.meta.account == account
            && a.spec.applies_to(&reg.name, reg.group.as_deref())
            && let Some(n) = model.networks.named(account, &a.spec.service_network)
        {
            ids.insert(n.meta.id.clone());
        }
    }
    ids
}

/// Compile the snapshot of `reg` (its `version` is left 0; the push loop
/// assigns versions).
pub fn compile(model: &Model, reg: &ProxyRegistration) -> Snapshot {
    let account = proxy_account(reg);
    let scope = scope(model, reg);

    let networks: Vec<SnapshotNetwork> = scope
        .iter()
        .filter_map(|id| model.networks.by_id.get(id))
        .map(|n| SnapshotNetwork {
            id: n.meta.id.clone(),
            name: n.spec.name.clone(),
            account: n.meta.account.clone(),
            auth_type: n.spec.auth_type,
        })
        .collect();

    // service id -> (network ids, hosts); associations in creation order so
    // that the first claim on a host name wins deterministically.
    let mut assocs: Vec<_> = model.service_associations.by_id.values().collect();
    assocs.sort_by(|a, b| (&a.meta.created_at, &a.meta.id).cmp(&(&b.meta.created_at, &b.meta.id)));
    let mut members: BTreeMap<String, (BTreeSet<String>, Vec<String>)> = BTreeMap::new();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    for a in assocs {
        let Some(net) = model
            .networks
            .named(&a.meta.account, &a.spec.service_network)
        else {
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
        services.push(SnapshotService {
            id: svc.meta.id.clone(),
            name: svc.spec.name.clone(),
            account: svc.meta.account.clone(),
            networks: nets.into_iter().collect(),
            hosts,
            auth_type: svc.spec.auth_type,
            listeners,
            idle_timeout_seconds: svc.spec.idle_timeout_seconds,
            rate_limit: svc.spec.rate_limit.clone(),
        });
    }

    // Target groups with targets this proxy fronts, for its inbound listener.
    for tg in model.target_groups.by_id.values() {
        if tg.meta.account == account
            && tg
                .spec
                .targets
                .iter()
                .any(|t| t.proxy.as_deref() == Some(reg.name.as_str()))
        {
            used_groups.insert(tg.meta.id.clone());
        }
    }

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
                .filter_map(|t| {
                    let via = match t.proxy.as_deref() {
                        None => None,
                        Some(p) if p == reg.name => None,
                        Some(p) => match model.proxies.get(p).and_then(|r| r.inbound_address.clone()) {
                            Some(addr) => Some(addr),
                            None => {
                                tracing::debug!(proxy = %reg.name, fronting = p, target = %t.address, "fronting proxy unknown or without inbound address; target left out");
                                return None;
                            }
                        },
                    };
                    Some(SnapshotTarget {
                        address: t.address.clone(),
                        port: t.effective_port(tg.spec.port),
                        proxy: t.proxy.clone(),
                        via,
                        draining: false,
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
    }
}
