//! Join tokens (user-facing), the join itself (authenticated by a join
//! token), and certificate renewal (authenticated by the proxy's current
//! certificate, on the TLS side of the listener).

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::ca::CaError;
use crate::join::{
    JoinError, MAX_DESCRIPTION_LEN, MAX_TOKEN_TTL, MIN_TOKEN_TTL, Refused, TokenRecord, now_ms,
};
use crate::mesh::ProxyPeer;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trellis_config::FieldError;
use trellis_config::identity::WorkloadIdentity;

impl From<JoinError> for ApiError {
    fn from(e: JoinError) -> Self {
        match e {
            JoinError::Contention(_) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

fn refused(r: &Refused) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, r.code(), r.to_string())
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn field(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Body of `POST /v1/join-tokens`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTokenRequest {
    /// Lifetime in seconds.
    pub ttl_seconds: u64,
    /// Joins allowed; absent or null: unlimited until it expires.
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// A join token as the API shows it (never its value, except once at creation).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// The value: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Owner account.
    pub account: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Joins allowed (null: unlimited).
    pub max_uses: Option<u32>,
    /// Joins made.
    pub uses: u32,
    /// `active`, `expired`, `used_up` or `revoked`.
    pub status: &'static str,
}

impl TokenView {
    fn of(r: &TokenRecord, token: Option<String>) -> Self {
        let status = if r.revoked {
            "revoked"
        } else if now_ms() >= r.expires_ms {
            "expired"
        } else if r.max_uses.is_some_and(|m| r.uses >= m) {
            "used_up"
        } else {
            "active"
        };
        Self {
            id: r.id.clone(),
            token,
            account: r.account.clone(),
            description: r.description.clone(),
            created_at: rfc3339_ms(r.created_ms),
            expires_at: rfc3339_ms(r.expires_ms),
            max_uses: r.max_uses,
            uses: r.uses,
            status,
        }
    }
}

/// `POST /v1/join-tokens`: create a token; its value is in this answer only.
pub async fn create_token(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewTokenRequest =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::invalid(
                    "the join token request is invalid",
                    vec![field(&path, e.into_inner().to_string())],
                )
            })?;
    let mut errors = Vec::new();
    let ttl = Duration::from_secs(req.ttl_seconds);
    if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
        errors.push(field(
            "ttlSeconds",
            format!(
                "must be between {} and {}",
                MIN_TOKEN_TTL.as_secs(),
                MAX_TOKEN_TTL.as_secs()
            ),
        ));
    }
    if req.max_uses == Some(0) {
        errors.push(field(
            "maxUses",
            "must be at least 1, or null for unlimited",
        ));
    }
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
    {
        errors.push(field(
            "description",
            format!("at most {MAX_DESCRIPTION_LEN} bytes"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "the join token request is invalid",
            errors,
        ));
    }
    let new = app
        .tokens
        .create(&caller.actor(), ttl, req.max_uses, req.description)
        .await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(TokenView::of(&new.record, Some(new.value))),
    )
        .into_response())
}

/// `GET /v1/join-tokens`: the caller's tokens, without values.
pub async fn list_tokens(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let items: Vec<TokenView> = app
        .tokens
        .list(caller.account())
        .await?
        .iter()
        .map(|r| TokenView::of(r, None))
        .collect();
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

/// `DELETE /v1/join-tokens/{id}`: revoke (the record stays, so a join with
/// it is told it was revoked).
pub async fn revoke_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match app.tokens.revoke(&caller.actor(), &id).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(ApiError::not_found(format!("no join token '{id}'"))),
    }
}

/// Body of `POST /v1/join`. Other fields (a proxy may send its whole
/// registration) are ignored: the proxy registers over mTLS right after.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The proxy's name (the workload in its identity).
    pub name: String,
    /// PEM certificate signing request made with the proxy's own key.
    pub csr: String,
}

/// Body of `POST /v1/proxies/{name}/renew`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewRequest {
    /// PEM certificate signing request (a new key is recommended).
    pub csr: String,
}

