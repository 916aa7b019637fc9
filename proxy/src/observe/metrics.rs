//! Prometheus metrics, served by the admin listener at `GET /metrics` in
//! the OpenMetrics text format ([`CONTENT_TYPE`]), as prometheus-client
//! encodes it. Every name starts with `trellis_`; a counter `x` is
//! exposed as `x_total`.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `trellis_requests_total` | counter | `service`, `target_group`, `code_class`, `reason` |
//! | `trellis_inbound_requests_total` | counter | `code_class`, `reason` |
//! | `trellis_request_duration_seconds` | histogram | `service`, `code_class` |
//! | `trellis_upstream_duration_seconds` | histogram | `target_group` |
//! | `trellis_active_connections` | gauge | `listener` |
//! | `trellis_active_requests` | gauge | `listener` |
//! | `trellis_request_bytes_total`, `trellis_response_bytes_total` | counter | `service` |
//! | `trellis_rate_limited_total` | counter | `service` |
//! | `trellis_target_health` | gauge | `target_group`, `target`, `state` |
//! | `trellis_ejections_total`, `trellis_retries_total`, `trellis_retry_budget_exhausted_total` | counter | `target_group` |
//! | `trellis_breaker_overflows_total` | counter | `target_group`, `limit` |
//! | `trellis_tls_handshakes_total`, `trellis_tls_handshake_failures_total` | counter | |
//! | `trellis_access_log_dropped_total`, `trellis_trace_export_failures_total` | counter | |
//! | `trellis_snapshot_version`, `trellis_snapshot_applied_timestamp_seconds` | gauge | |
//! | `trellis_certificate_expiry_timestamp_seconds` | gauge | |
//!
//! **Labels** are bounded by the configuration: services and target
//! groups by name (see `view` for duplicates), targets as `address:port`,
//! `code_class` `1xx`..`5xx` (or `""`: no response head was sent),
//! `reason` the proxy's `x-trellis-error` reason, `fixed_response` (a
//! non-2xx fixed response), `client_closed` (the client left before the
//! response head), or `""` (the target answered). No request ids, no paths.
//!
//! **What is counted where.** `trellis_requests_total` has one count per
//! request taken by the outbound listener, at its response head;
//! requests refused before routing have `service=""` and `target_group=""`
//! (a first request head the proxy rejects itself, with 400/408/431/505,
//! included; hyper's own bare answers on reused HTTP/1 connections are
//! not). Requests from other proxies count in
//! `trellis_inbound_requests_total` only, so summing
//! `trellis_requests_total` over a mesh counts each client request once.
//! `trellis_request_duration_seconds` runs from the request head to the
//! response head (as Linkerd's response latency); the access log's
//! `duration` runs to the last byte. `trellis_upstream_duration_seconds`
//! runs from the target group pick to the response head, retries and
//! backoff included, for requests that reached a target (answered, or
//! failed with an upstream reason). Request bytes are counted as the
//! forwarder streams the body to the target, response bytes as the
//! client is sent them.
//!
//! **Cost.** The request path uses handles prepared per snapshot (`view`)
//! and relaxed atomics; see `exchange`. Everything about targets and
//! target groups, and the access-log and trace counters, is read from the
//! runtime state when scraped (`scrape`), so it costs requests nothing.
//!
//! **Identity.** The inbound listener counts mTLS handshakes completed and
//! refused; the certificate expiry gauge is absent until the proxy has a
//! mesh certificate (a proxy in plaintext mode never has one).

mod exchange;
mod histogram;
mod scrape;
mod view;

pub(crate) use exchange::{ConnectionGuard, Exchange};

use crate::error::Reason;
use crate::listen::Side;
use crate::state::Shared;
use arc_swap::ArcSwap;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_config::Snapshot;
use view::{Families, ListenerLabels, ServiceMeters, View};

/// A byte counter the forwarder's request body adds to.
pub(crate) type ByteCounter = Counter;

/// `Content-Type` of `GET /metrics`.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every family.
const PREFIX: &str = "trellis";

