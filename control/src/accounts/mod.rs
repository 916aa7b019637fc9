//! Accounts and API tokens, kept in the [`Store`] (so the etcd backend
//! serves them too).
//!
//! A token is `trellis_<token id>_<secret>`: the id is not secret (it is
//! listed and used to revoke), the secret is 32 random bytes. Only the
//! SHA-256 of the whole token is stored; a presented token is found by its
//! hash, so checking it compares no secret byte by byte (nothing to time).
//!
//! | key | value |
//! |---|---|
//! | `/trellis/auth/account/<id>` | an [`Account`] |
//! | `/trellis/auth/token/<sha256 hex>` | the [`TokenInfo`] of the token with that hash |
//! | `/trellis/auth/token-id/<account>/<token id>` | a [`TokenIndex`]: the info and the hash, to list and revoke |

pub mod admin;
pub mod secret;

use crate::audit::{self, Action, Actor};
use crate::store::{Compare, Op, Store, StoreError, Txn};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;
use trellis_config::ValidationErrors;

pub use admin::{ADMIN_TOKEN_FILE, AdminToken};

/// Prefix of accounts in the store.
pub const ACCOUNTS: &str = "/trellis/auth/account/";
/// Prefix of token records by hash.
pub const TOKENS_BY_HASH: &str = "/trellis/auth/token/";
/// Prefix of token records by account and id.
pub const TOKENS_BY_ID: &str = "/trellis/auth/token-id/";
/// Longest token description: a note for people, not a document.
pub const MAX_DESCRIPTION_LEN: usize = 256;
/// Longest account name.
pub const MAX_ACCOUNT_NAME_LEN: usize = 128;

/// An account: the owner of resources, proxies and tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// 12 digits, e.g. `123456789012`.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// RFC 3339 time of creation.
    pub created_at: String,
}

/// What is known of a token, never its value or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Token id (not secret), e.g. `tok-5f0c1d2e3a4b5c6d`.
    pub id: String,
    /// The account the token acts for.
    pub account: String,
    /// What the token is for, as given on creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// RFC 3339 time of creation.
    pub created_at: String,
}

/// The record under the id key: the info and the hash, so a revoke can
/// delete the hash key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenIndex {
    /// The token's info.
    pub info: TokenInfo,
    /// Hex SHA-256 of the token.
    pub hash: String,
}

/// A token just made: the only time its value exists outside the caller.
#[derive(Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    /// What is stored.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The token value: shown once, never again.
    pub token: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("info", &self.info)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Who presented a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin token: manages accounts and tokens only.
    Admin,
    /// An account's API token.
    Account {
        /// The account.
        account: String,
        /// The token's id (for audit records).
        token_id: String,
    },
}

/// Why an account or token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Bad input (400).
    #[error("invalid input: {0}")]
    Invalid(ValidationErrors),
    /// No such account or token (404).
    #[error("{0}")]
    NotFound(String),
    /// The account id is taken (409).
    #[error("{0}")]
    Exists(String),
    /// Random bytes could not be drawn (500).
    #[error("no random bytes available")]
    Random,
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored data could not be decoded (500).
    #[error("stored data is corrupt at {0}")]
    Corrupt(String),
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Our own plain data types always serialise.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, AccountError> {
    serde_json::from_slice(bytes).map_err(|_| AccountError::Corrupt(key.to_string()))
}

/// Key of an account.
pub fn account_key(id: &str) -> String {
    format!("{ACCOUNTS}{id}")
}

fn hash_key(hash: &str) -> String {
    format!("{TOKENS_BY_HASH}{hash}")
}

fn id_key(account: &str, token_id: &str) -> String {
    format!("{TOKENS_BY_ID}{account}/{token_id}")
}

/// Accounts and tokens over a store, and the admin token.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    admin: AdminToken,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accounts")
    }
}

impl Accounts {
    /// Accounts in `store`; `admin` is the bootstrap token.
    pub fn new(store: Arc<dyn Store>, admin: AdminToken) -> Self {
        Self { store, admin }
    }

