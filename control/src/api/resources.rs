//! CRUD handlers, generic over the kind of resource; the router mounts one
//! set per kind.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::repo::WriteOutcome;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use trellis_config::{Resource, Spec, spec_from_json};

/// Query of list calls.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// `nextPageToken` of the previous page.
    pub page_token: Option<String>,
}

/// Response header set when a PUT found nothing to change.
pub const UNCHANGED_HEADER: &str = "x-trellis-unchanged";

fn parse_body<S: Spec>(body: &Bytes) -> Result<S, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    spec_from_json::<S>(value).map_err(|e| {
        ApiError::invalid(
            format!(
                "the {} is invalid: {} problem(s)",
                S::KIND.words(),
                e.errors.len()
            ),
            e.errors,
        )
    })
}

/// Parse `If-Match` (`"3"`, `3` or `W/"3"`); absent is `None`.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default().trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    s.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "If-Match must be a resource version such as \"3\", got '{}'",
            v.to_str().unwrap_or("?")
        ))
    })
}

fn reply<S: Spec>(status: StatusCode, r: &Resource<S>) -> Response {
    let mut resp = (status, Json(r.to_api_json())).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", r.meta.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&format!("/v1/{}/{}", S::KIND.collection(), r.meta.id))
    {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A resource another account shared with the caller says so:
/// `"shared": true` (its `account` is the owner's).
fn mark_shared(mut v: serde_json::Value, owner: &str, caller: &str) -> serde_json::Value {
    if owner != caller
        && let Some(o) = v.as_object_mut()
    {
        o.insert("shared".into(), serde_json::Value::Bool(true));
    }
    v
}

/// `POST /v1/{collection}`
pub async fn create<S: Spec>(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec = parse_body::<S>(&body)?;
    let r = app
        .repo
        .acting_as(caller.actor())
        .create(caller.account(), spec)
        .await?;
    Ok(reply(StatusCode::CREATED, &r))
}

/// `GET /v1/{collection}`
pub async fn list<S: Spec>(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let page = app
        .repo
        .list::<S>(caller.account(), q.limit, q.page_token.as_deref())
        .await?;
    let items: Vec<_> = page
        .items
        .iter()
        .map(|r| mark_shared(r.to_api_json(), &r.meta.account, caller.account()))
        .collect();
    Ok(
        Json(serde_json::json!({ "items": items, "nextPageToken": page.next_page_token }))
            .into_response(),
    )
}

/// `GET /v1/{collection}/{idOrName}`
pub async fn get<S: Spec>(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let r = app.repo.get::<S>(caller.account(), &key).await?;
    let mut resp = reply(StatusCode::OK, &r);
    if r.meta.account != caller.account() {
        let v = mark_shared(r.to_api_json(), &r.meta.account, caller.account());
        let etag = resp.headers().get(header::ETAG).cloned();
        resp = Json(v).into_response();
        if let Some(e) = etag {
            resp.headers_mut().insert(header::ETAG, e);
        }
    }
    Ok(resp)
}

/// `PUT /v1/{collection}/{idOrName}`: create or update.
pub async fn put<S: Spec>(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let spec = parse_body::<S>(&body)?;
    let (r, outcome) = app
        .repo
        .acting_as(caller.actor())
        .upsert(caller.account(), &key, spec, expected)
        .await?;
    let status = if outcome == WriteOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = reply(status, &r);
    if outcome == WriteOutcome::Unchanged {
        resp.headers_mut()
            .insert(UNCHANGED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// `DELETE /v1/{collection}/{idOrName}`
pub async fn delete<S: Spec>(
    State(app): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    app.repo
        .acting_as(caller.actor())
        .delete::<S>(caller.account(), &key, expected)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
