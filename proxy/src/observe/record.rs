//! [`RequestRecord`]: everything known about one request once it is
//! finished, and [`Recorder`], which collects it while the request runs.
//!
//! The record is plain data with no reference to the proxy's internals, so
//! any consumer can take it: the access log turns it into a JSON line;
//! metrics can count it by `service`, `target_group`, status class and
//! `trellis_error`; a tracer can make its server span from it. Consumers
//! get the finished record once, in [`Recorder`]'s `emit`, from the task
//! that finished the response (or from a `Drop`): they must not block.
//!
//! ## Life of a record
//!
//! 1. `AccessLog::recorder` when the outbound listener takes a request:
//!    if no service in the current configuration has an access log, the
//!    recorder is off and every later call is a branch (no allocation, no
//!    clock read). Otherwise it notes the start time and the client (on
//!    the stack).
//! 2. `Recorder::routed` once the route is known (service, listener,
//!    rule): if that service has no access log, the recorder turns off
//!    (still nothing allocated); otherwise the record is allocated and the
//!    request head's fields are copied (path without query, host, user
//!    agent, request id, trace id).
//! 3. `Recorder::target_group` and `Recorder::target` when a target
//!    group and a target are picked (again on retries; the last one is
//!    logged), `Recorder::failed` when the proxy answers an error. The
//!    forwarder counts request body bytes and retries into the request's
//!    [`Tally`] (in its extensions, only when recorded).
//! 4. `Recorder::finish` with the response head: status, gRPC status of
//!    a trailers-only answer, time to the head. The body is wrapped
//!    ([`super::body::ObservedBody`]) to count bytes and catch gRPC
//!    trailers; when it ends (or is dropped early: the client went away)
//!    the record is complete and emitted.
//!
//! A request whose handler is dropped before it produced a response (the
//! client closed the connection while the target was still thinking) is
//! emitted from the recorder's `Drop` with no `responseCode` and
//! `ClientConnectionClosed`.
//!
//! ## What is not recorded
//!
//! Requests the proxy refuses before it knows their service (no service
//! for the host, no listener on the port, no configuration yet, a first
//! request head so broken that it never reaches routing) are not in any
//! service's log, as in Lattice, which logs only requests that reach a
//! service; they are still in the proxy's own debug log. Requests on the
//! inbound listener are not recorded: the calling proxy, which routed
//! them, records them, so a request is logged once.

use super::access_log::Subscribers;
use super::failure::FailureReason;
use crate::error::{Failure, Reason};
use crate::route::RouteInfo;
use http::header::{HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use trellis_config::identity::WorkloadIdentity;
use trellis_config::policy::ANONYMOUS;

/// Longest text field kept (path, host, user agent, ids); longer values
/// are cut at a character boundary and end with `…`, so one request
/// cannot make a multi-kilobyte line.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Request header carrying the W3C trace context.
const TRACEPARENT: &str = "traceparent";

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target's response was passed on.
    Upstream,
    /// A rule's fixed-response action answered.
    Fixed,
    /// The proxy answered with this error.
    Failed(Reason),
    /// No response head was sent: the client went away first.
    NoResponse,
}

