//! What the data path does for metrics, per connection and per request.
//!
//! - [`ConnectionGuard`]: `trellis_active_connections`, up while it lives.
//! - [`Exchange`]: one request, from the moment the listener hands it to
//!   its handler. The handler tells it the service (`routed`), the target
//!   group (`target_group`, which also starts the upstream clock), and how
//!   the proxy answered (`failed`, `fixed`). `finish` takes the response
//!   head: it counts the request and its latencies, and wraps the body in
//!   a [`MeteredBody`] that counts response bytes and keeps the request in
//!   `trellis_active_requests` until the body is done. An exchange dropped
//!   before `finish` (the client went away while the request was in
//!   flight) counts as `code_class=""`, `reason="client_closed"`.
//!
//! Cost per request: one `arc_swap` load and a hash lookup by service id
//! (a linear scan of the service's few target groups for the group), three
//! clock reads, and relaxed atomic adds: the request counter, two
//! histograms (two adds each), the active-requests gauge up and down, the
//! byte counters once per body frame. No lock and no allocation once the
//! series exist.

use super::histogram::LatencyHistogram;
use super::view::{
    CLASSES, Families, GroupMeters, ReasonLabel, RequestLabels, ServiceMeters, View, class_index,
};
use crate::body::ProxyBody;
use crate::error::{Blame, Reason};
use crate::listen::Side;
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Holds a gauge one up; puts it back down when dropped.
#[derive(Debug)]
pub(crate) struct GaugeHold(Gauge);

impl GaugeHold {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One open data connection (`trellis_active_connections`).
pub(crate) type ConnectionGuard = GaugeHold;

/// The target group a request went to.
#[derive(Debug)]
enum GroupRef {
    /// None yet.
    None,
    /// The service's group at this index (the common case).
    Listed(usize),
    /// A group the service's handles do not list (the request raced a
    /// push): counted through the family, which allocates its labels.
    Other(Arc<GroupMeters>),
}

/// One request's metrics; see the module docs.
#[derive(Debug)]
pub(crate) struct Exchange {
    view: Arc<View>,
    side: Side,
    start: Instant,
    service: Option<Arc<ServiceMeters>>,
    group: GroupRef,
    /// When the target group was picked.
    upstream_start: Option<Instant>,
    reason: ReasonLabel,
    /// `trellis_active_requests`; handed to the body by `finish`.
    active: Option<GaugeHold>,
    finished: bool,
}

impl Exchange {
    pub(super) fn new(view: Arc<View>, side: Side, active: &Gauge) -> Self {
        Self {
            view,
            side,
            start: Instant::now(),
            service: None,
            group: GroupRef::None,
            upstream_start: None,
            reason: ReasonLabel::None,
            active: Some(GaugeHold::new(active)),
            finished: false,
        }
    }

    /// The request was routed to the service with this id.
    pub(crate) fn routed(&mut self, service_id: &str) {
        self.service = self.view.service(service_id).cloned();
    }

    /// A target group was picked (the last one counts); the upstream clock
    /// starts.
    pub(crate) fn target_group(&mut self, id: &str) {
        self.group = match self.service.as_ref().and_then(|s| s.group_index(id)) {
            Some(i) => GroupRef::Listed(i),
            None => match self.view.group(id) {
                Some(g) => GroupRef::Other(Arc::clone(g)),
                None => GroupRef::None,
            },
        };
        self.upstream_start = Some(Instant::now());
    }

    /// The proxy answers with an error of this reason.
    pub(crate) fn failed(&mut self, reason: Reason) {
        self.reason = ReasonLabel::Proxy(reason);
    }

    /// A rule's fixed response answers with `status`.
    pub(crate) fn fixed(&mut self, status: u16) {
        if !(200..300).contains(&status) {
            self.reason = ReasonLabel::Fixed;
        }
    }

    /// `trellis_request_bytes_total` of the routed service, for the
    /// request body on its way to the target.
    pub(crate) fn request_bytes(&self) -> Option<Counter> {
        let s = self.service.as_ref()?;
        Some(s.request_bytes(&self.view.families).clone())
    }

    /// The response head is ready: count the request, and wrap the body.
    pub(crate) fn finish(mut self, resp: Response<ProxyBody>) -> Response<MeteredBody> {
        let bytes = self.record(Some(resp.status().as_u16()));
        self.finished = true;
        let active = self.active.take();
        resp.map(|inner| MeteredBody {
            inner,
            bytes,
            _active: active,
        })
    }

    /// The proxy answered with `status` and no body to meter (an answer
    /// written before any handler ran).
    pub(crate) fn answered(mut self, status: u16) {
        let _ = self.record(Some(status));
        self.finished = true;
    }

    /// Count the request with `status` (`None`: no response head); the
    /// response-bytes counter for its body.
    fn record(&self, status: Option<u16>) -> Option<Counter> {
        let now = Instant::now();
        let f: &Families = &self.view.families;
        let class = status.map_or(0, class_index);
        if self.side == Side::Inbound {
            f.inbound(class, self.reason).inc();
            return None;
        }
        let service = self.service.as_ref().unwrap_or(&self.view.unrouted);
        let group: Option<&GroupMeters> = match &self.group {
            GroupRef::None => {
                service.ungrouped.counter(f, class, self.reason).inc();
                None
            }
            GroupRef::Listed(i) => match service.groups.get(*i) {
                Some(g) => {
                    g.requests.counter(f, class, self.reason).inc();
                    Some(&g.group)
                }
                None => None,
            },
            GroupRef::Other(g) => {
                f.requests
                    .get_or_create(&RequestLabels {
                        service: Arc::clone(&service.label),
                        target_group: Arc::clone(&g.label),
                        code_class: CLASSES[class],
                        reason: self.reason.as_str(),
                    })
                    .inc();
                Some(g)
            }
        };
        service
            .duration(f, class)
            .observe(now.saturating_duration_since(self.start));
        if let (Some(g), Some(t0)) = (group, self.upstream_start)
            && self.reached_upstream()
        {
            let h: &LatencyHistogram = g.upstream(f);
            h.observe(now.saturating_duration_since(t0));
        }
        if self.reason == ReasonLabel::Proxy(Reason::RateLimited) {
            service.rate_limited(f).inc();
        }
        Some(service.response_bytes(f).clone())
    }

    /// Whether the request got as far as a target: it answered, or it
    /// failed on the target's side (connect, reset, timeout).
    fn reached_upstream(&self) -> bool {
        match self.reason {
            ReasonLabel::None => true,
            ReasonLabel::Proxy(r) => r.blame() == Blame::Upstream,
            ReasonLabel::Fixed | ReasonLabel::ClientClosed => false,
        }
    }
}

impl Drop for Exchange {
    /// Dropped before `finish`: the client went away first.
    fn drop(&mut self) {
        if !self.finished {
            self.reason = ReasonLabel::ClientClosed;
            let _ = self.record(None);
        }
    }
}

/// A response body that counts its data bytes and holds the request in
/// `trellis_active_requests` until it is done (sent or dropped).
#[derive(Debug)]
pub(crate) struct MeteredBody {
    inner: ProxyBody,
    bytes: Option<Counter>,
    _active: Option<GaugeHold>,
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(bytes)) = (&polled, &this.bytes)
            && let Some(data) = frame.data_ref()
        {
            bytes.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