/// The proxy's metrics: the registry of what the request path counts, the
/// handles of the snapshot in use, and what scrapes read besides.
#[derive(Debug)]
pub(crate) struct ProxyMetrics {
    registry: Registry,
    view: ArcSwap<View>,
    /// Outbound, inbound.
    active_connections: [Gauge; 2],
    /// Outbound, inbound.
    active_requests: [Gauge; 2],
    tls_handshake_failures: Counter,
    tls_handshakes: Counter,
    /// When the snapshot in use was applied (Unix ms).
    applied_at_ms: AtomicU64,
    /// Unix seconds; 0: no certificate.
    certificate_expiry: AtomicU64,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Outbound => 0,
        Side::Inbound => 1,
    }
}

impl ProxyMetrics {
    /// Every family registered, no series yet.
    pub(crate) fn new() -> Self {
        let families = Arc::new(Families::default());
        let mut r = Registry::with_prefix(PREFIX);
        let f = &families;
        r.register(
            "requests",
            "Requests taken by the outbound listener, by service, target group, status class and proxy error reason",
            f.requests.clone(),
        );
        r.register(
            "inbound_requests",
            "Requests taken by the inbound listener (from other proxies), by status class and proxy error reason",
            f.inbound_requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from the request head to the response head, outbound listener",
            f.request_duration.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time from the target group pick to the target's response head, retries included",
            f.upstream_duration.clone(),
        );
        r.register(
            "request_bytes",
            "Request body bytes sent on to targets",
            f.request_bytes.clone(),
        );
        r.register(
            "response_bytes",
            "Response body bytes sent to clients, outbound listener",
            f.response_bytes.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by a rate limit of the service or one of its rules (429)",
            f.rate_limited.clone(),
        );
        let listeners = |name, help, r: &mut Registry| {
            let family = Family::<ListenerLabels, Gauge>::default();
            let handles = ["outbound", "inbound"]
                .map(|listener| family.get_or_create_owned(&ListenerLabels { listener }));
            r.register(name, help, family);
            handles
        };
        let active_connections = listeners(
            "active_connections",
            "Open connections on the data listeners",
            &mut r,
        );
        let active_requests = listeners(
            "active_requests",
            "Requests in flight on the data listeners, until their response body is done",
            &mut r,
        );
        let tls_handshake_failures = Counter::default();
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed on the data listeners",
            tls_handshake_failures.clone(),
        );
        let tls_handshakes = Counter::default();
        r.register(
            "tls_handshakes",
            "mTLS handshakes completed on the inbound listener (new connections from peer proxies)",
            tls_handshakes.clone(),
        );
        let unrouted = Arc::new(ServiceMeters::unrouted());
        Self {
            registry: r,
            view: ArcSwap::from_pointee(View::empty(families, unrouted)),
            active_connections,
            active_requests,
            tls_handshake_failures,
            tls_handshakes,
            applied_at_ms: AtomicU64::new(0),
            certificate_expiry: AtomicU64::new(0),
        }
    }

    /// A snapshot was applied: prepare its handles.
    pub(crate) fn install(&self, snapshot: &Snapshot) {
        let old = self.view.load();
        let new = View::build(snapshot, &old);
        drop(old);
        self.view.store(Arc::new(new));
        self.applied_at_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// A data connection opened; it counts until the guard drops.
    pub(crate) fn connection(&self, side: Side) -> ConnectionGuard {
        ConnectionGuard::new(&self.active_connections[side_index(side)])
    }

    /// A request was handed to its handler.
    pub(crate) fn exchange(&self, side: Side) -> Exchange {
        Exchange::new(
            self.view.load_full(),
            side,
            &self.active_requests[side_index(side)],
        )
    }

    /// The proxy answered a connection's first request head itself (400,
    /// 408, 431, 505) before any handler saw it.
    pub(crate) fn rejected(&self, side: Side, reason: Reason) {
        let mut e = self.exchange(side);
        e.failed(reason);
        e.answered(reason.status().as_u16());
    }

    /// A TLS handshake on a data listener failed (refused certificate,
    /// plaintext, timeout).
    pub(crate) fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// A TLS handshake on the inbound listener completed.
    pub(crate) fn tls_handshake_done(&self) {
        self.tls_handshakes.inc();
    }

    /// The proxy's certificate expires at `at` (called on every load and
    /// renewal); until the first call
    /// `trellis_certificate_expiry_timestamp_seconds` is absent.
    pub(crate) fn set_certificate_expiry(&self, at: SystemTime) {
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.certificate_expiry.store(secs, Ordering::Relaxed);
    }

    /// The exposition: what the request path counted, what the runtime
    /// state says now, and `# EOF`.
    pub(crate) fn render(&self, shared: &Shared) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        encode_registry(&mut out, &self.registry)?;
        let expiry = self.certificate_expiry.load(Ordering::Relaxed);
        let read = scrape::Scrape::read(
            shared,
            &self.view.load(),
            self.applied_at_ms.load(Ordering::Relaxed),
            (expiry > 0).then_some(expiry),
        );
        let mut now = Registry::with_prefix(PREFIX);
        now.register_collector(Box::new(read));
        encode_registry(&mut out, &now)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::body::ProxyBody;
    use http::{Response, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::json;

    fn snapshot(version: u64, service_name: &str) -> Snapshot {
        let tg = |id: &str, name: &str| {
            json!({"id": id, "name": name, "account": "000000000000", "protocol": "HTTP",
                   "protocolVersion": "HTTP1", "port": 80, "algorithm": "round_robin",
                   "healthCheck": {}, "targets": []})
        };
        serde_json::from_value(json!({
            "version": version, "proxy": "p1", "networks": [],
            "services": [{
                "id": "svc-1", "name": service_name, "account": "000000000000",
                "networks": [], "hosts": ["api.example"], "authType": "NONE",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": 80,
                    "defaultAction": {"forward": {"targetGroups": [{"targetGroup": "tg-1"}]}}}]
            }],
            "targetGroups": [tg("tg-1", "api-v1"), tg("tg-2", "batch")]
        }))
        .unwrap()
    }

    /// The registry's exposition (what the request path counted).
    fn exposition(m: &ProxyMetrics) -> String {
        let mut out = String::new();
        encode_registry(&mut out, &m.registry).unwrap();
        encode_eof(&mut out).unwrap();
        out
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    fn response(status: u16, body: &'static str) -> Response<ProxyBody> {
        let mut r = Response::new(ProxyBody::full(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }

    #[tokio::test]
    async fn requests_are_counted_by_service_group_class_and_reason() {
        let m = ProxyMetrics::new();
        m.install(&snapshot(1, "api"));

        // The target answers, and the client reads the whole body.
        let mut e = m.exchange(Side::Outbound);
        e.routed("svc-1");
        e.target_group("tg-1");
        let resp = e.finish(response(200, "hello"));
        assert_eq!(
            sample(
                &exposition(&m),
                "trellis_active_requests{listener=\"outbound\"}"
            ),
            Some("1"),
            "in flight until the body is done"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");

        // Errors before and after routing, a fixed response, a client
        // that left, a first head refused before any handler, a request
        // to a group the service does not list, an inbound error.
        let mut e = m.exchange(Side::Outbound);
        e.failed(Reason::NoService);
        drop(e.finish(response(404, "{}")));
        let mut e = m.exchange(Side::Outbound);
        e.routed("svc-1");
        e.failed(Reason::RateLimited);
        drop(e.finish(response(429, "")));
        let mut e = m.exchange(Side::Outbound);
        e.routed("svc-1");
        e.fixed(410);
        drop(e.finish(response(410, "")));
        let mut e = m.exchange(Side::Outbound);
        e.routed("svc-1");
        e.target_group("tg-1");
        drop(e);
        m.rejected(Side::Outbound, Reason::RequestTimeout);
        let mut e = m.exchange(Side::Outbound);
        e.routed("svc-1");
        e.target_group("tg-2");
        e.failed(Reason::UpstreamConnectFailed);
        drop(e.finish(response(502, "")));
        let mut e = m.exchange(Side::Inbound);
        e.failed(Reason::TargetNotFronted);
        drop(e.finish(response(403, "")));

        let text = exposition(&m);
        let req = |s: &str, g: &str, c: &str, r: &str| {
            format!(
                "trellis_requests_total{{service=\"{s}\",target_group=\"{g}\",code_class=\"{c}\",reason=\"{r}\"}}"
            )
        };
        let want = [
            (req("api", "api-v1", "2xx", ""), "1"),
            (req("", "", "4xx", "no_service"), "1"),
            (req("", "", "4xx", "request_timeout"), "1"),
            (req("api", "", "4xx", "rate_limited"), "1"),
            (req("api", "", "4xx", "fixed_response"), "1"),
            (req("api", "api-v1", "", "client_closed"), "1"),
            (req("api", "batch", "5xx", "upstream_connect_failed"), "1"),
            (
                "trellis_inbound_requests_total{code_class=\"4xx\",reason=\"target_not_fronted\"}"
                    .into(),
                "1",
            ),
            ("trellis_rate_limited_total{service=\"api\"}".into(), "1"),
            ("trellis_response_bytes_total{service=\"api\"}".into(), "5"),
            ("trellis_response_bytes_total{service=\"\"}".into(), "0"),
            (
                "trellis_request_duration_seconds_count{service=\"api\",code_class=\"2xx\"}".into(),
                "1",
            ),
            (
                "trellis_upstream_duration_seconds_count{target_group=\"api-v1\"}".into(),
                "1",
            ),
            // A connect failure reached the group; a client that left
            // before the head did not get an upstream answer.
            (
                "trellis_upstream_duration_seconds_count{target_group=\"batch\"}".into(),
                "1",
            ),
            ("trellis_active_requests{listener=\"outbound\"}".into(), "0"),
            ("trellis_active_requests{listener=\"inbound\"}".into(), "0"),
            (
                "trellis_active_connections{listener=\"outbound\"}".into(),
                "0",
            ),
            ("trellis_tls_handshake_failures_total".into(), "0"),
        ];
        for (series, value) in &want {
            assert_eq!(sample(&text, series), Some(*value), "{series}\n{text}");
        }
        let requests = text
            .lines()
            .filter(|l| l.starts_with("trellis_requests_total{"))
            .count();
        assert_eq!(requests, 7, "no other series\n{text}");
        assert!(text.contains("# TYPE trellis_requests counter\n"));
        assert!(text.contains("# TYPE trellis_request_duration_seconds histogram\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn connections_count_while_open() {
        let m = ProxyMetrics::new();
        let a = m.connection(Side::Inbound);
        let _b = m.connection(Side::Inbound);
        let gauge = "trellis_active_connections{listener=\"inbound\"}";
        assert_eq!(sample(&exposition(&m), gauge), Some("2"));
        drop(a);
        assert_eq!(sample(&exposition(&m), gauge), Some("1"));
    }

    #[test]
    fn a_push_keeps_unchanged_handles_and_relabels_renamed_services() {
        let m = ProxyMetrics::new();
        m.install(&snapshot(1, "api"));
        let before = Arc::clone(m.view.load().service("svc-1").unwrap());
        m.install(&snapshot(2, "api"));
        let after = Arc::clone(m.view.load().service("svc-1").unwrap());
        assert!(Arc::ptr_eq(&before, &after), "same labels, same handles");

        m.install(&snapshot(3, "api-renamed"));
        let mut e = m.exchange(Side::Outbound);
        e.routed("svc-1");
        e.target_group("tg-1");
        drop(e.finish(response(204, "")));
        let text = exposition(&m);
        assert!(
            text.contains("trellis_requests_total{service=\"api-renamed\",target_group=\"api-v1\",code_class=\"2xx\",reason=\"\"} 1"),
            "{text}"
        );
        assert!(!text.contains("service=\"api\""), "{text}");
    }

    #[test]
    fn an_unknown_service_counts_as_unrouted() {
        let m = ProxyMetrics::new();
        let mut e = m.exchange(Side::Outbound);
        e.failed(Reason::NotReady);
        drop(e.finish(response(503, "")));
        let text = exposition(&m);
        assert!(
            text.contains("trellis_requests_total{service=\"\",target_group=\"\",code_class=\"5xx\",reason=\"not_ready\"} 1"),
            "{text}"
        );
    }
}
