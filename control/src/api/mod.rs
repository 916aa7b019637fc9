//! The REST API under `/v1`, and its OpenAPI document.
//!
//! Every resource kind gets the same five operations, mounted from one
//! generic set of handlers ([`resources`]); the OpenAPI document is built
//! from the same list of kinds ([`openapi`]), so the two cannot drift.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod auth_policy;
pub mod error;
pub mod explain;
pub mod health;
pub mod host_certs;
pub mod join;
pub mod openapi;
mod openapi_identity;
pub mod proxies;
pub mod resources;
pub mod shares;

use crate::push::Hub;
use crate::repo::Repo;
use axum::Router;
use axum::routing::{delete, get, post};

/// Routes that take no API token: the proxy-facing ones (on this plain
/// listener they only answer that a mesh certificate is needed; the TLS
/// side authenticates them by the proxy's certificate), the join (its
/// join token), health, metrics and the OpenAPI document. Every other route needs `Authorization: Bearer`.
pub const UNAUTHENTICATED_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/proxies"),
    ("GET", "/v1/proxies/{name}/watch"),
    ("POST", "/v1/proxies/{name}/ack"),
    ("POST", "/v1/proxies/{name}/health"),
    ("POST", "/v1/proxies/{name}/renew"),
    ("POST", "/v1/proxies/{name}/host-certificates"),
    ("POST", "/v1/join"),
    ("GET", "/v1/ca"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
];
use std::sync::Arc;
use trellis_config::{
    AccessLogSubscriptionSpec, ProxyAssociationSpec, ServiceAssociationSpec, ServiceNetworkSpec,
    ServiceSpec, Spec, TargetGroupSpec,
};

/// Largest request body the API accepts (a service with every listener and
/// rule filled in is a few KiB; target groups of 1000 targets ~100 KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Resource operations.
    pub repo: Repo,
    /// Push state and proxy status.
    pub hub: Arc<Hub>,
    /// Turns true when the server stops; long-lived streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<crate::metrics::ControlMetrics>,
    /// Accounts and API tokens; handlers learn the caller through
    /// [`auth::Caller`].
    pub accounts: crate::accounts::Accounts,
    /// The mesh CA and certificate lifetime.
    pub mesh: Arc<crate::mesh::Mesh>,
    /// Join tokens.
    pub tokens: crate::join::JoinTokens,
}

fn mount<S: Spec>(router: Router<AppState>) -> Router<AppState> {
    let collection = format!("/v1/{}", S::KIND.collection());
    let item = format!("{collection}/{{key}}");
    router
        .route(
            &collection,
            get(resources::list::<S>).post(resources::create::<S>),
        )
        .route(
            &item,
            get(resources::get::<S>)
                .put(resources::put::<S>)
                .delete(resources::delete::<S>),
        )
}

/// The API router of the plain listener: every user-facing route, the
/// join, and refusals for the proxy-facing routes (they need TLS).
pub fn router(state: AppState) -> Router {
    let mut r = Router::new();
    r = mount::<ServiceNetworkSpec>(r);
    r = mount::<TargetGroupSpec>(r);
    r = mount::<ServiceSpec>(r);
    r = mount::<ServiceAssociationSpec>(r);
    r = mount::<ProxyAssociationSpec>(r);
    r = mount::<AccessLogSubscriptionSpec>(r);
    r.route(
        "/v1/proxies",
        get(proxies::list).post(join::certificate_required),
    )
    .route(
        "/v1/proxies/{name}",
        get(proxies::get).delete(proxies::delete),
    )
    .route("/v1/proxies/{name}/watch", get(join::certificate_required))
    .route("/v1/proxies/{name}/ack", post(join::certificate_required))
    .route(
        "/v1/proxies/{name}/health",
        post(join::certificate_required),
    )
    .route("/v1/proxies/{name}/renew", post(join::certificate_required))
    .route(
        "/v1/proxies/{name}/host-certificates",
        post(join::certificate_required),
    )
    .route("/v1/ca", get(host_certs::ca))
    .route(
        "/v1/join-tokens",
        get(join::list_tokens).post(join::create_token),
    )
    .route("/v1/join-tokens/{id}", delete(join::revoke_token))
    .route("/v1/join", post(join::join))
    .route("/v1/target-groups/{key}/targets", get(health::targets))
    .route("/v1/accounts", get(accounts::list).post(accounts::create))
    .route("/v1/accounts/{id}", get(accounts::get))
    .route("/v1/audit", get(audit::list))
    .route(
        "/v1/service-networks/{key}/shares",
        get(shares::list).post(shares::create),
    )
    .route(
        "/v1/service-networks/{key}/associations",
        get(shares::associations),
    )
    .route(
        "/v1/service-networks/{key}/shares/{account}",
        delete(shares::revoke),
    )
    .route(
        "/v1/tokens",
        get(accounts::list_tokens).post(accounts::create_token),
    )
    .route("/v1/tokens/{id}", delete(accounts::revoke_token))
    .route(
        "/v1/service-networks/{key}/auth-policy",
        get(auth_policy::get::<ServiceNetworkSpec>)
            .put(auth_policy::put::<ServiceNetworkSpec>)
            .delete(auth_policy::delete::<ServiceNetworkSpec>),
    )
    .route(
        "/v1/services/{key}/auth-policy",
        get(auth_policy::get::<ServiceSpec>)
            .put(auth_policy::put::<ServiceSpec>)
            .delete(auth_policy::delete::<ServiceSpec>),
    )
    .route("/v1/explain", post(explain::handle))
    .route("/v1/openapi.json", get(openapi::serve))
    .route("/metrics", get(crate::metrics::serve))
    .route("/healthz", get(|| async { "ok\n" }))
    .fallback(|| async { error::ApiError::not_found("no such endpoint; see /v1/openapi.json") })
    .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
    .layer(axum::middleware::from_fn_with_state(
        Arc::clone(&state.metrics),
        crate::metrics::track,
    ))
    .with_state(state)
}

/// The router of the TLS side: the endpoints proxies call with their mesh
/// certificate (each checks that the path names the certificate's proxy).
pub fn proxy_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/proxies", post(proxies::register))
        .route("/v1/proxies/{name}/watch", get(proxies::watch))
        .route("/v1/proxies/{name}/ack", post(proxies::ack))
        .route("/v1/proxies/{name}/health", post(health::report))
        .route("/v1/proxies/{name}/renew", post(join::renew))
        .route(
            "/v1/proxies/{name}/host-certificates",
            post(host_certs::issue),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            error::ApiError::not_found(
                "no such proxy endpoint; user-facing routes are on plain HTTP",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            crate::metrics::track,
        ))
        .with_state(state)
}
