//! Component tests of the request-side resilience with real sockets: a
//! whole proxy (its snapshot loaded from disk, no control plane) in front
//! of loopback backends that misbehave on purpose.

use crate::config::ProxyConfig;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const HOST: &str = "svc.test";

/// A backend on a fresh loopback port; counts the requests it got.
struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Backend {
    async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let hits = Arc::clone(&counted);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, hits }
    }

    /// Answers `status` with body `tag`, after `delay`.
    async fn answering(status: u16, tag: &'static str, delay: Duration) -> Self {
        Self::start(move |req: Request<Incoming>| async move {
            // Read the whole body first, so a retry has seen it go by.
            let body = req.into_body().collect().await.map(|c| c.to_bytes());
            tokio::time::sleep(delay).await;
            let mut resp = Response::new(Full::new(Bytes::from(format!(
                "{tag}:{}",
                body.map(|b| b.len()).unwrap_or(0)
            ))));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            resp
        })
        .await
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn target(&self) -> Value {
        json!({"address": "127.0.0.1", "port": self.addr.port()})
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "trellis-forward-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A snapshot with one service (`HOST`, one listener) forwarding to one
/// group of `targets`; `listener` and `group` are merged into the
/// listener's and the group's JSON.
fn snapshot(targets: Vec<Value>, listener: Value, group: Value, service: Value) -> Value {
    let mut l = json!({
        "name": "http", "protocol": "HTTP", "port": 80,
        "defaultAction": {"forward": {"targetGroups": [{"targetGroup": "tg-1", "weight": 1}]}},
    });
    merge(&mut l, listener);
    let mut g = json!({
        "id": "tg-1", "name": "tg-1", "account": "000000000000", "protocol": "HTTP",
        "protocolVersion": "HTTP1", "port": 80, "algorithm": "round_robin",
        "healthCheck": {"enabled": false}, "targets": targets,
    });
    merge(&mut g, group);
    let mut s = json!({
        "id": "svc-1", "name": "svc", "account": "000000000000",
        "networks": [], "hosts": [HOST], "authType": "NONE", "listeners": [l],
    });
    merge(&mut s, service);
    json!({"version": 1, "proxy": "p-1", "networks": [], "services": [s], "targetGroups": [g]})
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// A proxy serving `snapshot` from its data directory.
async fn proxy(
    snapshot: Value,
    tweak: impl FnOnce(&mut ProxyConfig),
) -> (crate::RunningProxy, TempDir) {
    let dir = TempDir::new("proxy");
    std::fs::write(
        dir.0.join(crate::SNAPSHOT_FILE),
        serde_json::to_vec(&snapshot).unwrap(),
    )
    .unwrap();
    let mut cfg = ProxyConfig::loopback("p-1", "http://127.0.0.1:1", &dir.0);
    tweak(&mut cfg);
    let p = crate::start(cfg).await.unwrap();
    p.wait_ready(Duration::from_secs(5)).await.unwrap();
    (p, dir)
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

async fn send(
    c: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    method: &str,
    body: &'static str,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}/x"))
        .header("host", HOST)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn reason(a: &Answer) -> &str {
    a.headers
        .get("x-trellis-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn gateway_errors_are_retried_on_the_other_target() {
    let bad = Backend::answering(503, "bad", Duration::ZERO).await;
    let good = Backend::answering(200, "good", Duration::ZERO).await;
    let snap = snapshot(
        vec![bad.target(), good.target()],
        json!({"retryPolicy": {"maxAttempts": 2, "retryOn": ["gateway-error"], "backoffBaseMs": 1, "backoffMaxMs": 2, "minRetriesPerSecond": 1000}}),
        json!({}),
        json!({}),
    );
    let (p, _dir) = proxy(snap, |_| {}).await;
    let c = client();
    for _ in 0..10 {
        let a = send(&c, p.outbound_addr, "GET", "").await;
        assert_eq!((a.status, a.body.as_str()), (200, "good:0"));
    }
    // Each attempt on the bad target was retried once, on the good one.
    assert_eq!(good.hits(), 10);
    assert!(bad.hits() >= 1 && bad.hits() <= 10, "{}", bad.hits());
    p.shutdown().await;
}

#[tokio::test]
async fn non_idempotent_methods_are_not_retried_and_the_last_answer_passes_through() {
    let bad = Backend::answering(503, "bad", Duration::ZERO).await;
    let snap = snapshot(
        vec![bad.target()],
        json!({"retryPolicy": {"maxAttempts": 3, "backoffBaseMs": 1, "backoffMaxMs": 2, "minRetriesPerSecond": 1000}}),
        json!({}),
        json!({}),
    );
    let (p, _dir) = proxy(snap, |_| {}).await;
    let c = client();
    let a = send(&c, p.outbound_addr, "POST", "hello").await;
    assert_eq!((a.status, a.body.as_str()), (503, "bad:5"));
    assert_eq!(reason(&a), "", "the target's own 503, not the proxy's");
    assert_eq!(bad.hits(), 1);
    // GET is retried up to maxAttempts, then the target's 503 is answered.
    let a = send(&c, p.outbound_addr, "GET", "").await;
    assert_eq!(a.status, 503);
    assert_eq!(bad.hits(), 4);
    p.shutdown().await;
}

#[tokio::test]
async fn a_request_body_is_replayed_to_the_retry() {
    let bad = Backend::answering(502, "bad", Duration::ZERO).await;
    let good = Backend::answering(200, "good", Duration::ZERO).await;
    let snap = snapshot(
        vec![bad.target(), good.target()],
        json!({"retryPolicy": {"maxAttempts": 2, "backoffBaseMs": 1, "backoffMaxMs": 2, "minRetriesPerSecond": 1000, "maxBufferedBodyBytes": 16}}),
        json!({}),
        json!({}),
    );
    let (p, _dir) = proxy(snap, |_| {}).await;
    let c = client();
    for _ in 0..4 {
        let a = send(&c, p.outbound_addr, "PUT", "0123456789").await;
        assert_eq!((a.status, a.body.as_str()), (200, "good:10"));
    }
    // Over maxBufferedBodyBytes: streamed, not retried.
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(
            send(&c, p.outbound_addr, "PUT", "0123456789abcdefXYZ")
                .await
                .status,
        );
    }
    answers.sort();
    assert_eq!(answers, [200, 502]);
    p.shutdown().await;
}

#[tokio::test]
async fn per_try_timeout_then_success_on_another_target() {
    let slow = Backend::answering(200, "slow", Duration::from_secs(5)).await;
    let fast = Backend::answering(200, "fast", Duration::ZERO).await;
    let snap = snapshot(
        vec![slow.target(), fast.target()],
        json!({"timeoutMs": 3000, "retryPolicy": {"maxAttempts": 2, "retryOn": ["per-try-timeout"], "perTryTimeoutMs": 200, "backoffBaseMs": 1, "backoffMaxMs": 2, "minRetriesPerSecond": 1000}}),
        json!({}),
        json!({}),
    );
    let (p, _dir) = proxy(snap, |_| {}).await;
    let c = client();
    for _ in 0..2 {
        let t = Instant::now();
        let a = send(&c, p.outbound_addr, "GET", "").await;
        assert_eq!((a.status, a.body.as_str()), (200, "fast:0"));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    assert!(
        slow.hits() >= 1,
        "the slow target was tried first at least once"
    );
    assert_eq!(fast.hits(), 2);
    p.shutdown().await;
}

#[tokio::test]
async fn the_rule_timeout_answers_504() {
    let slow = Backend::answering(200, "slow", Duration::from_secs(5)).await;
    let snap = snapshot(
        vec![slow.target()],
        json!({"timeoutMs": 300}),
        json!({}),
        json!({}),
    );
    let (p, _dir) = proxy(snap, |_| {}).await;
    let t = Instant::now();
    let a = send(&client(), p.outbound_addr, "GET", "").await;
    let took = t.elapsed();
    assert_eq!((a.status, reason(&a)), (504, "upstream_timeout"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn connect_failures_are_retried_elsewhere() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let good = Backend::answering(200, "good", Duration::ZERO).await;
    let snap = snapshot(
        vec![
            json!({"address": "127.0.0.1", "port": closed.port()}),
            good.target(),
        ],
        json!({"retryPolicy": {"backoffBaseMs": 1, "backoffMaxMs": 2, "minRetriesPerSecond": 1000}}),
        json!({"connection": {"connectTimeoutMs": 200}}),
        json!({}),
    );
    let (p, _dir) = proxy(snap, |_| {}).await;
    let c = client();
    for _ in 0..4 {
        assert_eq!(send(&c, p.outbound_addr, "GET", "").await.status, 200);
    }
    p.shutdown().await;
}

#[tokio::test]
async fn exactly_the_burst_passes_then_429_with_retry_after() {
    let ok = Backend::answering(200, "ok", Duration::ZERO).await;
    let snap = snapshot(
        vec![ok.target()],
        json!({}),
        json!({}),
        json!({"rateLimit": {"requestsPerSecond": 1, "burst": 3}}),
    );
    let (p, _dir) = proxy(snap, |_| {}).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(send(&c, p.outbound_addr, "GET", "").await.status, 200);
    }
    let a = send(&c, p.outbound_addr, "GET", "").await;
    assert_eq!((a.status, reason(&a)), (429, "rate_limited"));
    let retry_after: u32 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(ok.hits(), 3);
    p.shutdown().await;
}

#[tokio::test]
async fn max_connections_with_no_pending_overflows_at_once() {
    let (release, released) = tokio::sync::watch::channel(false);
    let hanging = Backend::start(move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Response::new(Full::new(Bytes::from_static(b"done")))
        }
    })
    .await;
    let snap = snapshot(
        vec![hanging.target()],
        json!({}),
        json!({"circuitBreaker": {"maxConnections": 1, "maxPendingRequests": 0}}),
        json!({}),
    );
    let (p, _dir) = proxy(snap, |_| {}).await;
    let addr = p.outbound_addr;
    let first = tokio::spawn(async move { send(&client(), addr, "GET", "").await.status });
    let t = Instant::now();
    while hanging.hits() == 0 {
        assert!(t.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a = send(&client(), addr, "GET", "").await;
    assert_eq!((a.status, reason(&a)), (503, "overflow"));
    assert!(t.elapsed() < Duration::from_secs(2), "answered at once");
    release.send_replace(true);
    assert_eq!(first.await.unwrap(), 200);
    p.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let slow = Backend::answering(200, "slow", Duration::from_millis(400)).await;
    let snap = snapshot(vec![slow.target()], json!({}), json!({}), json!({}));
    let (p, _dir) = proxy(snap, |c| c.drain_timeout = Duration::from_secs(3)).await;
    let addr = p.outbound_addr;
    let c = client();
    // A kept-alive connection, then a request in flight on it.
    assert_eq!(send(&c, addr, "GET", "").await.status, 200);
    let in_flight = tokio::spawn(async move { send(&c, addr, "GET", "").await });
    let t = Instant::now();
    while slow.hits() < 2 {
        assert!(t.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    p.shutdown().await;
    let a = in_flight.await.unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, "slow:0"));
    assert_eq!(a.headers["connection"], "close");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after the drain"
    );
}
