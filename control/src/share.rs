//! Sharing a service network with other accounts (the RAM part of VPC
//! Lattice).
//!
//! The owner shares a network with an account; the sharee then sees the
//! network (GET by id, and in its list, with `"shared": true` and the
//! owner's `account`), names it **by id** in its own service associations,
//! proxy associations and proxy registrations, and its proxies get the
//! network in scope. It cannot change or delete the network, or manage its
//! shares (403). Another account that was not given the network gets 404.
//!
//! Revoking blocks new associations at once, and the next compile drops
//! the network from the sharee's proxies' scope. The sharee's existing
//! service associations **stay stored** (as in Lattice: the sharee removes
//! them) but are **inactive** while the share is revoked: compile counts an
//! association only while its account owns or is given the network, so
//! the owner's proxies stop routing to the sharee's services too. Sharing
//! again makes them active again.
//!
//! The owner may delete a shared network (its shares go with it); the
//! sharees' associations with it then name nothing and are ignored, like
//! associations of a revoked share (their references live in the sharee's
//! namespace, so they do not block the owner's delete).

use crate::audit::{self, Action, Actor};
use crate::keys;
use crate::repo::{Repo, RepoError};
use crate::store::{Compare, Op, Txn};
use serde::{Deserialize, Serialize};
use trellis_config::ServiceNetworkSpec;

/// One share: network `network` of `owner` is given to `account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareRecord {
    /// The network's id (how the sharee names it).
    pub network: String,
    /// The network's name.
    pub network_name: String,
    /// The owning account.
    pub owner: String,
    /// The account it is shared with.
    pub account: String,
    /// RFC 3339 time of the share.
    pub created_at: String,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The owner's network named `key` (id or name), or why not: 404 when
/// the caller cannot see it, 403 when it sees it only as a sharee.
async fn owned_network(
    repo: &Repo,
    account: &str,
    key: &str,
) -> Result<trellis_config::Resource<ServiceNetworkSpec>, RepoError> {
    let net = repo.get::<ServiceNetworkSpec>(account, key).await?;
    if net.meta.account != account {
        return Err(RepoError::Forbidden(format!(
            "service network '{key}' is shared with your account by {}; only its owner manages its shares",
            net.meta.account
        )));
    }
    Ok(net)
}

/// Share the caller's network `key` with `with` (a 12-digit account id
/// that exists). Sharing again changes nothing.
pub async fn share(
    repo: &Repo,
    actor: &Actor,
    key: &str,
    with: &str,
) -> Result<(ShareRecord, bool), RepoError> {
    let net = owned_network(repo, &actor.account, key).await?;
    if let Err(m) = trellis_config::identity::check_account_id(with) {
        return Err(RepoError::Invalid {
            kind: trellis_config::Kind::ServiceNetwork,
            errors: trellis_config::ValidationErrors::one("account", m),
        });
    }
    if with == actor.account {
        return Err(RepoError::BadRequest(
            "a network cannot be shared with its owner".into(),
        ));
    }
    let account_key = crate::accounts::account_key(with);
    let Some(acc) = repo.store().get(&account_key).await? else {
        return Err(RepoError::BadRequest(format!("no account '{with}'")));
    };
    let key_of_share = keys::share(&net.meta.id, with);
    if let Some(kv) = repo.store().get(&key_of_share).await? {
        let rec = serde_json::from_slice(&kv.value).map_err(|e| RepoError::Corrupt {
            key: key_of_share.clone(),
            message: e.to_string(),
        })?;
        return Ok((rec, false));
    }
    let rec = ShareRecord {
        network: net.meta.id.clone(),
        network_name: net.spec.name.clone(),
        owner: actor.account.clone(),
        account: with.to_string(),
        created_at: now(),
    };
    let net_key = keys::resource(trellis_config::Kind::ServiceNetwork, &net.meta.id);
    let txn = Txn::new()
        .when(Compare::ModRevision(key_of_share.clone(), 0))
        .when(Compare::Exists(net_key))
        .when(Compare::ModRevision(account_key, acc.mod_revision))
        .then(Op::Put(
            key_of_share,
            serde_json::to_vec(&rec).unwrap_or_default(),
        ))
        .then(audit::record(
            actor,
            Action::Create,
            "Share",
            &net.meta.id,
            Some(&format!("{}->{with}", net.spec.name)),
            None,
            None,
        ));
    if !repo.store().txn(txn).await?.succeeded {
        return Err(RepoError::Contention);
    }
    Ok((rec, true))
}

