//! `POST /v1/explain`: see [`crate::explain`].

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::explain::{ExplainError, ExplainRequest, explain};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// How long an explain waits for the model to reflect the latest write,
/// so that it answers for what was just stored.
pub const EXPLAIN_CATCH_UP: Duration = Duration::from_secs(2);

/// `POST /v1/explain`
pub async fn handle(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ExplainRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not an explain request: {e}")))?;
    let rev = app.repo.store().revision().await?;
    app.hub.caught_up(rev, EXPLAIN_CATCH_UP).await;
    let model = app.hub.model();
    match explain(&model, caller.account(), &req) {
        Ok(r) => Ok(Json(r).into_response()),
        Err(ExplainError::Invalid(e)) => Err(ApiError::invalid(
            format!("the explain request is invalid: {e}"),
            e.errors,
        )),
        Err(e @ ExplainError::NoProxy(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ ExplainError::Snapshot { .. }) => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_view",
            e.to_string(),
        )),
    }
}
