//! Certificates for HTTPS listeners: a proxy asks for one per host name of
//! a service with an HTTPS listener in its snapshot, with a CSR of its own
//! key; `GET /v1/ca` gives clients outside the mesh the CA to trust.

use super::AppState;
use super::error::ApiError;
use super::join::authorize;
use crate::mesh::ProxyPeer;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::UNIX_EPOCH;
use trellis_config::{FieldError, ListenerProtocol};

/// Body of `POST /v1/proxies/{name}/host-certificates`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostCertRequest {
    /// The host name (SNI) to serve.
    pub host: String,
    /// PEM PKCS#10 request of the proxy's key for that host.
    pub csr: String,
}

/// Answer: the certificate.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostCertView {
    /// The host name.
    pub host: String,
    /// PEM certificate.
    pub certificate: String,
    /// Unix seconds of its end.
    pub not_after_unix: u64,
}

/// `POST /v1/proxies/{name}/host-certificates` (TLS, the proxy's
/// certificate): a certificate for `host`, when the proxy's snapshot has a
/// service answering to it with an HTTPS listener.
pub async fn issue(
    State(app): State<AppState>,
    Extension(peer): Extension<ProxyPeer>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&app, &peer, &name)?;
    let req: HostCertRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "the host certificate request is invalid",
            vec![FieldError {
                field: String::new(),
                message: e.to_string(),
            }],
        )
    })?;
    let host = req.host.to_ascii_lowercase();
    let allowed = app.hub.snapshot_of(&name).is_some_and(|snap| {
        snap.services.iter().any(|s| {
            s.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host))
                && s.listeners
                    .iter()
                    .any(|l| l.protocol == ListenerProtocol::Https)
        })
    });
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "no service with an HTTPS listener answers to '{host}' in proxy '{name}''s configuration"
            ),
        ));
    }
    let issued = app
        .mesh
        .ca
        .sign_host_csr(&req.csr, &host, app.mesh.cert_ttl)
        .map_err(|e| {
            ApiError::invalid(
                "the CSR is invalid",
                vec![FieldError {
                    field: "csr".into(),
                    message: e.to_string(),
                }],
            )
        })?;
    Ok(Json(HostCertView {
        host,
        certificate: issued.cert_pem,
        not_after_unix: issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
    .into_response())
}

/// `GET /v1/ca`: the mesh CA certificate (public), for clients of HTTPS
/// listeners.
pub async fn ca(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        app.mesh.ca.root_pem().to_owned(),
    )
        .into_response()
}
