//! A request from a local application: route it by host, method, path and
//! headers, check the auth policies (here for fixed responses and groups
//! with a target no other proxy fronts; see [`crate::authz`]), the rate
//! limits of its service and rule, pick a target group by weight, take a
//! circuit-breaker permit, pick a target, forward (with the route's
//! timeout and retry policy). Requests to a fronting proxy carry the
//! route taken (`x-trellis-service`, `x-trellis-network`,
//! `x-trellis-port`) so that proxy can check the policies.

use super::admit::{admit, request_host};
use crate::authz;
use crate::body::ProxyBody;
use crate::error::{Failure, REQUEST_ID_HEADER, Reason, fixed_response};
use crate::forward::headers::{X_TRELLIS_ANONYMOUS, ensure_request_id, is_upgrade_request};
use crate::forward::{Routed, hooks};
use crate::observe::Recorder;
use crate::observe::metrics::Exchange;
use crate::observe::trace;
use crate::route::{DEFAULT_PORT, Route, split_host_port};
use crate::state::Shared;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use trellis_config::Snapshot;
use trellis_config::identity::WorkloadIdentity;
use trellis_config::resilience::SERVICE_IDLE_SECONDS_DEFAULT;

/// Answer one request; never fails (failures become error responses).
pub(super) async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    metered: &mut Exchange,
) -> Response<ProxyBody> {
    // Limits first, on the head as the client sent it.
    let admitted = admit(&req, &shared.outbound.limits);
    let request_id = ensure_request_id(req.headers_mut());
    // Only an inbound proxy says who the caller is.
    crate::forward::headers::strip_caller_identity(req.headers_mut());
    let span = shared
        .traces
        .as_ref()
        .map(|t| t.server_span("outbound", &mut req, peer));
    // Off (no allocation) unless some service has an access log.
    let mut obs = shared.access_log.recorder(peer);
    let external = is_external(&req);
    let result = match admitted {
        Ok(()) => route_and_forward(&shared, req, peer, &request_id, &mut obs, metered).await,
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
            metered.failed(failure.reason);
            failure.to_response(&request_id)
        }
    };
    resp.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    if let Some(span) = span {
        span.finish(&resp);
    }
    if obs.wants_caller() {
        obs.caller(caller_identity(&shared, external).as_ref());
    }
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
    metered: &mut Exchange,
) -> Result<Response<ProxyBody>, Failure> {
    let Some(prepared) = shared.current.load_full() else {
        return Err(not_ready());
    };
    let host = request_host(&req)?;
    // On an HTTPS listener's connection a host without a port means 443.
    let with_port;
    let host = if req.extensions().get::<super::ConnMeta>().is_some() && !has_port(host) {
        with_port = format!("{host}:443");
        with_port.as_str()
    } else {
        host
    };
    let port = port_of(host);
    let (group_id, info, subject) =
        match prepared
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
                let subject = prepared
                    .policies
                    .guarded(info.service_id)
                    .then(|| prepared.policies.outbound(info.service_id, host, port))
                    .flatten();
                obs.routed(&info, &mut req);
                metered.routed(info.service_id);
                trace::note_route(&req, &info, &prepared.span_names);
                // No target: nobody else can check the policies.
                if let Some(subject) = subject {
                    check_here(shared, &subject, &req, peer)?;
                }
                // Rate limits apply to fixed responses too.
                shared
                    .forwarder
                    .runtime
                    .with_view(&prepared, |v| v.policy(&info).check_limits(peer.ip()))?;
                obs.fixed();
                metered.fixed(status);
                return Ok(fixed_response(status, request_id));
            }
            Route::Forward { groups, info } => {
                let group_id = groups.pick();
                let policies = &prepared.policies;
                // Only requests with a check here, or a fronting proxy to
                // tell the route, pay for finding their network.
                let subject = (policies.guarded(info.service_id) || policies.sends_via(group_id))
                    .then(|| policies.outbound(info.service_id, host, port))
                    .flatten();
                obs.routed(&info, &mut req);
                metered.routed(info.service_id);
                trace::note_route(&req, &info, &prepared.span_names);
                (group_id, info, subject)
            }
        };
    if let Some(subject) = subject {
        if prepared.policies.checked_here(group_id) {
            check_here(shared, &subject, &req, peer)?;
        }
        if prepared.policies.sends_via(group_id) {
            set_route_headers(req.headers_mut(), &subject);
        }
    }
    if is_external(&req) && prepared.policies.sends_via(group_id) {
        req.headers_mut()
            .insert(X_TRELLIS_ANONYMOUS, HeaderValue::from_static("1"));
    }
    // Settings of the route (one lookup, none when the snapshot sets
    // nothing), its rate limits, the group's pool and budget.
    let (timeout, retry, upstream) =
        shared
            .forwarder
            .runtime
            .with_view(&prepared, |v| -> Result<_, Failure> {
                let policy = v.policy(&info);
                policy.check_limits(peer.ip())?;
                Ok((
                    policy.timeout,
                    policy.retry.clone(),
                    v.group(group_id).cloned(),
                ))
            })?;
    let Some(group) = shared.balancer.group(group_id) else {
        return Err(Failure::new(
            Reason::NoHealthyTarget,
            format!("target group {group_id} is not known to this proxy"),
        ));
    };
    obs.target_group(group_id, group.name());
    metered.target_group(group_id);
    trace::note_target_group(&req, group_id, group.name(), &prepared.span_names);
    let _permit = hooks::try_request(&group)?;
    let Some(first) = group.pick() else {
        return Err(Failure::new(
            Reason::NoHealthyTarget,
            format!("target group '{}' has no target to send to", group.name()),
        ));
    };
    obs.target(first.endpoint.target_authority());
    let tunnel_idle = if is_upgrade_request(req.version(), req.headers()) {
        service_idle_timeout(&prepared.snapshot, info.service_id)
    } else {
        Duration::ZERO
    };
    let (resp, guard) = shared
        .forwarder
        .forward_routed(
            req,
            Routed {
                group: &group,
                first,
                upstream,
                timeout,
                retry,
                tunnel_idle,
                request_bytes: metered.request_bytes(),
            },
            peer.ip(),
            &shared.shutdown,
        )
        .await?;
    obs.target(guard.endpoint.target_authority());
    if guard.endpoint.is_fronted() {
        note_peer_denial(obs, &resp);
    }
    Ok(resp.map(|body| ProxyBody::upstream(body, Some(guard))))
}

