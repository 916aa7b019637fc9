//! OpenTelemetry traces: a server span on every proxy a request passes
//! through and a client span for every upstream attempt, exported over
//! OTLP.
//!
//! ```text
//! app ──> p1 outbound ───────────────> p2 inbound ─────────────> target
//!         [server "GET svc"]           [server "GET inbound"]
//!           └ [client "GET fronted"] ──> └ [client "GET 127.0.0.1:8080"]
//!                 traceparent: 00-<trace>-<p1 client span>-01
//! ```
//!
//! - The server span's parent is the caller's span when the request
//!   carries `traceparent` (or B3, see [`propagate`]); otherwise it starts
//!   a trace. Each client span is the server span's child and is what the
//!   next hop sees in `traceparent`, so the next proxy's server span is its
//!   child. Retries make several client spans, the later ones with
//!   `http.request.resend_count`.
//! - Attributes follow the HTTP semantic conventions
//!   (`http.request.method`, `url.path`, `http.response.status_code`,
//!   `server.address`, `server.port`, `network.peer.address`,
//!   `user_agent.original`, ...) plus `trellis.*`: `trellis.proxy`,
//!   `trellis.direction`, `trellis.request_id`, and once routed
//!   `trellis.service`, `trellis.listener`, `trellis.rule`,
//!   `trellis.target_group`, `trellis.account` (the service's owner).
//!   A proxy-made answer sets `trellis.error` and `error.type` to its
//!   `x-trellis-error` reason; it and every 5xx mark the span as an error.
//! - Spans end when the response head is passed on; the body's streaming
//!   time is not in them.
//!
//! Each running proxy owns its [`Traces`] (its own tracer provider, with
//! `service.instance.id` = the proxy's name), so several proxies in one
//! process (tests, `trellis dev`) keep their spans apart. Without an
//! endpoint there is no `Traces`: no span objects, no header parsing, and
//! the request path only checks an `Option`. Export never blocks a
//! request (see [`export`]).

mod export;
mod propagate;
pub mod settings;

pub use export::{TraceSetupError, TraceStats};
pub use opentelemetry::trace::TraceId;
pub use settings::{OtlpProtocol, Sampler, TraceConfig};

use crate::error::{ERROR_HEADER, Failure};
use crate::forward::headers::X_TRELLIS_TARGET;
use crate::route::{RouteInfo, split_host_port};
use export::ExportCounters;
use http::header::{HOST, USER_AGENT};
use http::{Method, Request, Response, Version};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue, StringValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use trellis_config::Snapshot;

/// Time spans still queued get at shutdown (and when a proxy is dropped
/// without shutdown) before they are abandoned.
pub const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// The tracer of one running proxy; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Traces {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    proxy: StringValue,
    counters: Arc<ExportCounters>,
    shut_down: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without `shutdown` (possibly on an async worker, where
        // the provider's blocking flush must not run): flush on a thread.
        if !self.shut_down.load(Ordering::Acquire) {
            let provider = self.provider.clone();
            let _ = std::thread::Builder::new()
                .name("trellis-trace-flush".into())
                .spawn(move || provider.shutdown_with_timeout(TRACE_FLUSH_TIMEOUT));
        }
    }
}