/// One finished request. Text fields are already redacted and bounded
/// (see [`MAX_FIELD_BYTES`]); `None` is "unset" and is written as `null`.
/// Names that come from the configuration (network, service, listener,
/// rule) are shared with the access log's per-snapshot state, so a record
/// copies none of them.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// When the proxy took the request (wall clock).
    pub start_time: SystemTime,
    /// Name of the service network the request came through: the one of
    /// the generated host name it used, or the service's only network in
    /// this proxy's scope; `None` for a custom domain of a service in
    /// several networks.
    pub service_network: Option<Arc<str>>,
    /// Service name.
    pub service: Arc<str>,
    /// Service id.
    pub service_id: Arc<str>,
    /// Listener name.
    pub listener: Arc<str>,
    /// Rule name; `None` for the listener's default action.
    pub rule: Option<Arc<str>>,
    /// Target group name (the last one tried).
    pub target_group: Option<Box<str>>,
    /// Target group id.
    pub target_group_id: Option<Box<str>>,
    /// The client's address.
    pub source: SocketAddr,
    /// The target's `address:port` (the last one tried).
    pub target: Option<Box<str>>,
    /// Request method.
    pub method: Method,
    /// Request path **without the query string** (query strings carry
    /// tokens too often to log).
    pub path: Box<str>,
    /// HTTP version of the client's request.
    pub version: Version,
    /// `Host` (or `:authority`).
    pub host: Option<Box<str>>,
    /// `User-Agent`.
    pub user_agent: Option<Box<str>>,
    /// TLS server name of the client connection (none until TLS exists).
    pub server_name: Option<Box<str>>,
    /// TLS version of the client connection (none until TLS exists).
    pub tls_version: Option<&'static str>,
    /// Status sent to the client; `None` if no response head was sent.
    pub status: Option<u16>,
    /// `grpc-status` of a gRPC response (trailers, or a trailers-only head).
    pub grpc_status: Option<u32>,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// From the start to the last byte of the response (or to the end of
    /// the exchange when it broke off).
    pub duration: Duration,
    /// From the start to the target's response head (or to the failure
    /// of the last try); `None` when no target was tried.
    pub request_to_target: Option<Duration>,
    /// From the target's response head to the last byte sent to the
    /// client; `None` when the response did not come from a target.
    pub response_from_target: Option<Duration>,
    /// `x-request-id` (as received, or the one the proxy generated).
    pub request_id: Box<str>,
    /// Who the request is made as: the SPIFFE id of the workload (for
    /// the outbound, this proxy's own, as its application calls as it),
    /// or `anonymous` (a client of an HTTPS listener, a proxy without an
    /// identity); `None` when not known.
    pub caller_principal: Option<Box<str>>,
    /// The caller's account; `None` for an anonymous caller.
    pub caller_account: Option<Box<str>>,
    /// Why an auth policy denied the request (once auth policies exist).
    pub auth_denied_reason: Option<Box<str>>,
    /// How it was answered.
    pub outcome: Outcome,
    /// Lattice's classification of a failure, if it failed.
    pub failure_reason: Option<FailureReason>,
    /// Retries made (attempts after the first).
    pub retries: u32,
    /// W3C trace id (32 hex digits): the proxy's trace of the request
    /// when tracing is on, else that of a valid incoming `traceparent`.
    pub trace_id: Option<Box<str>>,
}

impl RequestRecord {
    /// The `x-trellis-error` reason the client saw, if any: the proxy's
    /// error reason, or `fixed_response` for a fixed response that is not
    /// a success.
    pub fn trellis_error(&self) -> Option<&'static str> {
        match self.outcome {
            Outcome::Failed(r) => Some(r.as_str()),
            Outcome::Fixed if !self.status.is_some_and(|s| (200..300).contains(&s)) => {
                Some("fixed_response")
            }
            _ => None,
        }
    }

    /// A record of a request that has not been answered yet, to a
    /// service whose names `log` holds.
    fn new(
        start_time: SystemTime,
        source: SocketAddr,
        info: &RouteInfo<'_>,
        log: &super::access_log::ServiceLog,
    ) -> Self {
        Self {
            start_time,
            service_network: None,
            service: log.shared_name(info.service),
            service_id: log.shared_id(info.service_id),
            listener: log.shared_name(info.listener),
            rule: info.rule.map(|r| log.shared_name(r)),
            target_group: None,
            target_group_id: None,
            source,
            target: None,
            method: Method::GET,
            path: "".into(),
            version: Version::HTTP_11,
            host: None,
            user_agent: None,
            server_name: None,
            tls_version: None,
            status: None,
            grpc_status: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            request_to_target: None,
            response_from_target: None,
            request_id: "".into(),
            caller_principal: None,
            caller_account: None,
            auth_denied_reason: None,
            outcome: Outcome::NoResponse,
            failure_reason: None,
            retries: 0,
            trace_id: None,
        }
    }

    /// Copy what is logged of the request head.
    fn take_head<B>(&mut self, req: &Request<B>) {
        if let Some(meta) = req.extensions().get::<crate::listen::ConnMeta>() {
            self.tls_version = meta.tls_version;
            self.server_name = meta.sni.as_deref().map(bounded);
        }
        let headers = req.headers();
        self.method = req.method().clone();
        self.version = req.version();
        self.path = bounded(req.uri().path());
        self.host = req
            .uri()
            .authority()
            .map(|a| bounded(a.as_str()))
            .or_else(|| header_text(headers, HOST.as_str()));
        self.user_agent = header_text(headers, USER_AGENT.as_str());
        self.request_id = header_text(headers, crate::error::REQUEST_ID_HEADER.as_str())
            .unwrap_or_else(|| "".into());
        // The proxy's own trace when tracing is on (the caller's trace id,
        // or the one it started); else the caller's `traceparent`.
        self.trace_id = super::trace::current_trace_id(req.extensions())
            .map(|t| t.to_string().into())
            .or_else(|| {
                headers
                    .get(TRACEPARENT)
                    .and_then(|v| trace_id(v.as_bytes()))
                    .map(Into::into)
            });
    }
}

