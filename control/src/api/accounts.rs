//! Account and token routes. The admin token creates accounts and manages
//! any account's tokens; an account token sees its own account and manages
//! its own tokens.
//!
//! | route | admin | account token |
//! |---|---|---|
//! | `POST /v1/accounts` | creates | 403 |
//! | `GET /v1/accounts` | all | its own |
//! | `GET /v1/accounts/{id}` | any | its own, else 404 |
//! | `POST /v1/tokens` | for `account` (required) | for itself |
//! | `GET /v1/tokens` | of `?account=` (required) | its own |
//! | `DELETE /v1/tokens/{id}` | of `?account=` (required) | its own, else 404 |

use super::AppState;
use super::auth::AnyCaller;
use super::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Body of `POST /v1/accounts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAccount {
    /// 12 digits.
    pub id: String,
    /// A name for people.
    pub name: String,
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The account (admin only; an account token makes tokens for itself).
    #[serde(default)]
    pub account: Option<String>,
}

/// Query of token routes: the account, for the admin.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AccountQuery {
    /// The account whose tokens (admin only).
    pub account: Option<String>,
}

fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes, what: &str) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(bytes, what)
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes)).map_err(
        |e| {
            let field = e.path().to_string();
            ApiError::invalid(
                format!("the {what} is invalid"),
                vec![trellis_config::FieldError {
                    field,
                    message: e.into_inner().to_string(),
                }],
            )
        },
    )
}

/// The account a token route acts on.
fn target_account(caller: &AnyCaller, asked: Option<&str>) -> Result<String, ApiError> {
    match (caller, asked) {
        (AnyCaller::Admin, Some(a)) => Ok(a.to_string()),
        (AnyCaller::Admin, None) => Err(ApiError::invalid(
            "the admin token must name the account",
            vec![trellis_config::FieldError {
                field: "account".into(),
                message: "required with the admin token".into(),
            }],
        )),
        (AnyCaller::Account(c), None) => Ok(c.account().to_string()),
        (AnyCaller::Account(c), Some(a)) if a == c.account() => Ok(a.to_string()),
        (AnyCaller::Account(_), Some(a)) => Err(ApiError::not_found(format!("no account '{a}'"))),
    }
}

/// `POST /v1/accounts` (admin only).
pub async fn create(
    State(app): State<AppState>,
    caller: AnyCaller,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    if caller != AnyCaller::Admin {
        return Err(ApiError::forbidden("only the admin token creates accounts"));
    }
    let new: NewAccount = parse(&bytes, "account")?;
    let account = app
        .accounts
        .create_account(crate::audit::ADMIN_ACTOR, &new.id, &new.name)
        .await?;
    tracing::info!(account = %account.id, "account created");
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

/// `GET /v1/accounts`
pub async fn list(State(app): State<AppState>, caller: AnyCaller) -> Result<Response, ApiError> {
    let items = match caller {
        AnyCaller::Admin => app.accounts.accounts().await?,
        AnyCaller::Account(c) => vec![app.accounts.account(c.account()).await?],
    };
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

/// `GET /v1/accounts/{id}`
pub async fn get(
    State(app): State<AppState>,
    caller: AnyCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let AnyCaller::Account(c) = &caller
        && c.account() != id
    {
        return Err(ApiError::not_found(format!("no account '{id}'")));
    }
    Ok(Json(app.accounts.account(&id).await?).into_response())
}

/// `POST /v1/tokens`: the value is in this reply and nowhere else, ever.
pub async fn create_token(
    State(app): State<AppState>,
    caller: AnyCaller,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let new: NewToken = body(&bytes, "token request")?;
    let account = target_account(&caller, new.account.as_deref())?;
    let issued = app
        .accounts
        .issue_token(&caller.actor_for(&account), &account, new.description)
        .await?;
    tracing::info!(account = %account, token_id = %issued.info.id, "API token created");
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// `GET /v1/tokens`
pub async fn list_tokens(
    State(app): State<AppState>,
    caller: AnyCaller,
    Query(q): Query<AccountQuery>,
) -> Result<Response, ApiError> {
    let account = target_account(&caller, q.account.as_deref())?;
    let items = app.accounts.tokens(&account).await?;
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

/// `DELETE /v1/tokens/{id}`: revoked for the next request.
pub async fn revoke_token(
    State(app): State<AppState>,
    caller: AnyCaller,
    Path(id): Path<String>,
    Query(q): Query<AccountQuery>,
) -> Result<Response, ApiError> {
    let account = target_account(&caller, q.account.as_deref())?;
    app.accounts
        .revoke(&caller.actor_for(&account), &account, &id)
        .await?;
    tracing::info!(account = %account, token_id = %id, "API token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