impl Traces {
    /// The tracer for proxy `proxy`, or `None` when `cfg` has no endpoint.
    /// Must run within the proxy's tokio runtime (the gRPC channel and
    /// the HTTP client live on it).
    pub(crate) fn start(cfg: &TraceConfig, proxy: &str) -> Result<Option<Self>, TraceSetupError> {
        let Some(endpoint) = cfg.endpoint.as_deref() else {
            return Ok(None);
        };
        if let Some(hint) = cfg.hint() {
            tracing::warn!(proxy, "{hint}");
        }
        let counters = Arc::new(ExportCounters::default());
        let processor = export::processor(cfg, endpoint, Arc::clone(&counters))?;
        let resource = Resource::builder_empty()
            .with_attributes(
                cfg.resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_service_name(cfg.service_name.clone())
            .with_attribute(KeyValue::new("service.instance.id", proxy.to_string()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(cfg.sampler.to_sdk())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("trellis-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(
            proxy,
            endpoint,
            protocol = cfg.protocol.as_str(),
            sampler = ?cfg.sampler,
            "exporting traces"
        );
        Ok(Some(Self {
            inner: Arc::new(Inner {
                provider,
                tracer,
                proxy: StringValue::from(Arc::<str>::from(proxy)),
                counters,
                shut_down: AtomicBool::new(false),
            }),
        }))
    }

    /// What happened to this proxy's spans so far.
    pub(crate) fn stats(&self) -> TraceStats {
        self.inner.counters.snapshot()
    }

    /// Export what is queued (within `bound`) and stop. The flush blocks,
    /// so it runs on the blocking pool, never on an async worker.
    pub(crate) async fn shutdown(&self, bound: Duration) {
        self.inner.shut_down.store(true, Ordering::Release);
        let provider = self.inner.provider.clone();
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(bound)).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "queued spans were not all exported at shutdown")
            }
            Err(e) => tracing::warn!(error = %e, "the span flush task failed"),
        }
        let stats = self.stats();
        tracing::debug!(?stats, "traces stopped");
    }

    /// Start the server span of a request that arrived on the `direction`
    /// listener (`outbound` or `inbound`) from `peer`, and attach what the
    /// client spans need to the request.
    pub(crate) fn server_span<B>(
        &self,
        direction: &'static str,
        req: &mut Request<B>,
        peer: SocketAddr,
    ) -> ServerSpan {
        let parent = match propagate::extract(req.headers()) {
            Some(sc) => Context::new().with_remote_span_context(sc),
            None => Context::new(),
        };
        let method = method_name(req.method());
        let mut span = self
            .inner
            .tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .start_with_context(&self.inner.tracer, &parent);
        if span.is_recording() {
            let (host, port) = host_and_port(req);
            let mut attrs = Vec::with_capacity(14);
            attrs.push(KeyValue::new("http.request.method", method));
            if method == "_OTHER" {
                attrs.push(KeyValue::new(
                    "http.request.method_original",
                    req.method().as_str().to_string(),
                ));
            }
            attrs.push(KeyValue::new("url.path", req.uri().path().to_string()));
            attrs.push(KeyValue::new("url.scheme", "http"));
            attrs.push(KeyValue::new(
                "network.protocol.version",
                protocol_version(req.version()),
            ));
            if let Some(host) = host {
                attrs.push(KeyValue::new("server.address", host));
            }
            if let Some(port) = port {
                attrs.push(KeyValue::new("server.port", i64::from(port)));
            }
            attrs.push(KeyValue::new(
                "network.peer.address",
                peer.ip().to_canonical().to_string(),
            ));
            attrs.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
            if let Some(ua) = header_str(req.headers().get(USER_AGENT)) {
                attrs.push(KeyValue::new("user_agent.original", ua.to_string()));
            }
            if let Some(id) = header_str(req.headers().get(crate::error::REQUEST_ID_HEADER)) {
                attrs.push(KeyValue::new("trellis.request_id", id.to_string()));
            }
            attrs.push(KeyValue::new("trellis.proxy", self.inner.proxy.clone()));
            attrs.push(KeyValue::new("trellis.direction", direction));
            span.set_attributes(attrs);
        }
        // Until a client span replaces it, the request names this span as
        // its parent: whatever reads `traceparent` later (the access log's
        // `traceId`) sees the trace this proxy recorded, also when the
        // request started it.
        propagate::inject(req.headers_mut(), span.span_context());
        let link = Arc::new(Link {
            traces: self.clone(),
            parent: span.span_context().clone(),
            route: OnceLock::new(),
            target_group: OnceLock::new(),
            attempts: AtomicU32::new(0),
        });
        req.extensions_mut()
            .insert(UpstreamTrace(Arc::clone(&link)));
        ServerSpan {
            span,
            link,
            method,
            direction,
        }
    }
}

/// What the spans of one request share; the client spans find it in the
/// request's extensions.
#[derive(Debug)]
struct Link {
    traces: Traces,
    /// The server span, parent of every client span.
    parent: SpanContext,
    route: OnceLock<RouteFacts>,
    target_group: OnceLock<StringValue>,
    attempts: AtomicU32,
}

/// A request's trace, carried in its extensions from the listener to the
/// forwarder (and along with cloned request parts, for retries).
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTrace(Arc<Link>);

/// The route a request took, as span attributes.
#[derive(Debug)]
struct RouteFacts {
    service: StringValue,
    listener: StringValue,
    rule: Option<StringValue>,
    account: Option<StringValue>,
}

impl RouteFacts {
    fn attributes(&self, out: &mut Vec<KeyValue>) {
        out.push(KeyValue::new("trellis.service", self.service.clone()));
        out.push(KeyValue::new("trellis.listener", self.listener.clone()));
        if let Some(r) = &self.rule {
            out.push(KeyValue::new("trellis.rule", r.clone()));
        }
        if let Some(a) = &self.account {
            out.push(KeyValue::new("trellis.account", a.clone()));
        }
    }
}

/// The trace id of the request `extensions` belong to (a request's or its
/// parts'), when it is traced: the access log's `traceId`. Nothing is
/// allocated; `TraceId` prints as 32 hex digits. (The server span also
/// writes its context into the request's `traceparent`, so whatever reads
/// that header before the client span replaces it sees the same trace.)
pub fn current_trace_id(extensions: &http::Extensions) -> Option<TraceId> {
    extensions
        .get::<UpstreamTrace>()
        .map(|t| t.0.parent.trace_id())
}