/// The shares of the caller's network `key`.
pub async fn list(repo: &Repo, account: &str, key: &str) -> Result<Vec<ShareRecord>, RepoError> {
    let net = owned_network(repo, account, key).await?;
    let (kvs, _) = repo.store().range(&keys::shares_of(&net.meta.id)).await?;
    kvs.iter()
        .map(|kv| {
            serde_json::from_slice(&kv.value).map_err(|e| RepoError::Corrupt {
                key: kv.key.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// Revoke the share of the caller's network `key` with `with`.
pub async fn revoke(repo: &Repo, actor: &Actor, key: &str, with: &str) -> Result<(), RepoError> {
    let net = owned_network(repo, &actor.account, key).await?;
    let key_of_share = keys::share(&net.meta.id, with);
    let txn = Txn::new()
        .when(Compare::Exists(key_of_share.clone()))
        .then(Op::Delete(key_of_share))
        .then(audit::record(
            actor,
            Action::Delete,
            "Share",
            &net.meta.id,
            Some(&format!("{}->{with}", net.spec.name)),
            None,
            None,
        ));
    if !repo.store().txn(txn).await?.succeeded {
        return Err(RepoError::NotFound {
            kind: trellis_config::Kind::ServiceNetwork,
            key: format!("{key} shared with {with}"),
        });
    }
    Ok(())
}

/// Every service association on network `key` (id or name), of any
/// account: the owner's and its sharees'. For the owner and the sharees.
pub async fn associations(
    repo: &Repo,
    account: &str,
    key: &str,
) -> Result<Vec<trellis_config::Resource<trellis_config::ServiceAssociationSpec>>, RepoError> {
    let net = repo.get::<ServiceNetworkSpec>(account, key).await?;
    let owner = net.meta.account.as_str();
    let (shares, _) = repo.store().range(&keys::shares_of(&net.meta.id)).await?;
    let sharees: std::collections::BTreeSet<&str> = shares
        .iter()
        .filter_map(|kv| kv.key.rsplit('/').next())
        .collect();
    let (kvs, _) = repo
        .store()
        .range(&keys::resources_of(
            trellis_config::Kind::ServiceAssociation,
        ))
        .await?;
    let mut out = Vec::new();
    for kv in &kvs {
        let Ok(a) = serde_json::from_slice::<
            trellis_config::Resource<trellis_config::ServiceAssociationSpec>,
        >(&kv.value) else {
            continue;
        };
        let on_it = (a.meta.account == owner
            && (a.spec.service_network == net.spec.name || a.spec.service_network == net.meta.id))
            || (a.spec.service_network == net.meta.id && sharees.contains(a.meta.account.as_str()));
        if on_it {
            out.push(a);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::embedded::EmbeddedStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn shares_go_with_their_network_and_need_it_to_exist() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let repo = Repo::new(Arc::clone(&store));
        let owner = Actor::new("111111111111", "tok-1");
        store
            .txn(Txn::new().then(Op::Put(
                crate::accounts::account_key("222222222222"),
                b"{}".to_vec(),
            )))
            .await
            .unwrap();
        let net: ServiceNetworkSpec =
            serde_json::from_value(serde_json::json!({"name": "n"})).unwrap();
        let net = repo.create("111111111111", net).await.unwrap();
        let (_, created) = share(&repo, &owner, "n", "222222222222").await.unwrap();
        assert!(created);
        assert!(!share(&repo, &owner, "n", "222222222222").await.unwrap().1);
        assert_eq!(
            store
                .range(&keys::shares_of(&net.meta.id))
                .await
                .unwrap()
                .0
                .len(),
            1
        );
        // The sharee cannot manage shares of what it only sees.
        let sharee = Actor::new("222222222222", "tok-2");
        assert!(matches!(
            share(&repo, &sharee, &net.meta.id, "333333333333").await,
            Err(RepoError::Forbidden(_))
        ));
        repo.delete::<ServiceNetworkSpec>("111111111111", "n", None)
            .await
            .unwrap();
        assert!(store.range(keys::SHARES).await.unwrap().0.is_empty());
    }
}
