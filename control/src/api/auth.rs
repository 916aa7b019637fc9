//! Who is calling: the `Authorization: Bearer <token>` of every user-facing
//! route, checked against the account tokens and the admin token.
//!
//! Handlers take [`Caller`] (an account token; the admin token gets 403)
//! or [`AnyCaller`] (either; account and token management). A missing,
//! malformed, unknown or revoked token is 401 with `WWW-Authenticate:
//! Bearer`. Tokens are never logged: not here, not in the request log.

use super::AppState;
use super::error::ApiError;
use crate::accounts::Principal;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// What the admin token is told on a resource route.
pub const ADMIN_ON_RESOURCES: &str = "the admin token manages accounts and tokens only; use an account's API token (POST /v1/tokens with {\"account\": \"<id>\"})";

/// The account whose API token made the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    account: String,
    token_id: String,
}

impl Caller {
    /// A caller of `account` through token `token_id` (for in-process use
    /// and tests; requests get theirs from the extractor).
    pub fn new(account: impl Into<String>, token_id: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            token_id: token_id.into(),
        }
    }

    /// The caller's account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The id of the token used (not secret).
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// This caller, as the audit log names it.
    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor::new(&self.account, &self.token_id)
    }
}

impl AnyCaller {
    /// Who acts on `account`'s behalf, for its audit log.
    pub fn actor_for(&self, account: &str) -> crate::audit::Actor {
        match self {
            AnyCaller::Admin => crate::audit::Actor::new(account, crate::audit::ADMIN_ACTOR),
            AnyCaller::Account(c) => c.actor(),
        }
    }
}

/// The admin or an account: the caller of account and token routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyCaller {
    /// The admin token.
    Admin,
    /// An account token.
    Account(Caller),
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "this call needs an API token: send `Authorization: Bearer <token>` (`trellis dev` prints one; `trellis --token` or TRELLIS_TOKEN in the CLI)",
        ));
    };
    let value = value.to_str().unwrap_or_default().trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace));
    token.ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        match app.accounts.authenticate(token).await? {
            Some(Principal::Admin) => Ok(AnyCaller::Admin),
            Some(Principal::Account { account, token_id }) => {
                Ok(AnyCaller::Account(Caller { account, token_id }))
            }
            None => Err(ApiError::unauthorized(
                "the API token is unknown or was revoked",
            )),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match AnyCaller::from_request_parts(parts, app).await? {
            AnyCaller::Account(c) => Ok(c),
            AnyCaller::Admin => Err(ApiError::forbidden(ADMIN_ON_RESOURCES)),
        }
    }
}