/// A fronting proxy refused the request by an auth policy: the access log
/// gets its reason, as if this proxy had refused it.
fn note_peer_denial<B>(obs: &mut Recorder, resp: &Response<B>) {
    let reason = match resp.headers().get(crate::error::ERROR_HEADER) {
        Some(v) if v == Reason::AccessDenied.as_str() => Reason::AccessDenied,
        Some(v) if v == Reason::Unauthenticated.as_str() => Reason::Unauthenticated,
        _ => return,
    };
    let why = resp
        .headers()
        .get(authz::AUTH_DENIED_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    obs.denied_by_peer(reason, why);
}

/// The port a request addresses (the route table has accepted `host`).
fn port_of(host: &str) -> u16 {
    split_host_port(host).map_or(DEFAULT_PORT, |(_, p)| p)
}

/// Whether the request came over an HTTPS listener's TLS connection: a
/// client outside the mesh, anonymous to auth policies.
fn is_external<B>(req: &Request<B>) -> bool {
    req.extensions().get::<super::ConnMeta>().is_some()
}

/// Who calls, for a policy checked here: the application beside this
/// proxy calls as this proxy, so a policy sees the mesh certificate's
/// identity; a client of an HTTPS listener (outside the mesh), plaintext
/// mode and a proxy before its first certificate are anonymous.
pub(super) fn own_identity<B>(shared: &Shared, req: &Request<B>) -> Option<WorkloadIdentity> {
    caller_identity(shared, is_external(req))
}

/// [`own_identity`] of a request that is, or is not, `external`.
fn caller_identity(shared: &Shared, external: bool) -> Option<WorkloadIdentity> {
    if external {
        return None;
    }
    let state = shared.mesh.state()?;
    Some(state.store.current().workload().clone())
}

/// Check the policies here, as this proxy's own identity.
fn check_here(
    shared: &Shared,
    subject: &authz::Subject<'_>,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<(), Failure> {
    if !subject.needs_check() {
        return Ok(());
    }
    let me = own_identity(shared, req);
    authz::check(subject, req, me.as_ref(), peer.ip())
}

/// Name the route for a fronting proxy (removed again for a target the
/// outbound sends to directly, so backends never see them).
fn set_route_headers(headers: &mut http::HeaderMap, subject: &authz::Subject<'_>) {
    if let Ok(v) = HeaderValue::from_str(subject.service_id()) {
        headers.insert(authz::X_TRELLIS_SERVICE, v);
    }
    match subject.network_id().map(HeaderValue::from_str) {
        Some(Ok(v)) => {
            headers.insert(authz::X_TRELLIS_NETWORK, v);
        }
        _ => {
            headers.remove(authz::X_TRELLIS_NETWORK);
        }
    }
    headers.insert(authz::X_TRELLIS_PORT, HeaderValue::from(subject.port()));
}

/// A service's idle timeout, for its WebSocket tunnels.
fn service_idle_timeout(snapshot: &Snapshot, service_id: &str) -> Duration {
    let secs = snapshot
        .services
        .iter()
        .find(|s| s.id == service_id)
        .map_or(SERVICE_IDLE_SECONDS_DEFAULT, |s| s.idle_timeout_seconds);
    Duration::from_secs(u64::from(secs))
}

pub(super) fn not_ready() -> Failure {
    Failure::new(
        Reason::NotReady,
        "no configuration yet: the proxy has not received a snapshot from the control plane and has none on disk",
    )
}

/// Whether an authority (`host`, `host:port`, `[v6]:port`) names a port.
fn has_port(authority: &str) -> bool {
    match authority.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => authority.matches(':').count() == 1,
    }
}
