//! A request from a local application: route it by host, method, path and
//! headers, pick a target group by weight and a target in it, forward.

use super::admit::{admit, request_host};
use crate::body::ProxyBody;
use crate::error::{Failure, REQUEST_ID_HEADER, Reason, fixed_response};
use crate::forward::Destination;
use crate::forward::headers::ensure_request_id;
use crate::observe::Recorder;
use crate::route::Route;
use crate::state::Shared;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// Answer one request; never fails (failures become error responses).
pub(super) async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    // Limits first, on the head as the client sent it.
    let admitted = admit(&req, &shared.outbound.limits);
    let request_id = ensure_request_id(req.headers_mut());
    // Off (no allocation) unless some service has an access log.
    let mut obs = shared.access_log.recorder(peer);
    let result = match admitted {
        Ok(()) => route_and_forward(&shared, req, peer, &request_id, &mut obs).await,
        Err(failure) => {
            obs.refused(&shared, &mut req);
            Err(failure)
        }
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(failure) => {
            log_failure(&failure, "outbound", peer, &request_id);
            obs.failed(&failure);
            failure.to_response(&request_id)
        }
    };
    resp.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    obs.finish(resp)
}

pub(super) fn log_failure(failure: &Failure, listener: &str, peer: SocketAddr, id: &HeaderValue) {
    tracing::debug!(
        listener,
        %peer,
        request_id = id.to_str().unwrap_or(""),
        reason = %failure.reason,
        blame = ?failure.reason.blame(),
        message = %failure.message,
        "answered by the proxy"
    );
}

async fn route_and_forward(
    shared: &Shared,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    request_id: &HeaderValue,
    obs: &mut Recorder,
) -> Result<Response<ProxyBody>, Failure> {
    let Some(prepared) = shared.current.load_full() else {
        return Err(not_ready());
    };
    let host = request_host(&req)?;
    let group_id = match prepared
        .routes
        .route(host, req.method(), req.uri().path(), req.headers())
    {
        Route::NoService => {
            return Err(Failure::new(
                Reason::NoService,
                format!("no service answers to host '{host}'"),
            ));
        }
        Route::NoListener { port } => {
            return Err(Failure::new(
                Reason::NoListener,
                format!("the service for host '{host}' has no listener on port {port}"),
            ));
        }
        Route::Fixed { status, info } => {
            obs.routed(&info, &mut req);
            obs.fixed();
            return Ok(fixed_response(status, request_id));
        }
        Route::Forward { groups, info } => {
            obs.routed(&info, &mut req);
            groups.pick()
        }
    };
    let Some(group) = shared.balancer.group(group_id) else {
        return Err(Failure::new(
            Reason::NoHealthyTarget,
            format!("target group {group_id} is not known to this proxy"),
        ));
    };
    obs.target_group(group_id, group.name());
    let Some(guard) = group.pick() else {
        return Err(Failure::new(
            Reason::NoHealthyTarget,
            format!("target group '{}' has no target to send to", group.name()),
        ));
    };
    obs.target(guard.endpoint.target_authority());
    let version = group.protocol_version();
    let endpoint = Arc::clone(&guard.endpoint);
    let fronted_target = if endpoint.is_fronted() {
        Some(
            HeaderValue::from_str(endpoint.target_authority()).map_err(|_| {
                Failure::new(
                    Reason::UpstreamConnectFailed,
                    "the target's address cannot be sent in a header",
                )
            })?,
        )
    } else {
        None
    };
    let connect = endpoint.connect_authority();
    let resp = shared
        .forwarder
        .forward(
            req,
            Destination {
                connect,
                version,
                fronted_target,
            },
            peer.ip(),
            &shared.shutdown,
        )
        .await?;
    Ok(resp.map(|body| ProxyBody::upstream(body, Some(guard))))
}

pub(super) fn not_ready() -> Failure {
    Failure::new(
        Reason::NotReady,
        "no configuration yet: the proxy has not received a snapshot from the control plane and has none on disk",
    )
}
