//! The control plane's Prometheus metrics, served at `GET /metrics` on
//! the API listener in the OpenMetrics text format ([`CONTENT_TYPE`]).
//!
//! | family | type | labels | what |
//! |---|---|---|---|
//! | `trellis_api_requests_total` | counter | `route`, `method`, `code` | API requests by matched route template (e.g. `/v1/services/{key}`; `unmatched` for the fallback), method (`other` for uncommon ones) and status code |
//! | `trellis_api_request_duration_seconds` | histogram | `route` | time to the response head (for a watch stream: to its start) |
//! | `trellis_store_operation_duration_seconds` | histogram | `op` | store calls: `get`, `range`, `txn`, `revision` (watches are streams and are not timed) |
//! | `trellis_connected_proxies` | gauge | | registered proxies with a watch stream open to this replica |
//! | `trellis_registered_proxies` | gauge | | registered proxies |
//! | `trellis_proxies_out_of_sync` | gauge | | registered proxies not in sync (as `trellis proxies` says: not connected, or their applied version is not the one published) |
//! | `trellis_push_latency_seconds` | histogram | | from a store change seen by the watch to its snapshots being published (coalescing included) |
//! | `trellis_ack_latency_seconds` | histogram | | from a snapshot's publication to the proxy's ack of that version |
//!
//! Every label is bounded: route templates, not paths; a fixed set of
//! methods; status codes. The gauges are read from the push hub when
//! scraped; the rest is counted as it happens ([`track`] for the API,
//! [`TimedStore`] for the store, the hub for push and ack).

use crate::push::Hub;
use crate::store::{Revision, Store, StoreResult, Txn, TxnResult, WatchStream};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE as CONTENT_TYPE_HEADER;
use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// API latency buckets (seconds): a millisecond (a read from memory) to
/// ten seconds (a slow store).
const API_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Store latency buckets (seconds): from a cached read to a slow fsync or
/// a distant etcd.
const STORE_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Push and ack buckets (seconds): the push target is 100 ms after the
/// coalescing window; an ack takes a network round trip and an apply.
const PUSH_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    route: String,
    method: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The control plane's metrics.
#[derive(Debug)]
pub struct ControlMetrics {
    registry: Registry,
    api_requests: Family<ApiLabels, Counter>,
    api_duration: HistogramFamily<RouteLabels>,
    store: HistogramFamily<OpLabels>,
    push_latency: Histogram,
    ack_latency: Histogram,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlMetrics {
    /// Every family registered, no series yet.
    pub fn new() -> Self {
        let api_requests = Family::<ApiLabels, Counter>::default();
        let api_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(|| Histogram::new(API_BUCKETS));
        let store: HistogramFamily<OpLabels> =
            Family::new_with_constructor(|| Histogram::new(STORE_BUCKETS));
        let push_latency = Histogram::new(PUSH_BUCKETS);
        let ack_latency = Histogram::new(PUSH_BUCKETS);
        let mut r = Registry::with_prefix("trellis");
        r.register(
            "api_requests",
            "API requests by matched route template, method and status code",
            api_requests.clone(),
        );
        r.register(
            "api_request_duration_seconds",
            "API request time to the response head, by matched route template",
            api_duration.clone(),
        );
        r.register(
            "store_operation_duration_seconds",
            "Store call latency by operation",
            store.clone(),
        );
        r.register(
            "push_latency_seconds",
            "Time from a store change seen to its snapshots published",
            push_latency.clone(),
        );
        r.register(
            "ack_latency_seconds",
            "Time from a snapshot's publication to the proxy's ack of that version",
            ack_latency.clone(),
        );
        Self {
            registry: r,
            api_requests,
            api_duration,
            store,
            push_latency,
            ack_latency,
        }
    }

    fn api_request(&self, route: String, method: &'static str, code: u16, took: Duration) {
        self.api_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.api_requests
            .get_or_create(&ApiLabels {
                route,
                method,
                code,
            })
            .inc();
    }

    fn store_op(&self, op: &'static str, took: Duration) {
        self.store
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    /// Snapshots for a store change first seen `took` ago were published.
    pub fn pushed(&self, took: Duration) {
        self.push_latency.observe(took.as_secs_f64());
    }

    /// A proxy acknowledged a version published `took` ago.
    pub fn acked(&self, took: Duration) {
        self.ack_latency.observe(took.as_secs_f64());
    }

    /// The exposition: what was counted, the hub's gauges now, `# EOF`.
    pub fn render(&self, hub: &Hub) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        encode_registry(&mut out, &self.registry)?;
        let statuses = hub.statuses();
        let gauges = ProxyGauges {
            registered: statuses.len(),
            connected: statuses.iter().filter(|s| s.connected).count(),
            out_of_sync: statuses.iter().filter(|s| !s.in_sync).count(),
        };
        let mut now = Registry::with_prefix("trellis");
        now.register_collector(Box::new(gauges));
        encode_registry(&mut out, &now)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The proxy gauges, read at scrape time.
#[derive(Debug)]
struct ProxyGauges {
    registered: usize,
    connected: usize,
    out_of_sync: usize,
}

impl Collector for ProxyGauges {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, v) in [
            (
                "connected_proxies",
                "Registered proxies with a watch stream open to this replica.",
                self.connected,
            ),
            ("registered_proxies", "Registered proxies.", self.registered),
            (
                "proxies_out_of_sync",
                "Registered proxies not running the snapshot published for them (or not connected).",
                self.out_of_sync,
            ),
        ] {
            enc.encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&v)?;
        }
        Ok(())
    }
}

