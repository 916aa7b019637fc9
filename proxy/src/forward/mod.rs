//! Sending a request to a target and bringing its response back, with
//! the request-side resilience: timeouts, retries, the retry budget,
//! connection pools with their breakers.
//!
//! - `runtime`: per-snapshot settings ([`runtime::RoutePolicy`]) and the
//!   runtime state they point to (pools, budgets, rate-limit buckets)
//! - `pool`: one connection pool per target group (connect timeout, idle
//!   timeout, max lifetime, `maxConnections`/`maxPendingRequests`)
//! - `retry`, `budget`, `replay`, `timeout`: retry decisions and backoff,
//!   the retry budget, the request-body replay buffer, the deadlines
//! - `hooks`: what is asked of and told to the balancer (breaker permits,
//!   outcomes, another target for a retry)
//! - `upgrade`: WebSocket tunnels, with the service's idle timeout
//!
//! Both listeners go through here: the outbound one with
//! [`Forwarder::forward_routed`] (its target group's pool, retries), the
//! inbound one with [`Forwarder::forward`] (a shared pool per protocol,
//! one attempt: retries are the calling proxy's business). Bodies stream
//! both ways, trailers included.
//!
//! Under failure: a refused or failed connect is 502
//! `upstream_connect_failed`; a reset or close before the response head is
//! 502 `upstream_reset`; garbage instead of HTTP is 502
//! `upstream_protocol_error`; no head within the request timeout is 504
//! `upstream_timeout` (the timer covers connects, attempts and backoffs);
//! a full connection breaker is 503 `overflow`; a request body that
//! crosses the limit before the target answered is 413 `body_too_large`.
//! When retries are used up, the last attempt's answer is returned: the
//! target's own response, or the proxy's error for the last failure. Once
//! the head is passed on, a failure can only abort the response body, and
//! the client sees its connection or stream reset.

pub(crate) mod budget;
pub(crate) mod connect;
pub mod headers;
pub(crate) mod hooks;
pub(crate) mod pool;
pub(crate) mod replay;
pub(crate) mod retry;
pub(crate) mod runtime;
pub(crate) mod timeout;
mod upgrade;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod component_tests;

use crate::balance::{EndpointGuard, GroupBalancer};
use crate::body::{BodyTooLarge, RequestBody};
use crate::config::ProxyConfig;
use crate::error::{Failure, Reason};
use crate::identity::MeshTls;
use crate::observe::trace;
use headers::{X_TRELLIS_TARGET, is_upgrade_request, set_forwarded, strip_hop_by_hop};
use http::header::HOST;
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::capture_connection;
use pool::{ConnectOverflow, ConnectionBorn, Pool, PoolSettings};
use replay::{ReplayBody, UpstreamBody};
use retry::{AttemptOutcome, RetryConfig};
use runtime::{GroupRuntime, Runtime};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use timeout::{Deadlines, Expired};
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_config::ProtocolVersion;

pub use upgrade::INBOUND_TUNNEL_IDLE_TIMEOUT;

/// Where a request goes.
#[derive(Debug, Clone)]
pub(crate) struct Destination<'a> {
    /// `host:port` to connect to: the target, or the proxy fronting it.
    pub connect: &'a str,
    /// HTTP version spoken to it.
    pub version: ProtocolVersion,
    /// When `connect` is a fronting proxy: the target's `address:port`,
    /// sent as `x-trellis-target`.
    pub fronted_target: Option<HeaderValue>,
}

/// A routed request: its target group, the first target picked, and the
/// settings of its route.
#[derive(Debug)]
pub(crate) struct Routed<'a> {
    /// The target group's balancer.
    pub group: &'a Arc<GroupBalancer>,
    /// The first attempt's target.
    pub first: EndpointGuard,
    /// The group's pool and budget (`None`: the shared pool, no retries).
    pub upstream: Option<Arc<GroupRuntime>>,
    /// The request timeout.
    pub timeout: Duration,
    /// The retry policy.
    pub retry: Option<Arc<RetryConfig>>,
    /// Idle timeout of a WebSocket tunnel (the service's).
    pub tunnel_idle: Duration,
    /// Where the request body's bytes are counted (metrics).
    pub request_bytes: Option<crate::observe::metrics::ByteCounter>,
}

/// The pools, the resilience runtime and the settings of forwarding.
#[derive(Debug)]
pub(crate) struct Forwarder {
    h1: Pool,
    h2: Pool,
    upstream_timeout: Duration,
    max_body_bytes: u64,
    /// Per-snapshot policies and the runtime state behind them.
    pub runtime: Runtime,
    /// Upgraded tunnels open, so a drain can wait for them.
    tunnels: Arc<watch::Sender<usize>>,
}

