//! A request from another proxy, for a target this proxy fronts.
//!
//! The caller names the target in `x-trellis-target`; the request is
//! forwarded only when the current snapshot has that `address:port` as a
//! target fronted by this proxy (its `proxy` is us and it has no `via`).
//! Anything else is refused, so the inbound listener is no open relay.
//! The header is removed before forwarding; the last hop speaks the
//! target group's protocol version.

use super::admit::admit;
use super::outbound::{log_failure, not_ready};
use crate::body::ProxyBody;
use crate::error::{Failure, REQUEST_ID_HEADER, Reason};
use crate::forward::Destination;
use crate::forward::headers::{X_TRELLIS_TARGET, ensure_request_id, set_caller_identity};
use crate::observe::metrics::Exchange;
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
    let caller = req
        .extensions()
        .get::<crate::identity::PeerIdentity>()
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
        .map_err(|_| Failure::new(Reason::BadRequest, "x-trellis-target is not an address"))?;
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