/// The `method` label: the common methods by name, others as `other`
/// (methods are client input; the label must stay bounded).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: count every API request by its matched route template.
pub async fn track(
    State(metrics): State<Arc<ControlMetrics>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.api_request(route, method, resp.status().as_u16(), start.elapsed());
    resp
}

/// `GET /metrics`.
pub async fn serve(State(state): State<crate::api::AppState>) -> Response {
    match state.metrics.render(&state.hub) {
        Ok(body) => ([(CONTENT_TYPE_HEADER, CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// A [`Store`] that times every call of the store it wraps.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<ControlMetrics>,
}

impl std::fmt::Debug for TimedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedStore").finish_non_exhaustive()
    }
}

impl TimedStore {
    /// Wrap `inner`.
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<ControlMetrics>) -> Arc<dyn Store> {
        Arc::new(Self { inner, metrics })
    }

    fn timed<T>(&self, op: &'static str, start: Instant, r: T) -> T {
        self.metrics.store_op(op, start.elapsed());
        r
    }
}

#[async_trait::async_trait]
impl Store for TimedStore {
    async fn get(&self, key: &str) -> StoreResult<Option<crate::store::KeyValue>> {
        let start = Instant::now();
        let r = self.inner.get(key).await;
        self.timed("get", start, r)
    }

    async fn range(&self, prefix: &str) -> StoreResult<(Vec<crate::store::KeyValue>, Revision)> {
        let start = Instant::now();
        let r = self.inner.range(prefix).await;
        self.timed("range", start, r)
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnResult> {
        let start = Instant::now();
        let r = self.inner.txn(txn).await;
        self.timed("txn", start, r)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream> {
        self.inner.watch(prefix, from).await
    }

    async fn revision(&self) -> StoreResult<Revision> {
        let start = Instant::now();
        let r = self.inner.revision().await;
        self.timed("revision", start, r)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::store::Op;
    use crate::store::embedded::EmbeddedStore;
    use prometheus_client::encoding::text::encode;

    fn text(m: &ControlMetrics) -> String {
        let mut out = String::new();
        encode(&mut out, &m.registry).unwrap();
        out
    }

    #[test]
    fn uncommon_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::CONNECT), "other");
    }

    #[test]
    fn api_requests_are_counted_by_route_template() {
        let m = ControlMetrics::new();
        for _ in 0..2 {
            m.api_request(
                "/v1/services/{key}".into(),
                "GET",
                404,
                Duration::from_millis(2),
            );
        }
        let out = text(&m);
        assert!(
            out.contains("trellis_api_requests_total{route=\"/v1/services/{key}\",method=\"GET\",code=\"404\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "trellis_api_request_duration_seconds_count{route=\"/v1/services/{key}\"} 2\n"
            ),
            "{out}"
        );
        assert!(out.contains("# TYPE trellis_push_latency_seconds histogram\n"));
    }

    #[tokio::test]
    async fn the_timed_store_times_each_operation_and_passes_results_through() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let m = Arc::new(ControlMetrics::new());
        let s = TimedStore::wrap(inner, Arc::clone(&m));
        let put = s
            .txn(Txn::new().then(Op::Put("/k".into(), b"v".to_vec())))
            .await
            .unwrap();
        assert!(put.succeeded);
        assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"v");
        assert_eq!(s.range("/").await.unwrap().0.len(), 1);
        assert_eq!(s.revision().await.unwrap(), put.revision);
        let out = text(&m);
        for op in ["get", "range", "txn", "revision"] {
            assert!(
                out.contains(&format!(
                    "trellis_store_operation_duration_seconds_count{{op=\"{op}\"}} 1\n"
                )),
                "{op}: {out}"
            );
        }
    }
}