/// A header as text, bounded; `None` when absent or not visible ASCII.
fn header_text(headers: &HeaderMap, name: &str) -> Option<Box<str>> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(bounded)
}

/// `s`, cut to [`MAX_FIELD_BYTES`] at a character boundary.
pub(crate) fn bounded(s: &str) -> Box<str> {
    if s.len() <= MAX_FIELD_BYTES {
        return s.into();
    }
    let mut end = MAX_FIELD_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// The trace id of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`,
/// trace id not all zeros).
pub(crate) fn trace_id(v: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    ok.then_some(trace)
}

/// Counts the forwarder keeps for a recorded request, found in the
/// request's extensions (`Arc<Tally>`, only when the request is
/// recorded): request body bytes read from the client (counted by
/// [`crate::body::RequestBody`]) and retries made.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    received: AtomicU64,
    retries: AtomicU32,
}

impl Tally {
    /// The tally of the request these extensions belong to, if recorded.
    pub(crate) fn of(extensions: &http::Extensions) -> Option<Arc<Tally>> {
        extensions.get::<Arc<Tally>>().cloned()
    }

    /// Count request body bytes read.
    pub(crate) fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Count one retry.
    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// A record being filled, with the subscribers that will get it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub record: RequestRecord,
    tally: Arc<Tally>,
    started: Instant,
    /// When the response head was handed to the client.
    head_at: Option<Instant>,
    to: Arc<Subscribers>,
}

impl Pending {
    /// Complete the record and hand it to its subscribers. `end` tells
    /// how the response body ended.
    pub(crate) fn complete(mut self, end: BodyEnd) {
        let now = Instant::now();
        let r = &mut self.record;
        r.bytes_received = self.tally.received.load(Ordering::Relaxed);
        r.retries = self.tally.retries.load(Ordering::Relaxed);
        r.duration = now.saturating_duration_since(self.started);
        if r.outcome == Outcome::Upstream
            && let Some(head) = self.head_at
        {
            r.response_from_target = Some(now.saturating_duration_since(head));
        }
        if r.failure_reason.is_none() {
            r.failure_reason = match end {
                BodyEnd::Complete => None,
                BodyEnd::ClientGone => Some(FailureReason::ClientConnectionClosed),
                BodyEnd::SourceFailed if r.outcome == Outcome::Upstream => {
                    Some(FailureReason::TargetConnectionClosed)
                }
                BodyEnd::SourceFailed => Some(FailureReason::InternalError),
            };
        }
        self.to.emit(self.record);
    }

    /// Count body bytes sent.
    pub(crate) fn sent(&mut self, n: usize) {
        self.record.bytes_sent = self.record.bytes_sent.saturating_add(n as u64);
    }

    /// A gRPC status from trailers.
    pub(crate) fn grpc_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(s) = grpc_status(trailers) {
            self.record.grpc_status = Some(s);
        }
    }

    /// Whether the response has no body to wait for (HEAD, 1xx, 204, 304),
    /// so dropping it unread is a normal end.
    pub(crate) fn bodiless(&self) -> bool {
        self.record.method == Method::HEAD
            || self
                .record
                .status
                .is_some_and(|s| s < 200 || s == 204 || s == 304)
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// It was sent whole.
    Complete,
    /// It was dropped before its end: the client went away.
    ClientGone,
    /// Its source failed (the target broke off).
    SourceFailed,
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Collects a [`RequestRecord`] while a request runs; see the module docs
/// for the order of calls. Off (and armed, until its service turns out
/// to log) it lives on the stack and allocates nothing; off, every call
/// is a branch.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    /// Nobody wants this request's record.
    #[default]
    Off,
    /// Some service logs; which one is this? (Inline: a request to a
    /// service without a log allocates nothing.)
    Armed(Armed),
    /// This request's service logs.
    Recording(Box<Pending>),
}

