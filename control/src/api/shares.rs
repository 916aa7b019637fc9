//! Shares of a service network (see [`crate::share`]):
//! `POST /v1/service-networks/{key}/shares` `{"account": "<12 digits>"}`,
//! `GET /v1/service-networks/{key}/shares`,
//! `DELETE /v1/service-networks/{key}/shares/{account}`. Owner only: a
//! sharee gets 403, any other account 404.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Body of `POST .../shares`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewShare {
    /// The account to share with (12 digits; it must exist).
    pub account: String,
}

/// `POST /v1/service-networks/{key}/shares`: 201, or 200 when already shared.
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: NewShare =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                let field = e.path().to_string();
                ApiError::invalid(
                    "the share is invalid",
                    vec![trellis_config::FieldError {
                        field,
                        message: e.into_inner().to_string(),
                    }],
                )
            })?;
    let (rec, created) =
        crate::share::share(&app.repo, &caller.actor(), &key, &new.account).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(rec)).into_response())
}

/// `GET /v1/service-networks/{key}/shares`
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let items = crate::share::list(&app.repo, caller.account(), &key).await?;
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

/// `DELETE /v1/service-networks/{key}/shares/{account}`
pub async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    Path((key, account)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    crate::share::revoke(&app.repo, &caller.actor(), &key, &account).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/service-networks/{key}/associations`: the service associations
/// on the network, of every account (owner and sharees alike see them).
pub async fn associations(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let items: Vec<_> = crate::share::associations(&app.repo, caller.account(), &key)
        .await?
        .iter()
        .map(|a| a.to_api_json())
        .collect();
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}
