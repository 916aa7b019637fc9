//! `GET /v1/audit`: the caller account's audit records, newest first.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::resources::ListQuery;
use crate::audit::{self, AuditError};
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

/// `GET /v1/audit?limit=N&pageToken=T`
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let page = audit::page(
        app.repo.store().as_ref(),
        caller.account(),
        q.limit,
        q.page_token.as_deref(),
    )
    .await
    .map_err(|e| match e {
        AuditError::BadLimit(_) => ApiError::bad_request(e.to_string()),
        AuditError::Store(s) => s.into(),
    })?;
    Ok(Json(page).into_response())
}
