//! Join tokens: how a new proxy proves it may get a mesh certificate.
//!
//! A token belongs to one account, expires, and may be limited to a number
//! of uses. Its value (`tjt_<id>_<secret>`) is shown once, when it is
//! created; the store keeps only the SHA-256 of the whole value, so a copy
//! of the store cannot join anything. The id inside the value lets the
//! control plane find the record without scanning, and lets operators list
//! and revoke tokens without ever seeing a value again.
//!
//! Redeeming a token never echoes it: every refusal names a reason
//! ([`Refused`]) and, when known, the token id.

use crate::audit::{self, Action, Actor};
use crate::keys;
use crate::store::{Compare, Op, Store, StoreError, Txn};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of every join token value, so a leaked one is recognisable (and
/// secret scanners can match it).
pub const TOKEN_PREFIX: &str = "tjt_";
/// Random bytes in a token id (hex in the value): enough to never collide
/// within one mesh.
const ID_BYTES: usize = 8;
/// Random bytes of secret in a token value: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;
/// Shortest lifetime a token may be given (tests use a few seconds).
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(1);
/// Longest lifetime: a join token is a bootstrap secret, not a credential
/// to keep; 30 days covers a slow rollout.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Longest description kept with a token.
pub const MAX_DESCRIPTION_LEN: usize = 256;
/// How often a redeem retries when another join changed the same token's
/// use count at the same time.
const REDEEM_ATTEMPTS: usize = 16;
/// `kind` of a join token's audit records (made, revoked; a join that
/// uses one is a proxy's, not a user's change, and is not recorded).
pub const AUDIT_KIND: &str = "JoinToken";

/// What the store keeps about a token (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Public id (the middle part of the value).
    pub id: String,
    /// The account a proxy joining with it belongs to.
    pub account: String,
    /// Free text from the creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Hex SHA-256 of the whole token value.
    pub sha256: String,
    /// Unix milliseconds of creation.
    pub created_ms: u64,
    /// Unix milliseconds after which it is refused.
    pub expires_ms: u64,
    /// How many joins it allows (`None`: unlimited until it expires).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// How many joins it made.
    #[serde(default)]
    pub uses: u32,
    /// Revoked by its owner (kept so a join with it says so).
    #[serde(default)]
    pub revoked: bool,
}

/// Why a join token was refused. The text never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `Authorization: Bearer` header, or not a join token's shape.
    #[error(
        "a join token is required: send `Authorization: Bearer tjt_...` (create one with POST /v1/join-tokens)"
    )]
    Missing,
    /// Shaped like a token, but no such token exists (or the secret is wrong).
    #[error("the join token is not known to this control plane")]
    Unknown,
    /// Past its expiry.
    #[error("join token {0} has expired")]
    Expired(String),
    /// Every allowed use was made.
    #[error("join token {0} has been used up (maxUses reached)")]
    UsedUp(String),
    /// Revoked by its owner.
    #[error("join token {0} has been revoked")]
    Revoked(String),
}

impl Refused {
    /// Short machine-readable reason (the `error` of the 401 body).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "join_token_missing",
            Self::Unknown => "join_token_unknown",
            Self::Expired(_) => "join_token_expired",
            Self::UsedUp(_) => "join_token_used_up",
            Self::Revoked(_) => "join_token_revoked",
        }
    }
}

/// Errors of token operations other than a refusal.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// Too many concurrent joins on one token.
    #[error("too many concurrent joins with join token {0}; retry")]
    Contention(String),
    /// A stored record could not be read.
    #[error("join token record {0} is corrupt: {1}")]
    Corrupt(String, String),
}

/// A token just created: its record and its value (shown once).
#[derive(Clone)]
pub struct NewToken {
    /// What is stored.
    pub record: TokenRecord,
    /// The value to hand to the operator; never stored, never logged.
    pub value: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("record", &self.record)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Now in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(value: &str) -> String {
    hex(digest(&SHA256, value.as_bytes()).as_ref())
}

fn random_hex(n: usize) -> Result<String, JoinError> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| JoinError::Random)?;
    Ok(hex(&bytes))
}

/// The id inside a token value, if it has a token's shape.
pub fn token_id(value: &str) -> Option<&str> {
    let rest = value.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex = |s: &str, n: usize| s.len() == n * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex(id, ID_BYTES) && is_hex(secret, SECRET_BYTES)).then_some(id)
}

/// The tokens of a store.
#[derive(Clone)]
pub struct JoinTokens {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinTokens")
    }
}

