//! A request from another proxy, for a target this proxy fronts.
//!
//! The caller names the target in `x-trellis-target`; the request is
//! forwarded only when the current snapshot has that `address:port` as a
//! target fronted by this proxy (its `proxy` is us and it has no `via`).
//! Anything else is refused, so the inbound listener is no open relay.
//! The header is removed before forwarding; the last hop speaks the
//! target group's protocol version.
//!
//! Auth policies are checked here, with the caller from the connection's
//! [`PeerIdentity`], against the route the calling proxy names in
//! `x-trellis-service`, `x-trellis-network` and `x-trellis-port` (checked
//! against the snapshot's fronted services, then removed), after the
//! calling proxy's account is found to be one that may use the claimed
//! network (its owner or a sharee); see [`crate::authz`].

use super::admit::admit;
use super::outbound::{log_failure, not_ready};
use crate::authz;
use crate::balance::HEALTH_CHECK_USER_AGENT;
use crate::body::ProxyBody;
use crate::error::{Failure, REQUEST_ID_HEADER, Reason};
use crate::forward::Destination;
use crate::forward::headers::{
    X_TRELLIS_ANONYMOUS, X_TRELLIS_TARGET, ensure_request_id, set_caller_identity,
};
use crate::identity::PeerIdentity;
use crate::observe::metrics::Exchange;
use crate::state::Prepared;
use crate::state::Shared;
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// Answer one request; never fails (failures become error responses).
pub(super) async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    metered: &mut Exchange,
) -> Response<ProxyBody> {
    // Limits first, on the head as the client sent it.
    let admitted = admit(&req, &shared.inbound.limits);
    let request_id = ensure_request_id(req.headers_mut());
    let mut span = shared
        .traces
        .as_ref()
        .map(|t| t.server_span("inbound", &mut req, peer));
    if let (Some(span), Some(crate::identity::PeerIdentity(Some(caller)))) = (
        span.as_mut(),
        req.extensions().get::<crate::identity::PeerIdentity>(),
    ) {
        span.set_caller(&caller.uri(), caller.account());
    }
    let result = match admitted {
        Ok(()) => forward(&shared, req, peer).await,
        Err(failure) => Err(failure),
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(failure) => {
            log_failure(&failure, "inbound", peer, &request_id);
            metered.failed(failure.reason);
            failure.to_response(&request_id)
        }
    };
    resp.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    if let Some(span) = span {
        span.finish(&resp);
    }
    resp
}

async fn forward(
    shared: &Shared,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Failure> {
    // The calling proxy, from its certificate: what network membership
    // is checked against (even for a client it forwards for).
    let conn_account: Option<Box<str>> = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.as_ref())
        .map(|id| id.account().into());
    // A calling proxy forwarding for a client outside the mesh says so:
    // that caller is anonymous, not the calling proxy.
    if req.headers().contains_key(X_TRELLIS_ANONYMOUS) {
        req.extensions_mut().insert(PeerIdentity(None));
    }
    let caller = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.clone());
    set_caller_identity(req.headers_mut(), caller.as_ref());
    let Some(target) = req.headers_mut().remove(X_TRELLIS_TARGET) else {
        return Err(Failure::new(
            Reason::BadRequest,
            "the inbound listener takes requests from other proxies only: missing x-trellis-target",
        ));
    };
    let target = target
        .to_str()
        .map_err(|_| Failure::new(Reason::BadRequest, "x-trellis-target is not an address"))?
        .to_string();
    let target = target.as_str();
    let Some(prepared) = shared.current.load_full() else {
        return Err(not_ready());
    };
    let Some(&version) = prepared.fronted.get(target) else {
        return Err(Failure::new(
            Reason::TargetNotFronted,
            format!(
                "{target} is not a target fronted by proxy '{}' in snapshot version {}",
                shared.name, prepared.snapshot.version
            ),
        ));
    };
    authorize(&prepared, &mut req, target, peer, conn_account.as_deref())?;
    let resp = shared
        .forwarder
        .forward(
            req,
            Destination {
                connect: target,
                version,
                fronted_target: None,
            },
            peer.ip(),
            &shared.shutdown,
        )
        .await?;
    Ok(resp.map(|body| ProxyBody::upstream(body, None)))
}

/// Check the route the calling proxy names, that the calling proxy's
/// account (`account`, from its certificate) may use its network, and
/// the policies on it; the route headers are removed whatever the
/// outcome.
fn authorize(
    prepared: &Prepared,
    req: &mut Request<Incoming>,
    target: &str,
    peer: SocketAddr,
    account: Option<&str>,
) -> Result<(), Failure> {
    let headers = req.headers_mut();
    let service = headers.remove(authz::X_TRELLIS_SERVICE);
    let network = headers.remove(authz::X_TRELLIS_NETWORK);
    let port = headers.remove(authz::X_TRELLIS_PORT);
    let Some(service) = service else {
        return prepared
            .policies
            .unrouted(target, account, |paths| is_health_check(req, paths))
            .map_err(|m| Failure::new(Reason::AccessDenied, m));
    };
    let text = |v: &http::HeaderValue, what: &str| {
        v.to_str()
            .map(str::to_string)
            .map_err(|_| Failure::new(Reason::BadRequest, format!("{what} is not text")))
    };
    let service = text(&service, "x-trellis-service")?;
    let network = network
        .as_ref()
        .map(|n| text(n, "x-trellis-network"))
        .transpose()?;
    let port: u16 = port
        .as_ref()
        .and_then(|p| p.to_str().ok())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| {
            Failure::new(
                Reason::BadRequest,
                "x-trellis-service needs x-trellis-port, a port number",
            )
        })?;
    let Some(subject) = prepared
        .policies
        .inbound(&service, network.as_deref(), port, target, account)
        .map_err(|m| Failure::new(Reason::AccessDenied, m))?
    else {
        return Ok(());
    };
    let caller = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.as_ref());
    authz::check(&subject, req, caller, peer.ip())
}

/// A health check of a fronted target: `GET` of one of its groups'
/// check paths, from the checker.
fn is_health_check(req: &Request<Incoming>, paths: &[Box<str>]) -> bool {
    req.method() == http::Method::GET
        && req
            .headers()
            .get(http::header::USER_AGENT)
            .is_some_and(|ua| ua.as_bytes() == HEALTH_CHECK_USER_AGENT.as_bytes())
        && paths.iter().any(|p| **p == *req.uri().path())
}