/// The names traced requests put in span attributes, as shared strings,
/// built once per snapshot (in [`crate::state::Prepared`]): a traced
/// request clones an `Arc` instead of copying each name, and finds its
/// service's owner with one lookup instead of a scan of the snapshot.
#[derive(Debug, Default)]
pub(crate) struct SpanNames {
    services: HashMap<Box<str>, ServiceNames>,
    /// Target group names by id.
    target_groups: HashMap<Box<str>, StringValue>,
}

/// The names of one service.
#[derive(Debug)]
struct ServiceNames {
    service: StringValue,
    account: StringValue,
    /// Its listeners' and rules' names.
    names: Vec<StringValue>,
}

impl ServiceNames {
    /// The listener or rule called `name` (a copy if the snapshot does
    /// not have it, which a route of this snapshot never asks for).
    fn name(&self, name: &str) -> StringValue {
        self.names
            .iter()
            .find(|n| n.as_str() == name)
            .cloned()
            .unwrap_or_else(|| StringValue::from(name.to_string()))
    }
}

fn shared(s: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(s))
}

impl SpanNames {
    /// The names of every service and target group in `snapshot`.
    pub(crate) fn build(snapshot: &Snapshot) -> Self {
        let services = snapshot
            .services
            .iter()
            .map(|svc| {
                let mut names: Vec<StringValue> = Vec::new();
                for l in &svc.listeners {
                    for n in std::iter::once(&l.name).chain(l.rules.iter().map(|r| &r.name)) {
                        if !names.iter().any(|v| v.as_str() == n) {
                            names.push(shared(n));
                        }
                    }
                }
                let names = ServiceNames {
                    service: shared(&svc.name),
                    account: shared(&svc.account),
                    names,
                };
                (svc.id.as_str().into(), names)
            })
            .collect();
        let target_groups = snapshot
            .target_groups
            .iter()
            .map(|g| (g.id.as_str().into(), shared(&g.name)))
            .collect();
        Self {
            services,
            target_groups,
        }
    }
}

/// Record the route `info` on the trace of `req`, if it is traced;
/// `names` (of the snapshot that routed it) names the service's owner.
/// Costs one extension lookup when not.
pub(crate) fn note_route<B>(req: &Request<B>, info: &RouteInfo<'_>, names: &SpanNames) {
    let Some(link) = recording_link(req) else {
        return;
    };
    let facts = match names.services.get(info.service_id) {
        Some(svc) => RouteFacts {
            service: svc.service.clone(),
            listener: svc.name(info.listener),
            rule: info.rule.map(|r| svc.name(r)),
            account: Some(svc.account.clone()),
        },
        None => RouteFacts {
            service: info.service.to_string().into(),
            listener: info.listener.to_string().into(),
            rule: info.rule.map(|r| r.to_string().into()),
            account: None,
        },
    };
    let _ = link.route.set(facts);
}

/// Record the target group `id` (by its name in `names`, else `name`)
/// chosen for `req`, if it is traced.
pub(crate) fn note_target_group<B>(req: &Request<B>, id: &str, name: &str, names: &SpanNames) {
    if let Some(link) = recording_link(req) {
        let value = names
            .target_groups
            .get(id)
            .filter(|v| v.as_str() == name)
            .cloned()
            .unwrap_or_else(|| name.to_string().into());
        let _ = link.target_group.set(value);
    }
}

fn recording_link<B>(req: &Request<B>) -> Option<&Link> {
    let UpstreamTrace(link) = req.extensions().get::<UpstreamTrace>()?;
    link.parent.is_sampled().then_some(&**link)
}

/// Attributes of what the request was routed to.
fn route_attributes(link: &Link, out: &mut Vec<KeyValue>) {
    if let Some(route) = link.route.get() {
        route.attributes(out);
    }
    if let Some(tg) = link.target_group.get() {
        out.push(KeyValue::new("trellis.target_group", tg.clone()));
    }
}

/// The server span of one request; ends with [`ServerSpan::finish`] (or
/// when dropped, e.g. if the client went away).
#[derive(Debug)]
pub(crate) struct ServerSpan {
    span: Span,
    link: Arc<Link>,
    method: &'static str,
    direction: &'static str,
}

impl ServerSpan {
    /// The authenticated caller (from its mesh certificate).
    pub(crate) fn set_caller(&mut self, principal: &str, account: &str) {
        if self.span.is_recording() {
            self.span.set_attributes([
                KeyValue::new("trellis.caller.principal", principal.to_string()),
                KeyValue::new("trellis.caller.account", account.to_string()),
            ]);
        }
    }

