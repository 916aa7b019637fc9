//! The in-memory model: every resource and proxy registration, kept current
//! by watching the store. The compiler reads it; the API never does (it
//! reads the store, so a reply reflects every acknowledged write).

use crate::keys;
use crate::store::{EventKind, KeyValue, Revision, WatchBatch};
use std::collections::HashMap;
use trellis_config::{
    AccessLogSubscriptionSpec, Kind, ProxyAssociationSpec, ProxyRegistration, Resource,
    ServiceAssociationSpec, ServiceNetworkSpec, ServiceSpec, Spec, TargetGroupSpec,
};

/// The resources of one kind, by id and by (account, name).
#[derive(Debug, Clone)]
pub struct Table<S: Spec> {
    /// By id.
    pub by_id: HashMap<String, Resource<S>>,
    by_name: HashMap<(String, String), String>,
}

impl<S: Spec> Default for Table<S> {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            by_name: HashMap::new(),
        }
    }
}

impl<S: Spec> Table<S> {
    /// A resource by account and name.
    pub fn named(&self, account: &str, name: &str) -> Option<&Resource<S>> {
        self.by_name
            .get(&(account.to_string(), name.to_string()))
            .and_then(|id| self.by_id.get(id))
    }

    fn put(&mut self, id: &str, value: &[u8]) {
        match serde_json::from_slice::<Resource<S>>(value) {
            Ok(r) => {
                self.by_name.insert(
                    (r.meta.account.clone(), r.spec.name().to_string()),
                    id.to_string(),
                );
                self.by_id.insert(id.to_string(), r);
            }
            Err(e) => {
                tracing::error!(kind = %S::KIND, id, error = %e, "ignoring undecodable resource in the store")
            }
        }
    }

    fn delete(&mut self, id: &str) {
        if let Some(r) = self.by_id.remove(id) {
            self.by_name
                .remove(&(r.meta.account.clone(), r.spec.name().to_string()));
        }
    }
}

/// Everything the compiler needs, at one store revision.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// The store revision this model reflects.
    pub revision: Revision,
    /// Service networks.
    pub networks: Table<ServiceNetworkSpec>,
    /// Services.
    pub services: Table<ServiceSpec>,
    /// Target groups.
    pub target_groups: Table<TargetGroupSpec>,
    /// Service ↔ network associations.
    pub service_associations: Table<ServiceAssociationSpec>,
    /// Proxy ↔ network associations.
    pub proxy_associations: Table<ProxyAssociationSpec>,
    /// Access-log subscriptions of networks and services.
    pub access_log_subscriptions: Table<AccessLogSubscriptionSpec>,
    /// Registered proxies by name.
    pub proxies: HashMap<String, ProxyRegistration>,
    /// Service network id -> the accounts it is shared with.
    pub shares: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Model {
    /// The service network `reference` names for `account`: its own
    /// network of that name, or a network of another account shared with
    /// it, named by id. `None` when neither (a revoked share included).
    pub fn network_for(
        &self,
        account: &str,
        reference: &str,
    ) -> Option<&Resource<ServiceNetworkSpec>> {
        if let Some(n) = self.networks.named(account, reference) {
            return Some(n);
        }
        let n = self.networks.by_id.get(reference)?;
        (n.meta.account == account
            || self
                .shares
                .get(reference)
                .is_some_and(|s| s.contains(account)))
        .then_some(n)
    }

    /// The accounts that may use network `id`: its owner, then its sharees.
    pub fn network_accounts(&self, id: &str) -> Vec<String> {
        let Some(n) = self.networks.by_id.get(id) else {
            return Vec::new();
        };
        std::iter::once(n.meta.account.clone())
            .chain(self.shares.get(id).into_iter().flatten().cloned())
            .collect()
    }

    /// A model from a full read of the store at `revision`.
    pub fn load(kvs: &[KeyValue], revision: Revision) -> Self {
        let mut m = Model {
            revision,
            ..Default::default()
        };
        for kv in kvs {
            m.put(&kv.key, &kv.value);
        }
        m
    }

    /// Apply one watched batch; returns whether anything the compiler
    /// uses changed (index keys do not count).
    pub fn apply(&mut self, batch: &WatchBatch) -> bool {
        let mut relevant = false;
        for ev in &batch.events {
            let is_model_key = keys::parse_resource(&ev.kv.key).is_some()
                || ev.kv.key.starts_with(keys::PROXIES)
                || ev.kv.key.starts_with(keys::SHARES);
            relevant |= is_model_key;
            match ev.kind {
                EventKind::Put => self.put(&ev.kv.key, &ev.kv.value),
                EventKind::Delete => self.delete(&ev.kv.key),
            }
        }
        self.revision = self.revision.max(batch.revision);
        relevant
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        if let Some((kind, id)) = keys::parse_resource(key) {
            match kind {
                Kind::ServiceNetwork => self.networks.put(id, value),
                Kind::Service => self.services.put(id, value),
                Kind::TargetGroup => self.target_groups.put(id, value),
                Kind::ServiceAssociation => self.service_associations.put(id, value),
                Kind::ProxyAssociation => self.proxy_associations.put(id, value),
                Kind::AccessLogSubscription => self.access_log_subscriptions.put(id, value),
            }
        } else if let Some((net, account)) = key
            .strip_prefix(keys::SHARES)
            .and_then(|r| r.split_once('/'))
        {
            self.shares
                .entry(net.to_string())
                .or_default()
                .insert(account.to_string());
        } else if let Some(name) = key.strip_prefix(keys::PROXIES) {
            match serde_json::from_slice::<ProxyRegistration>(value) {
                Ok(r) => {
                    self.proxies.insert(name.to_string(), r);
                }
                Err(e) => {
                    tracing::error!(proxy = name, error = %e, "ignoring undecodable proxy registration")
                }
            }
        }
    }

    fn delete(&mut self, key: &str) {
        if let Some((kind, id)) = keys::parse_resource(key) {
            match kind {
                Kind::ServiceNetwork => self.networks.delete(id),
                Kind::Service => self.services.delete(id),
                Kind::TargetGroup => self.target_groups.delete(id),
                Kind::ServiceAssociation => self.service_associations.delete(id),
                Kind::ProxyAssociation => self.proxy_associations.delete(id),
                Kind::AccessLogSubscription => self.access_log_subscriptions.delete(id),
            }
        } else if let Some((net, account)) = key
            .strip_prefix(keys::SHARES)
            .and_then(|r| r.split_once('/'))
        {
            if let Some(set) = self.shares.get_mut(net) {
                set.remove(account);
                if set.is_empty() {
                    self.shares.remove(net);
                }
            }
        } else if let Some(name) = key.strip_prefix(keys::PROXIES) {
            self.proxies.remove(name);
        }
    }
}