#[derive(Debug)]
struct Armed {
    start_time: SystemTime,
    started: Instant,
    source: SocketAddr,
    subscriptions: Arc<super::access_log::Subscriptions>,
}

impl Recorder {
    /// A recorder that records nothing.
    pub(crate) fn off() -> Self {
        Self::default()
    }

    /// A recorder for a request from `source`, when some service logs.
    pub(crate) fn armed(
        subscriptions: Arc<super::access_log::Subscriptions>,
        source: SocketAddr,
    ) -> Self {
        Self {
            state: State::Armed(Armed {
                start_time: SystemTime::now(),
                started: Instant::now(),
                source,
                subscriptions,
            }),
        }
    }

    /// Whether a record is being collected.
    #[cfg(test)]
    pub(crate) fn is_recording(&self) -> bool {
        matches!(self.state, State::Recording(_))
    }

    /// The route is known: start recording if its service is subscribed.
    pub(crate) fn routed<B>(&mut self, info: &RouteInfo<'_>, req: &mut Request<B>) {
        let State::Armed(armed) = std::mem::take(&mut self.state) else {
            return;
        };
        let Some(service) = armed.subscriptions.service(info.service_id) else {
            return;
        };
        let mut record = RequestRecord::new(armed.start_time, armed.source, info, service);
        record.take_head(req);
        record.service_network = service.network_of(record.host.as_deref());
        let tally = Arc::new(Tally::default());
        req.extensions_mut().insert(Arc::clone(&tally));
        self.state = State::Recording(Box::new(Pending {
            record,
            tally,
            started: armed.started,
            head_at: None,
            to: Arc::clone(&service.subscribers),
        }));
    }

    /// The request was refused before routing (a limit, bad framing): if
    /// its host and path still route to a subscribed service, record it
    /// there, as Lattice logs client errors of requests to a service.
    /// Costs a route lookup, only when some service logs.
    pub(crate) fn refused<B>(&mut self, shared: &crate::state::Shared, req: &mut Request<B>) {
        if !matches!(self.state, State::Armed(_)) {
            return;
        }
        let Some(prepared) = shared.current.load_full() else {
            return;
        };
        let Ok(host) = crate::listen::admit::request_host(req) else {
            return;
        };
        match prepared
            .routes
            .route(host, req.method(), req.uri().path(), req.headers())
        {
            crate::route::Route::Fixed { info, .. } | crate::route::Route::Forward { info, .. } => {
                self.routed(&info, req);
            }
            crate::route::Route::NoService | crate::route::Route::NoListener { .. } => {}
        }
    }

    /// Whether this request's service logs (its caller is then worth
    /// finding out).
    pub(crate) fn wants_caller(&self) -> bool {
        matches!(self.state, State::Recording(_))
    }

    /// Who the request is made as: a workload's SPIFFE id and its
    /// account, or `anonymous` (no account) for `None`.
    pub(crate) fn caller(&mut self, who: Option<&WorkloadIdentity>) {
        if let State::Recording(p) = &mut self.state {
            let r = &mut p.record;
            match who {
                Some(id) => {
                    r.caller_principal = Some(id.uri().into());
                    r.caller_account = Some(id.account().into());
                }
                None => {
                    r.caller_principal = Some(ANONYMOUS.into());
                    r.caller_account = None;
                }
            }
        }
    }

    /// The target group was chosen (the last choice is kept).
    pub(crate) fn target_group(&mut self, id: &str, name: &str) {
        if let State::Recording(p) = &mut self.state {
            let r = &mut p.record;
            if r.target_group_id.as_deref() != Some(id) {
                r.target_group_id = Some(id.into());
                r.target_group = Some(name.into());
            }
        }
    }

    /// A target was picked (the last pick is kept: after retries, the one
    /// that answered).
    pub(crate) fn target(&mut self, authority: &str) {
        if let State::Recording(p) = &mut self.state
            && p.record.target.as_deref() != Some(authority)
        {
            p.record.target = Some(authority.into());
        }
    }

