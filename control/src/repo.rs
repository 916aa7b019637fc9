//! Resource CRUD over the [`Store`]: validation, unique names, references
//! that must exist and block deletes, optimistic concurrency. Every write is
//! one store transaction, so a rejected or conflicting write changes nothing.

use crate::keys;
use crate::store::{Compare, KeyValue, Op, Store, StoreError, Txn};
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;
use trellis_config::{
    FieldError, Kind, Meta, Reference, Resource, Spec, TargetGroupSpec, ValidationErrors,
};

/// Most items one list page returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Items per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Attempts of a write that lost a race on something other than its own
/// precondition before the caller is told to retry.
const WRITE_ATTEMPTS: usize = 8;

/// Why a resource operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The input is invalid (400).
    #[error("invalid {kind}: {errors}")]
    Invalid {
        /// Kind written.
        kind: Kind,
        /// Every problem, with field paths.
        errors: ValidationErrors,
    },
    /// No such resource in the caller's account (404).
    #[error("no {} '{key}'", kind.words())]
    NotFound {
        /// Kind asked for.
        kind: Kind,
        /// Id or name asked for.
        key: String,
    },
    /// The name is already used (409).
    #[error("a {} named '{name}' already exists", kind.words())]
    NameTaken {
        /// Kind written.
        kind: Kind,
        /// The name.
        name: String,
    },
    /// Another resource of the same identity exists (409).
    #[error("{0}")]
    Duplicate(String),
    /// Still referenced by other resources (409).
    #[error("{} '{name}' is still used by {}", kind.words(), by.join(", "))]
    Referenced {
        /// Kind deleted.
        kind: Kind,
        /// Its name.
        name: String,
        /// Who references it, e.g. `service 'api' (listeners[0].defaultAction…)`.
        by: Vec<String>,
    },
    /// `If-Match` named another version (412).
    #[error("version {expected} was expected but the current version is {actual}")]
    PreconditionFailed {
        /// From `If-Match`.
        expected: u64,
        /// Stored.
        actual: u64,
    },
    /// Too many concurrent writers on the same resources (503, retry).
    #[error("too much contention on this resource; retry")]
    Contention,
    /// The caller sees the resource (it is shared with its account) but
    /// may not do this to it (403).
    #[error("{0}")]
    Forbidden(String),
    /// A bad request parameter (400), such as a page size.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored data could not be decoded (500).
    #[error("stored data is corrupt at {key}: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// Decoder message.
        message: String,
    },
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A new resource.
    Created,
    /// A new version of an existing resource.
    Updated,
    /// The stored spec already equalled the input; nothing was written.
    Unchanged,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page<S: Spec> {
    /// The items, in id order.
    pub items: Vec<Resource<S>>,
    /// Token for the next page, if there is one.
    pub next_page_token: Option<String>,
}

/// A value stored under a reference key: who refers, from which field.
#[derive(serde::Serialize, serde::Deserialize)]
struct RefRecord {
    kind: Kind,
    name: String,
    field: String,
}