impl Forwarder {
    pub fn new(cfg: &ProxyConfig, mesh: &MeshTls) -> Self {
        Self {
            h1: Pool::new(PoolSettings::shared(false), mesh),
            h2: Pool::new(PoolSettings::shared(true), mesh),
            upstream_timeout: cfg.upstream_timeout,
            max_body_bytes: cfg.max_request_body_bytes,
            runtime: Runtime::with_mesh(cfg.upstream_timeout, mesh.clone()),
            tunnels: Arc::new(watch::channel(0).0),
        }
    }

    /// Wait until no upgraded tunnel is open.
    pub async fn tunnels_closed(&self) {
        let mut rx = self.tunnels.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Forward `req` from a client at `client_ip` to `dest` over the shared
    /// pool, in one attempt within the proxy's upstream timeout (the
    /// inbound listener's last hop). See [`Forwarder::forward_routed`] for
    /// what is done to the head.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        dest: Destination<'_>,
        client_ip: IpAddr,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Response<Incoming>, Failure> {
        let (mut parts, body) = req.into_parts();
        let h2 = dest.version.is_h2();
        let upgrade = prepare_head(&mut parts, h2, client_ip);
        let peer = dest.fronted_target.is_some();
        set_target_header(&mut parts.headers, dest.fronted_target);
        parts.uri = upstream_uri(&parts.uri, dest.connect, peer)?;
        let pool = if h2 { &self.h2 } else { &self.h1 };
        let req = Request::from_parts(
            parts,
            UpstreamBody::Direct(RequestBody::new(body, self.max_body_bytes)),
        );
        let deadlines = Deadlines::new(Instant::now(), self.upstream_timeout, None);
        let resp = match self.attempt(pool, req, &deadlines, dest.connect).await {
            Ok(resp) => resp,
            Err((failure, _)) => return Err(failure),
        };
        self.finish(
            resp,
            upgrade,
            dest.connect,
            shutdown,
            INBOUND_TUNNEL_IDLE_TIMEOUT,
        )
    }

    /// Forward a routed request: to `routed.first`, then, while the retry
    /// policy, the budget and the breaker allow and time is left, to
    /// other targets of the group. Returns the response head with its
    /// body streaming, and the guard of the target that gave it.
    ///
    /// Hop-by-hop fields are dropped both ways; `x-forwarded-for`/`-proto`
    /// are set; the client's `Host` is kept (and made from `:authority`
    /// for an HTTP/2 client going to an HTTP/1.1 target); the target's
    /// address becomes the URI authority (and so `:authority` to an HTTP/2
    /// target). An HTTP/1.1 upgrade (WebSocket) to an HTTP/1.1 target is
    /// tunnelled after a 101 until either side closes, it idles for
    /// `tunnel_idle`, or the proxy stops; it is never retried.
    pub async fn forward_routed(
        &self,
        req: Request<Incoming>,
        routed: Routed<'_>,
        client_ip: IpAddr,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(Response<Incoming>, EndpointGuard), Failure> {
        let Routed {
            group,
            first,
            upstream,
            timeout,
            retry,
            tunnel_idle,
            request_bytes,
        } = routed;
        let (mut parts, body) = req.into_parts();
        let h2 = group.protocol_version().is_h2();
        let upgrade = prepare_head(&mut parts, h2, client_ip);
        let pool = match &upstream {
            Some(u) => &*u.pool,
            None if h2 => &self.h2,
            None => &self.h1,
        };
        let deadlines = Deadlines::new(
            Instant::now(),
            timeout,
            retry.as_ref().and_then(|r| r.per_try_timeout),
        );
        // A recorded request (access log) counts its body and retries.
        let tally = crate::observe::record::Tally::of(&parts.extensions);
        let body = RequestBody::new(body, self.max_body_bytes)
            .tally(tally.clone())
            .count_into(request_bytes);

        // The common path: no retries possible.
        let retrying = match (&retry, &upstream) {
            (Some(r), Some(u))
                if r.max_attempts > 1 && upgrade.is_none() && r.method_allowed(&parts.method) =>
            {
                Some((r, u))
            }
            _ => None,
        };
        let Some((policy, upstream)) = retrying else {
            let req = routed_request(parts, UpstreamBody::Direct(body), &first)?;
            let connect = first.connect_authority();
            return match self.attempt(pool, req, &deadlines, connect).await {
                Ok(resp) => {
                    hooks::record(&first, AttemptOutcome::Status(resp.status().as_u16()));
                    let resp = self.finish(resp, upgrade, connect, shutdown, tunnel_idle)?;
                    Ok((resp, first))
                }
                Err((failure, outcome)) => {
                    hooks::record(&first, outcome);
                    Err(failure)
                }
            };
        };

        let _counted = upstream.budget.start_request();
        let head = SavedHead::of(&parts);
        let (mut next_body, replay) = if body.is_end_stream() {
            (UpstreamBody::Direct(body), None)
        } else {
            let first_body = ReplayBody::new(body, policy.max_buffered_body_bytes);
            let replay = first_body.replay();
            (UpstreamBody::Replay(first_body), replay)
        };
        let mut parts = Some(parts);
        let mut guard = first;
        let mut attempt: u32 = 1;
        // Held for the attempt they were taken for.
        let mut _retry_held = None;
        loop {
            let p = match parts.take() {
                Some(p) => p,
                None => head.to_parts(),
            };
            let req = routed_request(p, next_body, &guard)?;
            let connect = guard.connect_authority();
            let result = self.attempt(pool, req, &deadlines, connect).await;
            let outcome = match &result {
                Ok(resp) => AttemptOutcome::Status(resp.status().as_u16()),
                Err((_, outcome)) => *outcome,
            };
            hooks::record(&guard, outcome);
            let retryable = attempt < policy.max_attempts && policy.retries(outcome);
            let retry_body = if !retryable {
                None
            } else {
                match &replay {
                    None => Some(UpstreamBody::Empty),
                    Some(r) => r.replay().map(UpstreamBody::Replay),
                }
            };
            let Some(retry_body) = retry_body else {
                return self.done(result, guard, upgrade, shutdown, tunnel_idle);
            };
            let wait = policy.backoff(attempt, |hi| fastrand::u64(0..=hi));
            if !deadlines.leaves_time(Instant::now(), wait) {
                tracing::debug!(attempt, target = connect, "no time left for a retry");
                return self.done(result, guard, upgrade, shutdown, tunnel_idle);
            }
            let Some(budget) = upstream
                .budget
                .try_retry(policy.budget_percent, policy.min_retries_per_second)
            else {
                tracing::debug!(
                    attempt,
                    group = group.id(),
                    "retry budget used up; not retrying"
                );
                group.note_retry_budget_exhausted();
                return self.done(result, guard, upgrade, shutdown, tunnel_idle);
            };
            let Some(permit) = hooks::try_retry(group) else {
                tracing::debug!(
                    attempt,
                    group = group.id(),
                    "maxRetries reached; not retrying"
                );
                return self.done(result, guard, upgrade, shutdown, tunnel_idle);
            };
            tracing::debug!(attempt, target = connect, ?outcome, ?wait, "retrying");
            if let Some(t) = &tally {
                t.retried();
            }
            group.note_retry();
            drop(result);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            guard = match hooks::pick_other(group, &guard) {
                Some(g) => g,
                None => {
                    return Err(Failure::new(
                        Reason::NoHealthyTarget,
                        format!(
                            "target group '{}' has no target left for a retry",
                            group.name()
                        ),
                    ));
                }
            };
            _retry_held = Some((budget, permit));
            next_body = retry_body;
            attempt += 1;
        }
    }

    /// The end of a routed request: the last attempt's answer.
    fn done(
        &self,
        result: Result<Response<Incoming>, (Failure, AttemptOutcome)>,
        guard: EndpointGuard,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        shutdown: &watch::Receiver<bool>,
        tunnel_idle: Duration,
    ) -> Result<(Response<Incoming>, EndpointGuard), Failure> {
        match result {
            Ok(resp) => {
                let connect = guard.connect_authority();
                let resp = self.finish(resp, upgrade, connect, shutdown, tunnel_idle)?;
                Ok((resp, guard))
            }
            Err((failure, _)) => Err(failure),
        }
    }

    /// One attempt: send `req` over `pool`, wait for the head within the
    /// attempt's deadline. A failure comes with its outcome.
    async fn attempt(
        &self,
        pool: &Pool,
        mut req: Request<UpstreamBody>,
        deadlines: &Deadlines,
        connect: &str,
    ) -> Result<Response<Incoming>, (Failure, AttemptOutcome)> {
        let capture = pool.max_lifetime.map(|_| capture_connection(&mut req));
        let span = trace::client_span(&mut req);
        let (deadline, clock) = deadlines.attempt(Instant::now());
        let result = match tokio::time::timeout_at(deadline, pool.client.request(req)).await {
            Ok(Ok(resp)) => {
                if let (Some(max), Some(capture)) = (pool.max_lifetime, capture)
                    && let Some(born) = resp.extensions().get::<ConnectionBorn>()
                {
                    pool::retire_at_lifetime(born, capture, max);
                }
                Ok(resp)
            }
            Ok(Err(e)) => Err(classify(&e, connect, self.max_body_bytes)),
            Err(_) => Err(match clock {
                Expired::PerTry => (
                    Failure::new(
                        Reason::UpstreamTimeout,
                        format!(
                            "{connect} did not send a response head within the per-try timeout of {:?}",
                            deadlines.per_try().unwrap_or_default()
                        ),
                    ),
                    AttemptOutcome::PerTryTimeout,
                ),
                Expired::Request => (
                    Failure::new(
                        Reason::UpstreamTimeout,
                        format!(
                            "{connect} did not send a response head within {:?}",
                            deadlines.timeout
                        ),
                    ),
                    AttemptOutcome::RequestTimeout,
                ),
            }),
        };
        if let Some(span) = span {
            span.finish(result.as_ref().map_err(|(failure, _)| failure));
        }
        result
    }

    /// Pass a response on: tunnel a 101 for an upgrade, strip hop-by-hop
    /// fields.
    fn finish(
        &self,
        mut resp: Response<Incoming>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        connect: &str,
        shutdown: &watch::Receiver<bool>,
        tunnel_idle: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        match (switched, upgrade) {
            (true, Some(client_side)) => {
                let target_side = hyper::upgrade::on(&mut resp);
                let open = upgrade::TunnelCount::new(Arc::clone(&self.tunnels));
                tokio::spawn(upgrade::tunnel(
                    client_side,
                    target_side,
                    shutdown.clone(),
                    tunnel_idle,
                    open,
                ));
                strip_hop_by_hop(resp.headers_mut(), false, true);
            }
            (true, None) => {
                return Err(Failure::new(
                    Reason::UpstreamProtocolError,
                    format!("{connect} switched protocols without being asked to"),
                ));
            }
            (false, _) => strip_hop_by_hop(resp.headers_mut(), false, false),
        }
        Ok(resp)
    }
}

/// Rewrite a client's request head for a target (all but the URI and
/// `x-trellis-target`, which depend on the target). Returns the client's
/// upgrade handle when the request asks for an HTTP/1.1 upgrade.
fn prepare_head(
    parts: &mut Parts,
    h2: bool,
    client_ip: IpAddr,
) -> Option<hyper::upgrade::OnUpgrade> {
    let upgrading = !h2 && is_upgrade_request(parts.version, &parts.headers);
    let client_upgrade = if upgrading {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    strip_hop_by_hop(&mut parts.headers, true, upgrading);
    let https = parts.extensions.get::<headers::ClientHttps>().is_some();
    set_forwarded(&mut parts.headers, client_ip, https);
    // An HTTP/2 client sends no Host; an HTTP/1.1 target needs the
    // name it asked for (the URI's authority becomes the target's
    // address). An HTTP/2 target gets only what the client sent:
    // a Host differing from `:authority` is malformed to strict
    // servers (RFC 9113 §8.3.1).
    if !h2
        && !parts.headers.contains_key(HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(HOST, host);
    }
    parts.version = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    client_upgrade
}

fn set_target_header(headers: &mut HeaderMap, fronted_target: Option<HeaderValue>) {
    match fronted_target {
        Some(target) => {
            headers.insert(X_TRELLIS_TARGET, target);
        }
        None => {
            // A direct target: no proxy-to-proxy headers reach it.
            for name in [
                X_TRELLIS_TARGET,
                crate::authz::X_TRELLIS_SERVICE,
                crate::authz::X_TRELLIS_NETWORK,
                crate::authz::X_TRELLIS_PORT,
            ] {
                headers.remove(name);
            }
        }
    }
}

/// The request of one attempt to `guard`'s target.
fn routed_request(
    mut parts: Parts,
    body: UpstreamBody,
    guard: &EndpointGuard,
) -> Result<Request<UpstreamBody>, Failure> {
    let fronted = if guard.is_fronted() {
        Some(
            HeaderValue::from_str(guard.target_authority()).map_err(|_| {
                Failure::new(
                    Reason::UpstreamConnectFailed,
                    "the target's address cannot be sent in a header",
                )
            })?,
        )
    } else {
        None
    };
    let peer = fronted.is_some();
    set_target_header(&mut parts.headers, fronted);
    parts.uri = upstream_uri(&parts.uri, guard.connect_authority(), peer)?;
    Ok(Request::from_parts(parts, body))
}

/// What a retry needs of the prepared head (extensions are not kept but
/// for the request's trace: the upgrade handle is never retried).
#[derive(Debug)]
struct SavedHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// The request's trace, so that every attempt gets its client span.
    trace: Option<trace::UpstreamTrace>,
}

impl SavedHead {
    fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            trace: parts.extensions.get::<trace::UpstreamTrace>().cloned(),
        }
    }