impl JoinTokens {
    /// Over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Create a token for `actor`'s account; the caller has validated the
    /// inputs. The audit record (kind `JoinToken`) is written with it.
    pub async fn create(
        &self,
        actor: &Actor,
        ttl: Duration,
        max_uses: Option<u32>,
        description: Option<String>,
    ) -> Result<NewToken, JoinError> {
        let account = actor.account.as_str();
        let id = random_hex(ID_BYTES)?;
        let value = format!("{TOKEN_PREFIX}{id}_{}", random_hex(SECRET_BYTES)?);
        let created_ms = now_ms();
        let record = TokenRecord {
            id: id.clone(),
            account: account.to_owned(),
            description,
            sha256: sha256_hex(&value),
            created_ms,
            expires_ms: created_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(0)),
            max_uses,
            uses: 0,
            revoked: false,
        };
        let key = keys::join_token(&id);
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| JoinError::Corrupt(id.clone(), e.to_string()))?;
        let recorded = audit::record(actor, Action::Create, AUDIT_KIND, &id, None, None, None);
        self.store
            .txn(Txn::new().then(Op::Put(key, bytes)).then(recorded))
            .await?;
        tracing::info!(token_id = %record.id, account, "join token created");
        Ok(NewToken { record, value })
    }

    /// Every token of `account`, oldest first.
    pub async fn list(&self, account: &str) -> Result<Vec<TokenRecord>, JoinError> {
        let (kvs, _) = self.store.range(keys::JOIN_TOKENS).await?;
        let mut out = Vec::new();
        for kv in kvs {
            let rec: TokenRecord = serde_json::from_slice(&kv.value)
                .map_err(|e| JoinError::Corrupt(kv.key.clone(), e.to_string()))?;
            if rec.account == account {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    async fn load(&self, id: &str) -> Result<Option<(TokenRecord, u64)>, JoinError> {
        let Some(kv) = self.store.get(&keys::join_token(id)).await? else {
            return Ok(None);
        };
        let rec = serde_json::from_slice(&kv.value)
            .map_err(|e| JoinError::Corrupt(id.to_owned(), e.to_string()))?;
        Ok(Some((rec, kv.mod_revision)))
    }

    /// Revoke `id` of `actor`'s account; `None` when it has no such
    /// token. The audit record (`delete` of a `JoinToken`) is written with
    /// the revocation; revoking a revoked token changes and records
    /// nothing.
    pub async fn revoke(&self, actor: &Actor, id: &str) -> Result<Option<TokenRecord>, JoinError> {
        let account = actor.account.as_str();
        for _ in 0..REDEEM_ATTEMPTS {
            let Some((mut rec, rev)) = self.load(id).await? else {
                return Ok(None);
            };
            if rec.account != account {
                return Ok(None);
            }
            if rec.revoked {
                return Ok(Some(rec));
            }
            rec.revoked = true;
            let recorded = audit::record(actor, Action::Delete, AUDIT_KIND, id, None, None, None);
            if self.write(&rec, rev, Some(recorded)).await? {
                tracing::info!(token_id = id, account, "join token revoked");
                return Ok(Some(rec));
            }
        }
        Err(JoinError::Contention(id.to_owned()))
    }

    /// Write `rec` if it is still at `rev`, with `also` in the same
    /// transaction.
    async fn write(
        &self,
        rec: &TokenRecord,
        rev: u64,
        also: Option<Op>,
    ) -> Result<bool, JoinError> {
        let key = keys::join_token(&rec.id);
        let bytes = serde_json::to_vec(rec)
            .map_err(|e| JoinError::Corrupt(rec.id.clone(), e.to_string()))?;
        let mut txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), rev))
            .then(Op::Put(key, bytes));
        if let Some(op) = also {
            txn = txn.then(op);
        }
        let res = self.store.txn(txn).await?;
        Ok(res.succeeded)
    }

    /// Check `value` without using it: the record when it may join now.
    pub async fn check(&self, value: &str) -> Result<Result<TokenRecord, Refused>, JoinError> {
        Ok(self.checked(value).await?.map(|(rec, _)| rec))
    }

    async fn checked(&self, value: &str) -> Result<Result<(TokenRecord, u64), Refused>, JoinError> {
        let Some(id) = token_id(value) else {
            return Ok(Err(Refused::Missing));
        };
        let Some((rec, rev)) = self.load(id).await? else {
            return Ok(Err(Refused::Unknown));
        };
        if rec.sha256 != sha256_hex(value) {
            return Ok(Err(Refused::Unknown));
        }
        let refused = if rec.revoked {
            Some(Refused::Revoked(rec.id.clone()))
        } else if now_ms() >= rec.expires_ms {
            Some(Refused::Expired(rec.id.clone()))
        } else if rec.max_uses.is_some_and(|max| rec.uses >= max) {
            Some(Refused::UsedUp(rec.id.clone()))
        } else {
            None
        };
        Ok(match refused {
            Some(r) => Err(r),
            None => Ok((rec, rev)),
        })
    }

    /// Use `value` once (atomically: two joins cannot both take its last use).
    pub async fn redeem(&self, value: &str) -> Result<Result<TokenRecord, Refused>, JoinError> {
        for _ in 0..REDEEM_ATTEMPTS {
            let (mut rec, rev) = match self.checked(value).await? {
                Ok(found) => found,
                Err(refused) => return Ok(Err(refused)),
            };
            rec.uses = rec.uses.saturating_add(1);
            if self.write(&rec, rev, None).await? {
                return Ok(Ok(rec));
            }
        }
        Err(JoinError::Contention(
            token_id(value).unwrap_or_default().to_owned(),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    async fn tokens() -> (JoinTokens, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        (JoinTokens::new(store), dir)
    }

    #[tokio::test]
    async fn value_is_not_stored_and_uses_are_counted() {
        let (t, _dir) = tokens().await;
        let new = t
            .create(
                &Actor::new("111111111111", audit::BOOTSTRAP_ACTOR),
                Duration::from_secs(60),
                Some(2),
                None,
            )
            .await
            .unwrap();
        assert_eq!(token_id(&new.value), Some(new.record.id.as_str()));
        assert!(!format!("{new:?}").contains(&new.value));
        let (kvs, _) = t.store.range(keys::JOIN_TOKENS).await.unwrap();
        let stored = String::from_utf8(kvs[0].value.clone()).unwrap();
        let secret = new.value.rsplit('_').next().unwrap();
        assert!(!stored.contains(secret), "{stored}");

        assert_eq!(t.redeem(&new.value).await.unwrap().unwrap().uses, 1);
        assert_eq!(t.redeem(&new.value).await.unwrap().unwrap().uses, 2);
        assert_eq!(
            t.redeem(&new.value).await.unwrap().unwrap_err(),
            Refused::UsedUp(new.record.id.clone())
        );
        assert_eq!(t.list("111111111111").await.unwrap()[0].uses, 2);
        assert!(t.list("222222222222").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn wrong_secret_expired_and_revoked_are_refused() {
        let (t, _dir) = tokens().await;
        let new = t
            .create(
                &Actor::new("111111111111", audit::BOOTSTRAP_ACTOR),
                Duration::from_secs(60),
                None,
                None,
            )
            .await
            .unwrap();
        let forged = format!("{TOKEN_PREFIX}{}_{}", new.record.id, "0".repeat(64));
        assert_eq!(
            t.redeem(&forged).await.unwrap().unwrap_err(),
            Refused::Unknown
        );
        assert_eq!(
            t.redeem("nope").await.unwrap().unwrap_err(),
            Refused::Missing
        );
        assert!(
            t.revoke(
                &Actor::new("222222222222", audit::BOOTSTRAP_ACTOR),
                &new.record.id
            )
            .await
            .unwrap()
            .is_none()
        );
        assert!(
            t.revoke(
                &Actor::new("111111111111", audit::BOOTSTRAP_ACTOR),
                &new.record.id
            )
            .await
            .unwrap()
            .is_some()
        );
        assert_eq!(
            t.redeem(&new.value).await.unwrap().unwrap_err(),
            Refused::Revoked(new.record.id.clone())
        );

        let short = t
            .create(
                &Actor::new("111111111111", audit::BOOTSTRAP_ACTOR),
                MIN_TOKEN_TTL,
                None,
                None,
            )
            .await
            .unwrap();
        tokio::time::sleep(MIN_TOKEN_TTL + Duration::from_millis(50)).await;
        let err = t.redeem(&short.value).await.unwrap().unwrap_err();
        assert_eq!(err, Refused::Expired(short.record.id.clone()));
        assert!(!err.to_string().contains(&short.value));
    }

    #[tokio::test]
    async fn concurrent_joins_cannot_exceed_max_uses() {
        let (t, _dir) = tokens().await;
        let new = t
            .create(
                &Actor::new("111111111111", audit::BOOTSTRAP_ACTOR),
                Duration::from_secs(60),
                Some(3),
                None,
            )
            .await
            .unwrap();
        let mut joins = Vec::new();
        for _ in 0..8 {
            let (t, v) = (t.clone(), new.value.clone());
            joins.push(tokio::spawn(async move { t.redeem(&v).await }));
        }
        let mut ok = 0;
        for j in joins {
            if let Ok(Ok(_)) = j.await.unwrap() {
                ok += 1;
            }
        }
        assert_eq!(ok, 3);
    }
}