    /// End the span with the response the client gets.
    pub(crate) fn finish<B>(mut self, resp: &Response<B>) {
        if !self.span.is_recording() {
            return;
        }
        let status = resp.status();
        let mut attrs = Vec::with_capacity(8);
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        let route = self.link.route.get();
        route_attributes(&self.link, &mut attrs);
        let error = header_str(resp.headers().get(ERROR_HEADER));
        if let Some(reason) = error {
            attrs.push(KeyValue::new("trellis.error", reason.to_string()));
            attrs.push(KeyValue::new("error.type", reason.to_string()));
        } else if status.is_server_error() {
            attrs.push(KeyValue::new("error.type", status.as_str().to_string()));
        }
        self.span.set_attributes(attrs);
        let name = match route {
            Some(r) => format!("{} {}", self.method, r.service.as_str()),
            None => format!("{} {}", self.method, self.direction),
        };
        self.span.update_name(name);
        if status.is_server_error() || error.is_some() {
            self.span
                .set_status(Status::error(error.unwrap_or(status.as_str()).to_string()));
        }
        self.span.end();
    }
}

/// The span of one attempt to send a request upstream.
#[derive(Debug)]
pub(crate) struct ClientSpan {
    span: Span,
}

/// Start the client span of an upstream attempt with `req` (already
/// rewritten for upstream: its URI's authority is the address connected
/// to) and put its context in the request's headers. `None` when the
/// request is not traced.
pub(crate) fn client_span<B>(req: &mut Request<B>) -> Option<ClientSpan> {
    let UpstreamTrace(link) = req.extensions().get::<UpstreamTrace>()?;
    let link = Arc::clone(link);
    let attempt = link.attempts.fetch_add(1, Ordering::Relaxed);
    let inner = &link.traces.inner;
    let method = method_name(req.method());
    let name: Cow<'static, str> = match link.target_group.get() {
        Some(tg) if link.parent.is_sampled() => format!("{method} {}", tg.as_str()).into(),
        _ => method.into(),
    };
    let parent = Context::new().with_remote_span_context(link.parent.clone());
    let mut span = inner
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .start_with_context(&inner.tracer, &parent);
    if span.is_recording() {
        let mut attrs = Vec::with_capacity(14);
        attrs.push(KeyValue::new("http.request.method", method));
        if let Some(authority) = req.uri().authority() {
            if let Some((host, port)) = split_host_port(authority.as_str()) {
                attrs.push(KeyValue::new("server.address", host.to_string()));
                attrs.push(KeyValue::new("server.port", i64::from(port)));
                attrs.push(KeyValue::new("network.peer.address", host.to_string()));
            }
            attrs.push(KeyValue::new(
                "url.full",
                format!("http://{authority}{}", req.uri().path()),
            ));
        }
        attrs.push(KeyValue::new(
            "network.protocol.version",
            protocol_version(req.version()),
        ));
        if attempt > 0 {
            attrs.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(attempt),
            ));
        }
        if let Some(target) = header_str(req.headers().get(X_TRELLIS_TARGET)) {
            attrs.push(KeyValue::new("trellis.target", target.to_string()));
        }
        attrs.push(KeyValue::new("trellis.proxy", inner.proxy.clone()));
        route_attributes(&link, &mut attrs);
        span.set_attributes(attrs);
    }
    propagate::inject(req.headers_mut(), span.span_context());
    Some(ClientSpan { span })
}

impl ClientSpan {
    /// End the span with the attempt's outcome: the upstream's response
    /// head, or why there is none.
    pub(crate) fn finish<B>(mut self, outcome: Result<&Response<B>, &Failure>) {
        if !self.span.is_recording() {
            return;
        }
        match outcome {
            Ok(resp) => {
                let status = resp.status();
                self.span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                if status.is_server_error() {
                    self.span
                        .set_attribute(KeyValue::new("error.type", status.as_str().to_string()));
                    self.span
                        .set_status(Status::error(status.as_str().to_string()));
                }
            }
            Err(failure) => {
                let reason = failure.reason.as_str();
                self.span.set_attributes([
                    KeyValue::new("trellis.error", reason),
                    KeyValue::new("error.type", reason),
                ]);
                self.span
                    .set_status(Status::error(failure.message.to_string()));
            }
        }
        self.span.end();
    }
}

/// The method as a static name; `_OTHER` for extension methods, as the
/// semantic conventions ask (bounded span names).
fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `server.address` and `server.port` from `:authority` or `Host`.
fn host_and_port<B>(req: &Request<B>) -> (Option<String>, Option<u16>) {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header_str(req.headers().get(HOST)));
    match authority.and_then(split_host_port) {
        Some((host, port)) => (Some(host.to_string()), Some(port)),
        None => (None, None),
    }
}

fn header_str(v: Option<&http::HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
}