/// Resource operations on a store.
#[derive(Clone)]
pub struct Repo {
    store: Arc<dyn Store>,
    /// Who writes: each write then carries its audit record in its own
    /// transaction. `None` (in-process writes) records nothing.
    actor: Option<crate::audit::Actor>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Repo")
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn new_id(kind: Kind) -> String {
    format!("{}-{:016x}", kind.id_prefix(), fastrand::u64(..))
}

fn decode<S: Spec>(kv: &KeyValue) -> Result<Resource<S>, RepoError> {
    serde_json::from_slice(&kv.value).map_err(|e| RepoError::Corrupt {
        key: kv.key.clone(),
        message: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own plain data types to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Keys that must be unique besides the name, for kinds that have them: a
/// service can be associated with a network only once, since that pair is
/// its DNS name.
fn extra_unique_keys<S: Spec>(account: &str, spec: &S) -> Vec<(String, String)> {
    if S::KIND == Kind::ServiceAssociation
        && let Ok(v) = serde_json::to_value(spec)
    {
        let net = v["serviceNetwork"].as_str().unwrap_or_default();
        let svc = v["service"].as_str().unwrap_or_default();
        return vec![(
            keys::name(S::KIND, account, &format!("pair:{net}:{svc}")),
            format!("service '{svc}' is already associated with service network '{net}'"),
        )];
    }
    Vec::new()
}

/// Server-computed facts stored with a resource, computed from the spec
/// being written and, on an update, the resource it replaces (`old`, with
/// its own status): an association's DNS name; a target group's draining
/// targets (see [`crate::drain`]). Written in the same transaction as the
/// spec, so the two never disagree.
fn status_of<S: Spec>(spec: &S, old: Option<&Resource<S>>) -> Option<serde_json::Value> {
    if S::KIND == Kind::ServiceAssociation {
        let v = serde_json::to_value(spec).ok()?;
        let dns = trellis_config::dns_name(v["service"].as_str()?, v["serviceNetwork"].as_str()?);
        return Some(serde_json::json!({ "dnsName": dns }));
    }
    let any: &dyn Any = spec;
    if let Some(tg) = any.downcast_ref::<TargetGroupSpec>() {
        // A new target group has nothing to drain.
        let old = (old? as &dyn Any).downcast_ref::<Resource<TargetGroupSpec>>()?;
        return crate::drain::next_status(old, tg, crate::drain::now_ms()).to_value();
    }
    None
}

/// An association with a shared network (named by id) gets its DNS name
/// from the network's name, which the share record holds.
fn shared_dns<S: Spec>(
    status: Option<serde_json::Value>,
    spec: &S,
    refs: &[(Reference, KeyValue)],
) -> Option<serde_json::Value> {
    if S::KIND != Kind::ServiceAssociation {
        return status;
    }
    let share = refs
        .iter()
        .find(|(r, kv)| r.kind == Kind::ServiceNetwork && kv.key.starts_with(keys::SHARES))
        .and_then(|(_, kv)| serde_json::from_slice::<crate::share::ShareRecord>(&kv.value).ok());
    let (Some(share), Ok(v)) = (share, serde_json::to_value(spec)) else {
        return status;
    };
    let dns = trellis_config::dns_name(v["service"].as_str()?, &share.network_name);
    Some(serde_json::json!({ "dnsName": dns }))
}

impl Repo {
    /// Resource operations on `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, actor: None }
    }

    /// The same operations, recording `actor` in the audit log with every
    /// write (in the write's own transaction).
    pub fn acting_as(&self, actor: crate::audit::Actor) -> Self {
        Self {
            store: Arc::clone(&self.store),
            actor: Some(actor),
        }
    }

    /// Add the audit record of a write to its transaction.
    fn audited<S: Spec>(
        &self,
        txn: Txn,
        action: crate::audit::Action,
        id: &str,
        name: &str,
        before: Option<u64>,
        after: Option<u64>,
    ) -> Txn {
        match &self.actor {
            Some(a) => txn.then(crate::audit::record(
                a,
                action,
                S::KIND.as_str(),
                id,
                Some(name),
                before,
                after,
            )),
            None => txn,
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Find the resource key for an id or a name.
    async fn lookup(
        &self,
        kind: Kind,
        account: &str,
        id_or_name: &str,
    ) -> Result<Option<(String, KeyValue)>, RepoError> {
        let id = if Kind::of_id(id_or_name) == Some(kind) {
            id_or_name.to_string()
        } else {
            match self
                .store
                .get(&keys::name(kind, account, id_or_name))
                .await?
            {
                Some(kv) => String::from_utf8_lossy(&kv.value).into_owned(),
                None => return Ok(None),
            }
        };
        let key = keys::resource(kind, &id);
        Ok(self.store.get(&key).await?.map(|kv| (id, kv)))
    }

    /// Get one resource by id or name.
    pub async fn get<S: Spec>(
        &self,
        account: &str,
        id_or_name: &str,
    ) -> Result<Resource<S>, RepoError> {
        let (_, kv) = self
            .lookup(S::KIND, account, id_or_name)
            .await?
            .ok_or_else(|| RepoError::NotFound {
                kind: S::KIND,
                key: id_or_name.to_string(),
            })?;
        let r: Resource<S> = decode(&kv)?;
        if r.meta.account != account && !self.shared_with(S::KIND, &r.meta.id, account).await? {
            return Err(RepoError::NotFound {
                kind: S::KIND,
                key: id_or_name.to_string(),
            });
        }
        Ok(r)
    }

    /// Whether resource `id` of `kind` is a service network shared with `account`.
    async fn shared_with(&self, kind: Kind, id: &str, account: &str) -> Result<bool, RepoError> {
        Ok(kind == Kind::ServiceNetwork
            && self.store.get(&keys::share(id, account)).await?.is_some())
    }

    /// 403 for a network the caller sees only as a sharee, else 404.
    async fn not_yours(&self, kind: Kind, id: &str, account: &str, key: &str) -> RepoError {
        match self.shared_with(kind, id, account).await {
            Ok(true) => RepoError::Forbidden(format!(
                "{} '{key}' is shared with your account; only its owner may change or delete it",
                kind.words()
            )),
            Ok(false) => RepoError::NotFound {
                kind,
                key: key.to_string(),
            },
            Err(e) => e,
        }
    }

    /// Ids of the service networks shared with `account`.
    async fn shared_networks(
        &self,
        account: &str,
    ) -> Result<std::collections::BTreeSet<String>, RepoError> {
        let (kvs, _) = self.store.range(keys::SHARES).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let (net, who) = kv.key.strip_prefix(keys::SHARES)?.split_once('/')?;
                (who == account).then(|| net.to_string())
            })
            .collect())
    }

    /// List a page of the account's resources of a kind, in id order.
    pub async fn list<S: Spec>(
        &self,
        account: &str,
        limit: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<Page<S>, RepoError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(RepoError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
            )));
        }
        let shared = if S::KIND == Kind::ServiceNetwork {
            self.shared_networks(account).await?
        } else {
            Default::default()
        };
        let (kvs, _) = self.store.range(&keys::resources_of(S::KIND)).await?;
        let mut items = Vec::new();
        let mut next_page_token = None;
        for kv in &kvs {
            if let Some(tok) = page_token
                && kv.key.as_str() <= keys::resource(S::KIND, tok).as_str()
            {
                continue;
            }
            let r: Resource<S> = decode(kv)?;
            if r.meta.account != account && !shared.contains(&r.meta.id) {
                continue;
            }
            if items.len() == limit {
                next_page_token = items.last().map(|l: &Resource<S>| l.meta.id.clone());
                break;
            }
            items.push(r);
        }
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Check the spec and resolve its references: the name keys of the
    /// referenced resources, as read now.
    async fn check<S: Spec>(
        &self,
        account: &str,
        spec: &S,
    ) -> Result<Vec<(Reference, KeyValue)>, RepoError> {
        spec.validate().map_err(|errors| RepoError::Invalid {
            kind: S::KIND,
            errors,
        })?;
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for r in spec.references() {
            let mut kv = self
                .store
                .get(&keys::name(r.kind, account, &r.name))
                .await?;
            if kv.is_none()
                && matches!(S::KIND, Kind::ServiceAssociation | Kind::ProxyAssociation)
                && r.kind == Kind::ServiceNetwork
                && Kind::of_id(&r.name) == Some(r.kind)
            {
                // Another account's network shared with this one, named by
                // id (only associations may name one: a sharee does not
                // subscribe to the owner's logs). The share key is what
                // the write depends on: a revoke between this read and the
                // write makes the write fail.
                kv = self.store.get(&keys::share(&r.name, account)).await?;
            }
            match kv {
                Some(kv) => found.push((r, kv)),
                None => errors.push(FieldError {
                    field: r.field.clone(),
                    message: format!("no {} named '{}'", r.kind.words(), r.name),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(RepoError::Invalid {
                kind: S::KIND,
                errors: ValidationErrors { errors },
            });
        }
        Ok(found)
    }

    /// Add to `txn` the guards and writes for `refs` held by `referrer_id`.
    fn write_refs<S: Spec>(
        txn: Txn,
        account: &str,
        spec: &S,
        referrer_id: &str,
        refs: &[(Reference, KeyValue)],
    ) -> Txn {
        let mut txn = txn;
        let mut touched = BTreeMap::new();
        let mut records = BTreeMap::new();
        for (r, name_kv) in refs {
            touched.insert(name_kv.key.clone(), name_kv.clone());
            let rec = RefRecord {
                kind: S::KIND,
                name: spec.name().to_string(),
                field: r.field.clone(),
            };
            // One key per referenced resource: the first field is enough to explain a 409.
            records
                .entry(keys::reference(r.kind, account, &r.name, referrer_id))
                .or_insert(rec);
        }
        for (key, rec) in records {
            txn = txn.then(Op::Put(key, encode(&rec)));
        }
        for (key, kv) in touched {
            // Guard: the referenced resource still exists as we saw it, and
            // rewriting its name key makes a concurrent delete of it fail.
            txn = txn
                .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                .then(Op::Put(key, kv.value));
        }
        txn
    }

    /// Create a resource; its name must be free.
    pub async fn create<S: Spec>(
        &self,
        account: &str,
        mut spec: S,
    ) -> Result<Resource<S>, RepoError> {
        spec.normalize();
        for _ in 0..WRITE_ATTEMPTS {
            let refs = self.check(account, &spec).await?;
            let id = new_id(S::KIND);
            let at = now();
            let res = Resource {
                meta: Meta {
                    id: id.clone(),
                    account: account.to_string(),
                    version: 1,
                    created_at: at.clone(),
                    updated_at: at,
                },
                status: shared_dns(status_of(&spec, None), &spec, &refs),
                spec: spec.clone(),
            };
            let name_key = keys::name(S::KIND, account, spec.name());
            let mut txn = Txn::new()
                .when(Compare::ModRevision(name_key.clone(), 0))
                .then(Op::Put(keys::resource(S::KIND, &id), encode(&res)))
                .then(Op::Put(name_key.clone(), id.clone().into_bytes()));
            let uniques = extra_unique_keys(account, &spec);
            for (k, _) in &uniques {
                txn = txn
                    .when(Compare::ModRevision(k.clone(), 0))
                    .then(Op::Put(k.clone(), id.clone().into_bytes()));
            }
            txn = Self::write_refs(txn, account, &spec, &id, &refs);
            txn = self.audited::<S>(
                txn,
                crate::audit::Action::Create,
                &id,
                spec.name(),
                None,
                Some(1),
            );
            if self.store.txn(txn).await?.succeeded {
                return Ok(res);
            }
            if self.store.get(&name_key).await?.is_some() {
                return Err(RepoError::NameTaken {
                    kind: S::KIND,
                    name: spec.name().to_string(),
                });
            }
            for (k, msg) in &uniques {
                if self.store.get(k).await?.is_some() {
                    return Err(RepoError::Duplicate(msg.clone()));
                }
            }
            // A referenced resource changed under us: check again.
        }
        Err(RepoError::Contention)
    }

    /// Create or update by id or name (`PUT`). With `if_match`, the stored
    /// version must equal it. An input equal to the stored spec writes nothing.
    pub async fn upsert<S: Spec>(
        &self,
        account: &str,
        id_or_name: &str,
        mut spec: S,
        if_match: Option<u64>,
    ) -> Result<(Resource<S>, WriteOutcome), RepoError> {
        spec.normalize();
        for _ in 0..WRITE_ATTEMPTS {
            let Some((id, kv)) = self.lookup(S::KIND, account, id_or_name).await? else {
                if let Some(expected) = if_match {
                    return Err(RepoError::PreconditionFailed {
                        expected,
                        actual: 0,
                    });
                }
                if Kind::of_id(id_or_name) == Some(S::KIND) {
                    return Err(RepoError::NotFound {
                        kind: S::KIND,
                        key: id_or_name.to_string(),
                    });
                }
                if spec.name() != id_or_name {
                    return Err(RepoError::Invalid {
                        kind: S::KIND,
                        errors: ValidationErrors::one(
                            "name",
                            format!("'{}' differs from '{id_or_name}' in the URL", spec.name()),
                        ),
                    });
                }
                match self.create(account, spec.clone()).await {
                    Err(RepoError::NameTaken { .. }) => continue,
                    other => return other.map(|r| (r, WriteOutcome::Created)),
                }
            };
            let old: Resource<S> = decode(&kv)?;
            if old.meta.account != account {
                return Err(self.not_yours(S::KIND, &id, account, id_or_name).await);
            }
            if let Some(expected) = if_match
                && expected != old.meta.version
            {
                return Err(RepoError::PreconditionFailed {
                    expected,
                    actual: old.meta.version,
                });
            }
            if spec.name() != old.spec.name() {
                return Err(RepoError::Invalid {
                    kind: S::KIND,
                    errors: ValidationErrors::one(
                        "name",
                        format!(
                            "cannot be changed from '{}' to '{}'; create a new resource instead",
                            old.spec.name(),
                            spec.name()
                        ),
                    ),
                });
            }
            if spec == old.spec {
                return Ok((old, WriteOutcome::Unchanged));
            }
            let refs = self.check(account, &spec).await?;
            let res = Resource {
                meta: Meta {
                    version: old.meta.version + 1,
                    updated_at: now(),
                    ..old.meta.clone()
                },
                status: shared_dns(status_of(&spec, Some(&old)), &spec, &refs),
                spec: spec.clone(),
            };
            let mut txn = Txn::new()
                .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                .then(Op::Put(kv.key.clone(), encode(&res)));
            // etcd refuses a key twice in one transaction: delete only the
            // references that the new spec no longer has.
            let new_ref_keys: std::collections::BTreeSet<String> = refs
                .iter()
                .map(|(r, _)| keys::reference(r.kind, account, &r.name, &id))
                .collect();
            let old_ref_keys: std::collections::BTreeSet<String> = old
                .spec
                .references()
                .iter()
                .map(|r| keys::reference(r.kind, account, &r.name, &id))
                .collect();
            for k in old_ref_keys.difference(&new_ref_keys) {
                txn = txn.then(Op::Delete(k.clone()));
            }
            let old_uniques = extra_unique_keys(account, &old.spec);
            let new_uniques = extra_unique_keys(account, &spec);
            for (k, _) in &old_uniques {
                if !new_uniques.iter().any(|(n, _)| n == k) {
                    txn = txn.then(Op::Delete(k.clone()));
                }
            }
            for (k, _) in &new_uniques {
                if !old_uniques.iter().any(|(o, _)| o == k) {
                    txn = txn
                        .when(Compare::ModRevision(k.clone(), 0))
                        .then(Op::Put(k.clone(), id.clone().into_bytes()));
                }
            }
            txn = Self::write_refs(txn, account, &spec, &id, &refs);
            txn = self.audited::<S>(
                txn,
                crate::audit::Action::Update,
                &id,
                spec.name(),
                Some(old.meta.version),
                Some(res.meta.version),
            );
            if self.store.txn(txn).await?.succeeded {
                return Ok((res, WriteOutcome::Updated));
            }
            for (k, msg) in &new_uniques {
                if !old_uniques.iter().any(|(o, _)| o == k) && self.store.get(k).await?.is_some() {
                    return Err(RepoError::Duplicate(msg.clone()));
                }
            }
            // Lost a race: re-read; a stale If-Match then yields 412.
        }
        Err(RepoError::Contention)
    }

    /// Delete by id or name; refused while other resources reference it.
    pub async fn delete<S: Spec>(
        &self,
        account: &str,
        id_or_name: &str,
        if_match: Option<u64>,
    ) -> Result<(), RepoError> {
        for _ in 0..WRITE_ATTEMPTS {
            let Some((id, kv)) = self.lookup(S::KIND, account, id_or_name).await? else {
                return Err(RepoError::NotFound {
                    kind: S::KIND,
                    key: id_or_name.to_string(),
                });
            };
            let old: Resource<S> = decode(&kv)?;
            if old.meta.account != account {
                return Err(self.not_yours(S::KIND, &id, account, id_or_name).await);
            }
            if let Some(expected) = if_match
                && expected != old.meta.version
            {
                return Err(RepoError::PreconditionFailed {
                    expected,
                    actual: old.meta.version,
                });
            }
            let name = old.spec.name().to_string();
            // Read the name key before the referrers: a referrer written
            // after this read rewrites the name key, so the delete's guard fails.
            let name_key = keys::name(S::KIND, account, &name);
            let Some(name_kv) = self.store.get(&name_key).await? else {
                continue;
            };
            let (referrers, _) = self
                .store
                .range(&keys::refs_of(S::KIND, account, &name))
                .await?;
            if !referrers.is_empty() {
                let by = referrers
                    .iter()
                    .map(|r| match serde_json::from_slice::<RefRecord>(&r.value) {
                        Ok(rec) => format!("{} '{}' ({})", rec.kind.words(), rec.name, rec.field),
                        Err(_) => r.key.clone(),
                    })
                    .collect();
                return Err(RepoError::Referenced {
                    kind: S::KIND,
                    name,
                    by,
                });
            }
            let mut txn = Txn::new()
                .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                .when(Compare::ModRevision(name_key.clone(), name_kv.mod_revision))
                .then(Op::Delete(kv.key.clone()))
                .then(Op::Delete(name_key));
            for (k, _) in extra_unique_keys(account, &old.spec) {
                txn = txn.then(Op::Delete(k));
            }
            let own_refs: std::collections::BTreeSet<String> = old
                .spec
                .references()
                .iter()
                .map(|r| keys::reference(r.kind, account, &r.name, &id))
                .collect();
            for k in own_refs {
                txn = txn.then(Op::Delete(k));
            }
            if S::KIND == Kind::ServiceNetwork {
                // Its shares go with it (a share needs the network to exist,
                // so none can be added after this read).
                let (shares, _) = self.store.range(&keys::shares_of(&id)).await?;
                for kv in shares {
                    txn = txn.then(Op::Delete(kv.key));
                }
            }
            txn = self.audited::<S>(
                txn,
                crate::audit::Action::Delete,
                &id,
                &name,
                Some(old.meta.version),
                None,
            );
            if self.store.txn(txn).await?.succeeded {
                return Ok(());
            }
        }
        Err(RepoError::Contention)
    }
}