    fn to_parts(&self) -> Parts {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.method.clone();
        parts.uri = self.uri.clone();
        parts.version = self.version;
        parts.headers = self.headers.clone();
        if let Some(t) = &self.trace {
            parts.extensions.insert(t.clone());
        }
        parts
    }
}

/// `http://<connect><path?query>`: the legacy client picks the connection
/// by the URI's authority, sends origin-form to HTTP/1.1 targets and
/// `:authority` from it to HTTP/2 targets.
/// `peer`: `connect` is the inbound listener of a fronting proxy, reached
/// over mesh TLS (`https`, see [`connect`]).
fn upstream_uri(uri: &Uri, connect: &str, peer: bool) -> Result<Uri, Failure> {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(if peer { Scheme::HTTPS } else { Scheme::HTTP })
        .authority(connect)
        .path_and_query(path)
        .build()
        .map_err(|e| {
            Failure::new(
                Reason::UpstreamConnectFailed,
                format!("'{connect}' is not a usable target address: {e}"),
            )
        })
}

/// Tell apart the ways a request to a target fails, from the client
/// error's source chain, with the attempt outcome each stands for.
fn classify(
    err: &hyper_util::client::legacy::Error,
    connect: &str,
    max_body_bytes: u64,
) -> (Failure, AttemptOutcome) {
    let detail = source_chain(err);
    if let Some(o) = sources(err).find_map(|e| e.downcast_ref::<ConnectOverflow>()) {
        return (
            Failure::new(
                Reason::Overflow,
                format!("no connection to {connect} for this request: {o}"),
            ),
            AttemptOutcome::Other,
        );
    }
    if err.is_connect() {
        let refused = sources(err).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        let hint = if refused {
            " (is the target listening on that port?)"
        } else {
            " (is the address reachable, or a firewall dropping the connection?)"
        };
        return (
            Failure::new(
                Reason::UpstreamConnectFailed,
                format!("cannot connect to {connect}: {detail}{hint}"),
            ),
            AttemptOutcome::ConnectFailure,
        );
    }
    if sources(err).any(|e| e.is::<BodyTooLarge>()) {
        return (
            Failure::new(
                Reason::BodyTooLarge,
                format!("the request body is larger than the limit of {max_body_bytes} bytes"),
            ),
            AttemptOutcome::Other,
        );
    }
    let hyper_err = sources(err).find_map(|e| e.downcast_ref::<hyper::Error>());
    if let Some(h) = hyper_err {
        if h.is_user() {
            // Our request body failed: the client aborted or sent a
            // malformed body.
            return (
                Failure::new(
                    Reason::BadRequest,
                    format!("reading the request body failed: {detail}"),
                ),
                AttemptOutcome::Other,
            );
        }
        if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
            return (
                Failure::new(
                    Reason::UpstreamProtocolError,
                    format!("{connect} sent an invalid HTTP response: {detail}"),
                ),
                AttemptOutcome::ProtocolError,
            );
        }
    }
    (
        Failure::new(
            Reason::UpstreamReset,
            format!("{connect} closed or reset the connection before answering: {detail}"),
        ),
        AttemptOutcome::Reset,
    )
}

fn sources<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    fn next<'b>(e: &&'b (dyn StdError + 'static)) -> Option<&'b (dyn StdError + 'static)> {
        (*e).source()
    }
    std::iter::successors(Some(err), next)
}

/// `outer: inner: innermost`, skipping repeats.
pub(crate) fn source_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for e in sources(err) {
        let s = e.to_string();
        if s == last || last.ends_with(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        let _ = write!(out, "{s}");
        last = s;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_path_and_query() {
        let u = upstream_uri(&"/a/b?c=d".parse().unwrap(), "10.0.0.1:8080", false).unwrap();
        assert_eq!(u.to_string(), "http://10.0.0.1:8080/a/b?c=d");
        let u = upstream_uri(&"http://svc.example/x".parse().unwrap(), "[::1]:80", true).unwrap();
        assert_eq!(u.to_string(), "https://[::1]:80/x");
        let u = upstream_uri(&"*".parse().unwrap(), "h:1", false).unwrap();
        assert_eq!(u.path(), "*");
        assert!(upstream_uri(&"/".parse().unwrap(), "bad host:x", false).is_err());
    }
}