/// Answer of a join or a renewal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedView {
    /// SPIFFE id of the proxy.
    pub identity: String,
    /// Its account.
    pub account: String,
    /// PEM of the certificate.
    pub certificate: String,
    /// PEM of the mesh CA (trust bundle).
    pub ca_bundle: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Unix seconds of `notAfter`.
    pub not_after_unix: u64,
    /// Hex serial.
    pub serial: String,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn sign(app: &AppState, csr: &str, account: &str, name: &str) -> Result<IssuedView, ApiError> {
    let issued = app
        .mesh
        .ca
        .sign_csr(csr, account, name, app.mesh.cert_ttl)
        .map_err(|e| match e {
            CaError::Identity(e) => ApiError::invalid(
                "the proxy name cannot be a workload identity",
                vec![field("name", e.to_string())],
            ),
            e @ (CaError::Csr(_) | CaError::CsrSignature | CaError::UnsupportedKey(_)) => {
                ApiError::invalid("the CSR is invalid", vec![field("csr", e.to_string())])
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        })?;
    Ok(IssuedView {
        identity: issued.identity.to_string(),
        account: issued.identity.account().to_owned(),
        certificate: issued.cert_pem,
        ca_bundle: app.mesh.ca.root_pem().to_owned(),
        not_before: rfc3339(issued.not_before),
        not_after: rfc3339(issued.not_after),
        not_after_unix: issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        serial: issued.serial,
    })
}

/// `POST /v1/join` with `Authorization: Bearer <join token>`: sign the
/// proxy's CSR for the token's account; the token's use is counted only
/// when the certificate is issued.
pub async fn join(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(token) = bearer(&headers) else {
        return Err(refused(&Refused::Missing));
    };
    let record = match app.tokens.check(token).await? {
        Ok(r) => r,
        Err(r) => {
            tracing::info!(reason = r.code(), "join refused");
            return Err(refused(&r));
        }
    };
    let req: JoinRequest =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::invalid(
                    "the join request is invalid",
                    vec![field(&path, e.into_inner().to_string())],
                )
            })?;
    let issued = sign(&app, &req.csr, &record.account, &req.name)?;
    if let Err(r) = app.tokens.redeem(token).await? {
        tracing::info!(reason = r.code(), "join refused");
        return Err(refused(&r));
    }
    tracing::info!(proxy = %req.name, account = %record.account, token_id = %record.id, "proxy joined");
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(issued),
    )
        .into_response())
}

/// The proxy behind a TLS request may act only as itself.
pub fn authorize(app: &AppState, peer: &ProxyPeer, name: &str) -> Result<(), ApiError> {
    if peer.identity.workload() != name {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this certificate is proxy '{}' ({}); it may not act as proxy '{name}'",
                peer.identity.workload(),
                peer.identity
            ),
        ));
    }
    if peer.identity.trust_domain() != app.mesh.ca.trust_domain() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the certificate belongs to another trust domain",
        ));
    }
    app.hub.note_certificate(name, peer.not_after);
    Ok(())
}

/// `POST /v1/proxies/{name}/renew` (TLS, the proxy's current certificate):
/// a new certificate for the same identity.
pub async fn renew(
    State(app): State<AppState>,
    Extension(peer): Extension<ProxyPeer>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&app, &peer, &name)?;
    let req: RenewRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "the renew request is invalid",
            vec![field("csr", e.to_string())],
        )
    })?;
    let id: &WorkloadIdentity = &peer.identity;
    let issued = sign(&app, &req.csr, id.account(), id.workload())?;
    if let Ok(t) = humantime::parse_rfc3339(&issued.not_after) {
        app.hub.note_certificate(&name, t);
    }
    tracing::info!(proxy = %name, "proxy certificate renewed");
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(issued),
    )
        .into_response())
}

/// What the plain listener answers on proxy-facing routes.
pub async fn certificate_required() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "proxy_certificate_required",
        "this endpoint is for proxies: connect with TLS and the proxy's mesh certificate (join first with POST /v1/join)",
    )
}
