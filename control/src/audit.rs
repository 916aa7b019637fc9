//! The audit log: one record per change (resources, proxies forgotten,
//! accounts, tokens, join tokens, shares), written **in the same store transaction** as the
//! change it describes, so a change without its record (or a record of a
//! change that did not happen) cannot exist.
//!
//! Records live under `/trellis/audit/<account>/<newest-first key>`: the
//! key's first part is `u64::MAX - microseconds since the epoch`, so a
//! prefix read returns the newest first; a random suffix keeps two records
//! of the same microsecond apart. They are kept until removed by hand (no
//! retention yet).

use crate::store::{Op, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of every audit record.
pub const AUDIT: &str = "/trellis/audit/";
/// Records one `GET /v1/audit` page returns when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most records one page returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Token id recorded for changes made with the admin token.
pub const ADMIN_ACTOR: &str = "admin";
/// Token id recorded for changes made in process (`trellis dev`, tests).
pub const BOOTSTRAP_ACTOR: &str = "bootstrap";

/// Who made a change: the account acted for and the token used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The account the change belongs to (whose audit log gets it).
    pub account: String,
    /// The token id, or [`ADMIN_ACTOR`] / [`BOOTSTRAP_ACTOR`].
    pub token_id: String,
}

impl Actor {
    /// `token_id` acting for `account`.
    pub fn new(account: impl Into<String>, token_id: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            token_id: token_id.into(),
        }
    }
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Created.
    Create,
    /// Updated (a new version).
    Update,
    /// Deleted (or, for a token, revoked).
    Delete,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Record id (also the page token of the page after it).
    pub id: String,
    /// RFC 3339 time of the change.
    pub at: String,
    /// The account.
    pub account: String,
    /// The token that made the change (`admin` for the admin token).
    pub token_id: String,
    /// Create, update or delete.
    pub action: Action,
    /// What kind of thing changed: a resource kind (`ServiceNetwork`, ...),
    /// `Proxy`, `Account`, `Token`, `JoinToken` or `Share`.
    pub kind: String,
    /// Its id (resource id, proxy name, account id, token id).
    pub resource_id: String,
    /// Its name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The version before the change (none for a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_version: Option<u64>,
    /// The version after the change (none for a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_version: Option<u64>,
}

/// The store write of a record of `action` on `kind`/`resource_id` by `actor`.
pub fn record(
    actor: &Actor,
    action: Action,
    kind: &str,
    resource_id: &str,
    name: Option<&str>,
    before_version: Option<u64>,
    after_version: Option<u64>,
) -> Op {
    let now = SystemTime::now();
    let micros = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default();
    let id = format!("{:020}-{:08x}", u64::MAX - micros, fastrand::u32(..));
    let rec = AuditRecord {
        id: id.clone(),
        at: humantime::format_rfc3339_micros(now).to_string(),
        account: actor.account.clone(),
        token_id: actor.token_id.clone(),
        action,
        kind: kind.to_string(),
        resource_id: resource_id.to_string(),
        name: name.map(str::to_string),
        before_version,
        after_version,
    };
    Op::Put(
        format!("{AUDIT}{}/{id}", actor.account),
        serde_json::to_vec(&rec).unwrap_or_default(),
    )
}

/// One page of an account's records, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    /// The records.
    pub items: Vec<AuditRecord>,
    /// Pass as `pageToken` for the next (older) page.
    pub next_page_token: Option<String>,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A bad page size.
    #[error("limit must be between 1 and {MAX_PAGE_SIZE}, got {0}")]
    BadLimit(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A page of `account`'s records, newest first, after `page_token`.
pub async fn page(
    store: &dyn Store,
    account: &str,
    limit: Option<usize>,
    page_token: Option<&str>,
) -> Result<AuditPage, AuditError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(AuditError::BadLimit(limit));
    }
    let prefix = format!("{AUDIT}{account}/");
    let (kvs, _) = store.range(&prefix).await?;
    let mut items = Vec::new();
    let mut next_page_token = None;
    for kv in &kvs {
        let id = &kv.key[prefix.len()..];
        if page_token.is_some_and(|t| id <= t) {
            continue;
        }
        if items.len() == limit {
            next_page_token = items.last().map(|r: &AuditRecord| r.id.clone());
            break;
        }
        // A record that does not decode is skipped rather than failing the page.
        if let Ok(r) = serde_json::from_slice::<AuditRecord>(&kv.value) {
            items.push(r);
        }
    }
    Ok(AuditPage {
        items,
        next_page_token,
    })
}