    /// Who `token` belongs to; `None` for an unknown or revoked token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, AccountError> {
        let hash = secret::sha256_hex(token);
        if self.admin.matches_hash(&hash) {
            return Ok(Some(Principal::Admin));
        }
        let key = hash_key(&hash);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let info: TokenInfo = decode(&key, &kv.value)?;
        Ok(Some(Principal::Account {
            account: info.account,
            token_id: info.id,
        }))
    }

    /// Create an account; its id must be free.
    pub async fn create_account(
        &self,
        actor_token: &str,
        id: &str,
        name: &str,
    ) -> Result<Account, AccountError> {
        let mut errors = Vec::new();
        if let Err(m) = trellis_config::identity::check_account_id(id) {
            errors.push(trellis_config::FieldError {
                field: "id".into(),
                message: m,
            });
        }
        if name.trim().is_empty() || name.len() > MAX_ACCOUNT_NAME_LEN {
            errors.push(trellis_config::FieldError {
                field: "name".into(),
                message: format!("must be 1 to {MAX_ACCOUNT_NAME_LEN} characters"),
            });
        }
        if !errors.is_empty() {
            return Err(AccountError::Invalid(ValidationErrors { errors }));
        }
        let account = Account {
            id: id.to_string(),
            name: name.to_string(),
            created_at: now(),
        };
        let key = account_key(id);
        let res = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), 0))
                    .then(Op::Put(key, encode(&account)))
                    .then(audit::record(
                        &Actor::new(id, actor_token),
                        Action::Create,
                        "Account",
                        id,
                        Some(name),
                        None,
                        None,
                    )),
            )
            .await?;
        if !res.succeeded {
            return Err(AccountError::Exists(format!(
                "an account with id '{id}' already exists"
            )));
        }
        Ok(account)
    }

    /// One account.
    pub async fn account(&self, id: &str) -> Result<Account, AccountError> {
        let key = account_key(id);
        match self.store.get(&key).await? {
            Some(kv) => decode(&key, &kv.value),
            None => Err(AccountError::NotFound(format!("no account '{id}'"))),
        }
    }

    /// Every account, in id order.
    pub async fn accounts(&self) -> Result<Vec<Account>, AccountError> {
        let (kvs, _) = self.store.range(ACCOUNTS).await?;
        kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect()
    }

    /// Make a token for `account` (which must exist).
    pub async fn issue_token(
        &self,
        actor: &Actor,
        account: &str,
        description: Option<String>,
    ) -> Result<IssuedToken, AccountError> {
        if let Some(d) = &description
            && d.len() > MAX_DESCRIPTION_LEN
        {
            return Err(AccountError::Invalid(ValidationErrors::one(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} bytes"),
            )));
        }
        let account_key = account_key(account);
        let Some(acc) = self.store.get(&account_key).await? else {
            return Err(AccountError::NotFound(format!("no account '{account}'")));
        };
        let (id, token) = secret::new_token()?;
        let hash = secret::sha256_hex(&token);
        let info = TokenInfo {
            id: id.clone(),
            account: account.to_string(),
            description,
            created_at: now(),
        };
        let index = TokenIndex {
            info: info.clone(),
            hash: hash.clone(),
        };
        let res = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(account_key, acc.mod_revision))
                    .when(Compare::ModRevision(hash_key(&hash), 0))
                    .then(Op::Put(hash_key(&hash), encode(&info)))
                    .then(Op::Put(id_key(account, &id), encode(&index)))
                    .then(audit::record(
                        actor,
                        Action::Create,
                        "Token",
                        &id,
                        None,
                        None,
                        None,
                    )),
            )
            .await?;
        if !res.succeeded {
            // The account changed (or, with 2^-256 odds, the hash exists): refuse rather than guess.
            return Err(AccountError::Exists(
                "the account changed while the token was made; retry".into(),
            ));
        }
        Ok(IssuedToken { info, token })
    }

    /// The tokens of `account`, in id order.
    pub async fn tokens(&self, account: &str) -> Result<Vec<TokenInfo>, AccountError> {
        let (kvs, _) = self
            .store
            .range(&format!("{TOKENS_BY_ID}{account}/"))
            .await?;
        kvs.iter()
            .map(|kv| decode::<TokenIndex>(&kv.key, &kv.value).map(|i| i.info))
            .collect()
    }

    /// One token of `account`.
    pub async fn token(&self, account: &str, token_id: &str) -> Result<TokenIndex, AccountError> {
        let key = id_key(account, token_id);
        match self.store.get(&key).await? {
            Some(kv) => decode(&key, &kv.value),
            None => Err(AccountError::NotFound(format!("no token '{token_id}'"))),
        }
    }

    /// Revoke a token of `account`: the next request with it gets 401.
    pub async fn revoke(
        &self,
        actor: &Actor,
        account: &str,
        token_id: &str,
    ) -> Result<TokenInfo, AccountError> {
        let index = self.token(account, token_id).await?;
        let key = id_key(account, token_id);
        let res = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::Exists(key.clone()))
                    .then(Op::Delete(key))
                    .then(Op::Delete(hash_key(&index.hash)))
                    .then(audit::record(
                        actor,
                        Action::Delete,
                        "Token",
                        token_id,
                        None,
                        None,
                        None,
                    )),
            )
            .await?;
        if !res.succeeded {
            return Err(AccountError::NotFound(format!("no token '{token_id}'")));
        }
        Ok(index.info)
    }

    /// Make sure `account` exists (named `name` when created) and issue a
    /// token for it: how `trellis dev` and tests get a working token.
    pub async fn bootstrap(
        &self,
        account: &str,
        name: &str,
        description: &str,
    ) -> Result<IssuedToken, AccountError> {
        match self
            .create_account(audit::BOOTSTRAP_ACTOR, account, name)
            .await
        {
            Ok(_) | Err(AccountError::Exists(_)) => {}
            Err(e) => return Err(e),
        }
        let actor = Actor::new(account, audit::BOOTSTRAP_ACTOR);
        self.issue_token(&actor, account, Some(description.to_string()))
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
