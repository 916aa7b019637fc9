//! Target health: proxies report what their health checks see, and the
//! API shows each target group's targets with one aggregated state (the
//! rule is in [`crate::target_health`]).

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::drain;
use crate::target_health::aggregate;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use trellis_config::{FieldError, HealthReport, TargetGroupSpec};

/// `POST /v1/proxies/{name}/health`: the proxy's full current view of the
/// targets it checks (not a delta, so a lost report is repaired by the
/// next). Replaces the proxy's previous report.
pub async fn report(
    State(app): State<AppState>,
    axum::extract::Extension(peer): axum::extract::Extension<crate::mesh::ProxyPeer>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    super::join::authorize(&app, &peer, &name)?;
    let report: HealthReport =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                let field = e.path().to_string();
                ApiError::invalid(
                    "the health report is invalid",
                    vec![FieldError {
                        field,
                        message: e.into_inner().to_string(),
                    }],
                )
            })?;
    if !app.hub.report_health(&name, report) {
        return Err(ApiError::not_found(format!(
            "no proxy '{name}' is registered: POST /v1/proxies first"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/target-groups/{key}/targets`: registered and draining targets
/// with their aggregated state and each reporting proxy's view. Read from
/// the store (so a write just made shows) and the reports in memory.
pub async fn targets(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let tg = app
        .repo
        .get::<TargetGroupSpec>(caller.account(), &key)
        .await?;
    let list = aggregate(&tg, &app.hub.health_reports(), drain::now_ms());
    Ok(Json(list).into_response())
}
