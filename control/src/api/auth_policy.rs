//! `GET/PUT/DELETE /v1/{service-networks|services}/{key}/auth-policy`:
//! Lattice's shape for the auth policy of a network or service
//! (`GetAuthPolicy`, `PutAuthPolicy`, `DeleteAuthPolicy`).
//!
//! The policy is the `authPolicy` field of the resource's spec; these
//! routes read and replace that one field with a compare-and-swap on the
//! resource's version, so they never undo a concurrent change to another
//! field. A PUT is validated like any write (field paths under
//! `authPolicy.`); a rejected one stores nothing.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use trellis_config::{ServiceNetworkSpec, ServiceSpec, Spec};

/// A spec that carries an auth policy.
pub trait HasAuthPolicy: Spec {
    /// The `authPolicy` field.
    fn auth_policy_mut(&mut self) -> &mut Option<Value>;
}

impl HasAuthPolicy for ServiceNetworkSpec {
    fn auth_policy_mut(&mut self) -> &mut Option<Value> {
        &mut self.auth_policy
    }
}

impl HasAuthPolicy for ServiceSpec {
    fn auth_policy_mut(&mut self) -> &mut Option<Value> {
        &mut self.auth_policy
    }
}

fn with_etag(mut resp: Response, version: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// `GET .../{key}/auth-policy`: the policy document as stored; 404 when
/// the resource has none.
pub async fn get<S: HasAuthPolicy>(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let mut r = app.repo.get::<S>(caller.account(), &key).await?;
    let version = r.meta.version;
    match r.spec.auth_policy_mut().take() {
        Some(policy) => Ok(with_etag(Json(policy).into_response(), version)),
        None => Err(ApiError::not_found(format!(
            "{} '{key}' has no auth policy",
            S::KIND.words()
        ))),
    }
}

/// `PUT .../{key}/auth-policy`: attach or replace the policy (the body is
/// the document). Answers the stored document.
pub async fn put<S: HasAuthPolicy>(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let policy: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    set::<S>(&app, &caller, &key, Some(policy.clone()))
        .await
        .map(|v| with_etag(Json(policy).into_response(), v))
}

/// `DELETE .../{key}/auth-policy`: detach the policy (an `IAM` level then
/// denies everything, as in Lattice). 204 also when there was none.
pub async fn delete<S: HasAuthPolicy>(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    set::<S>(&app, &caller, &key, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Replace the field with a compare-and-swap on the version read; returns
/// the new version.
async fn set<S: HasAuthPolicy>(
    app: &AppState,
    caller: &Caller,
    key: &str,
    policy: Option<Value>,
) -> Result<u64, ApiError> {
    let account = caller.account();
    let current = app.repo.get::<S>(account, key).await?;
    let mut spec = current.spec;
    *spec.auth_policy_mut() = policy;
    let (r, _) = app
        .repo
        .acting_as(caller.actor())
        .upsert(account, &current.meta.id, spec, Some(current.meta.version))
        .await?;
    Ok(r.meta.version)
}