    /// The proxy answers with `failure`.
    pub(crate) fn failed(&mut self, failure: &Failure) {
        if let State::Recording(p) = &mut self.state {
            p.record.outcome = Outcome::Failed(failure.reason);
            p.record.failure_reason = Some(FailureReason::of(failure.reason));
            if let Some(why) = &failure.auth_denied {
                p.record.auth_denied_reason = Some(why.clone());
            }
        }
    }

    /// The fronting proxy refused the request with `reason` (an auth
    /// policy's 401/403) because `why`: logged as this proxy's own refusal.
    pub(crate) fn denied_by_peer(&mut self, reason: Reason, why: &str) {
        if let State::Recording(p) = &mut self.state {
            p.record.outcome = Outcome::Failed(reason);
            p.record.failure_reason = Some(FailureReason::of(reason));
            if !why.is_empty() {
                p.record.auth_denied_reason = Some(bounded(why));
            }
        }
    }

    /// A rule's fixed response answers.
    pub(crate) fn fixed(&mut self) {
        if let State::Recording(p) = &mut self.state {
            p.record.outcome = Outcome::Fixed;
        }
    }

    /// The response head is ready: note it, and wrap the body so the
    /// record is completed when the body ends.
    pub(crate) fn finish(
        mut self,
        resp: http::Response<crate::body::ProxyBody>,
    ) -> http::Response<crate::body::ProxyBody> {
        let State::Recording(mut p) = std::mem::take(&mut self.state) else {
            return resp;
        };
        let now = Instant::now();
        let r = &mut p.record;
        r.status = Some(resp.status().as_u16());
        if r.outcome == Outcome::NoResponse {
            r.outcome = Outcome::Upstream;
        }
        if r.target.is_some() {
            r.request_to_target = Some(now.saturating_duration_since(p.started));
        }
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS
            && let Some(s) = grpc_status(resp.headers())
        {
            r.grpc_status = Some(s);
        }
        p.head_at = Some(now);
        resp.map(|body| super::body::ObservedBody::wrap(body, p))
    }
}

impl Drop for Recorder {
    /// The handler was dropped before `finish`: the client went away
    /// while the request was in flight.
    fn drop(&mut self) {
        if let State::Recording(p) = std::mem::take(&mut self.state) {
            let mut p = *p;
            if p.record.target.is_some() {
                p.record.request_to_target = Some(p.started.elapsed());
            }
            p.record.outcome = Outcome::NoResponse;
            p.record.failure_reason = Some(FailureReason::ClientConnectionClosed);
            p.complete(BodyEnd::ClientGone);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_recorder_lives_on_the_stack_until_its_service_logs() {
        // Off and armed recorders are inline (no allocation); only a
        // recording one boxes its record.
        assert!(std::mem::size_of::<Recorder>() <= 96);
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let s = "é".repeat(MAX_FIELD_BYTES);
        let b = bounded(&s);
        assert!(b.len() <= MAX_FIELD_BYTES, "{}", b.len());
        assert!(b.ends_with('…'));
        assert_eq!(&*bounded("/short"), "/short");
    }

    #[test]
    fn trace_ids_come_only_from_valid_traceparents() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(ok), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            b"garbage",
        ] {
            assert_eq!(trace_id(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_head_is_copied_without_the_query() {
        let info = RouteInfo {
            service_id: "svc-1",
            service: "api",
            listener: "http",
            rule: Some("r"),
        };
        let req = Request::builder()
            .method("POST")
            .uri("/login?token=secret&user=bob")
            .header("host", "api.net.trellis.internal")
            .header("user-agent", "curl/8")
            .header("authorization", "Bearer secret")
            .header("x-request-id", "abc")
            .body(())
            .unwrap();
        let log = super::super::access_log::ServiceLog::bare("api", "svc-1");
        let mut r = RequestRecord::new(
            SystemTime::UNIX_EPOCH,
            ([127, 0, 0, 1], 9).into(),
            &info,
            &log,
        );
        r.take_head(&req);
        assert_eq!(&*r.path, "/login");
        assert_eq!(r.host.as_deref(), Some("api.net.trellis.internal"));
        assert_eq!(r.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(&*r.request_id, "abc");
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.rule.as_deref(), Some("r"));
        assert!(!format!("{r:?}").contains("secret"));
    }
}
