//! Fakes and clients for the proxy's component tests.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use trellis_config::{Ack, Snapshot, WatchEvent};

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).boxed()
}

/// Serve `handler` on a fresh loopback port until `stop` fires; then the
/// listener and every connection are closed.
async fn serve<F, Fut>(stop: watch::Receiver<bool>, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
{
    serve_at("127.0.0.1:0".parse().unwrap(), stop, handler).await
}

async fn serve_at<F, Fut>(at: SocketAddr, stop: watch::Receiver<bool>, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
{
    let listener = TcpListener::bind(at).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut stop = stop;
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                Ok((stream, _)) = listener.accept() => {
                    let handler = handler.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            let handler = handler.clone();
                            async move { Ok::<_, Infallible>(handler(req).await) }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        drop(listener);
        conns.shutdown().await;
    });
    addr
}

/// A backend: echoes the request as JSON, and has special paths.
pub struct Backend {
    pub addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

impl Backend {
    pub async fn start() -> Self {
        let (tx, rx) = watch::channel(false);
        let addr = serve(rx, backend).await;
        Self { addr, _stop: tx }
    }
}

async fn backend(req: Request<Incoming>) -> Response<BoxBody> {
    match req.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(full("slow"))
        }
        "/consume" => match req.into_body().collect().await {
            Ok(b) => Response::new(full(b.to_bytes().len().to_string())),
            Err(_) => {
                let mut r = Response::new(full("body failed"));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            }
        },
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(b"data"))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "/ws" => {
            let on = hyper::upgrade::on(req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "echo")
                .header("connection", "upgrade")
                .body(full(""))
                .unwrap()
        }
        _ => {
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                headers.insert(k.to_string(), json!(v.to_str().unwrap_or("?")));
            }
            let body = json!({
                "method": req.method().as_str(),
                "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            Response::new(full(body.to_string()))
        }
    }
}

#[derive(Default)]
struct ControlState {
    snapshots: HashMap<String, Snapshot>,
    acks: Vec<(String, u64, Option<String>)>,
    registrations: Vec<Value>,
}

/// The control plane's side of the watch protocol, in memory.
#[derive(Clone)]
pub struct FakeControl {
    pub addr: SocketAddr,
    state: Arc<Mutex<ControlState>>,
    changed: Arc<watch::Sender<u64>>,
    stop: Arc<watch::Sender<bool>>,
}

impl FakeControl {
    pub async fn start() -> Self {
        Self::start_with("127.0.0.1:0".parse().unwrap(), true).await
    }

    /// At `addr` (e.g. where a stopped one was); `heartbeats: false` makes
    /// a watch stream that goes silent after its snapshot.
    pub async fn start_with(addr: SocketAddr, heartbeats: bool) -> Self {
        let state = Arc::new(Mutex::new(ControlState::default()));
        let (changed, _) = watch::channel(0);
        let changed = Arc::new(changed);
        let (stop, stop_rx) = watch::channel(false);
        let (s, c, st) = (state.clone(), changed.clone(), stop_rx.clone());
        let addr = serve_at(addr, stop_rx, move |req| {
            control(req, s.clone(), c.clone(), st.clone(), heartbeats)
        })
        .await;
        Self {
            addr,
            state,
            changed,
            stop: Arc::new(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, proxy: &str, snapshot: Snapshot) {
        self.state
            .lock()
            .unwrap()
            .snapshots
            .insert(proxy.to_string(), snapshot);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn acks(&self) -> Vec<(String, u64, Option<String>)> {
        self.state.lock().unwrap().acks.clone()
    }

    pub fn registrations(&self) -> Vec<Value> {
        self.state.lock().unwrap().registrations.clone()
    }

    /// Close the listener and every connection.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn control(
    req: Request<Incoming>,
    state: Arc<Mutex<ControlState>>,
    changed: Arc<watch::Sender<u64>>,
    stop: watch::Receiver<bool>,
    heartbeats: bool,
) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().as_str(), parts.as_slice()) {
        ("POST", ["v1", "proxies"]) => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let reg: Value = serde_json::from_slice(&body).unwrap();
            state.lock().unwrap().registrations.push(reg);
            Response::new(full("{}"))
        }
        ("POST", ["v1", "proxies", name, "ack"]) => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let ack: Ack = serde_json::from_slice(&body).unwrap();
            state
                .lock()
                .unwrap()
                .acks
                .push((name.to_string(), ack.version, ack.error));
            Response::new(full("{}"))
        }
        ("GET", ["v1", "proxies", name, "watch"]) => {
            let name = name.to_string();
            let rx = changed.subscribe();
            let stream = futures_util::stream::unfold(
                (state, name, rx, None::<Snapshot>, stop),
                move |(state, name, mut rx, mut sent, mut stop)| async move {
                    loop {
                        let current = state.lock().unwrap().snapshots.get(&name).cloned();
                        if let Some(s) = current
                            && sent.as_ref() != Some(&s)
                        {
                            sent = Some(s.clone());
                            let line = line(&WatchEvent::Snapshot { snapshot: s });
                            return Some((Ok(Frame::data(line)), (state, name, rx, sent, stop)));
                        }
                        let heartbeat = tokio::select! {
                            _ = rx.changed() => false,
                            _ = tokio::time::sleep(Duration::from_millis(500)), if heartbeats => true,
                            _ = stop.wait_for(|s| *s) => return None,
                        };
                        if heartbeat {
                            let version = sent.as_ref().map_or(0, |s| s.version);
                            let line = line(&WatchEvent::Heartbeat { version });
                            return Some((Ok(Frame::data(line)), (state, name, rx, sent, stop)));
                        }
                    }
                },
            );
            Response::builder()
                .header("content-type", "application/x-ndjson")
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        _ => {
            let mut r = Response::new(full("not found"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

fn line(event: &WatchEvent) -> Bytes {
    let mut v = serde_json::to_vec(event).unwrap();
    v.push(b'\n');
    Bytes::from(v)
}

pub fn snapshot(proxy: &str, version: u64, services: Vec<Value>, groups: Vec<Value>) -> Snapshot {
    serde_json::from_value(json!({
        "version": version, "proxy": proxy, "networks": [],
        "services": services, "targetGroups": groups,
    }))
    .unwrap()
}

pub fn service(host: &str, default_action: Value) -> Value {
    json!({
        "id": format!("svc-{host}"), "name": host.replace('.', "-"), "account": "000000000000",
        "networks": ["sn-1"], "hosts": [host], "authType": "NONE",
        "listeners": [{"name": "http", "protocol": "HTTP", "port": 80, "defaultAction": default_action}],
    })
}

pub fn forward(group: &str) -> Value {
    json!({"forward": {"targetGroups": [{"targetGroup": group, "weight": 1}]}})
}

pub fn group(id: &str, version: &str, targets: Vec<Value>) -> Value {
    json!({
        "id": id, "name": id, "account": "000000000000", "protocol": "HTTP",
        "protocolVersion": version, "port": 80, "algorithm": "round_robin",
        "healthCheck": {}, "targets": targets,
    })
}

pub fn target(addr: SocketAddr, proxy: Option<&str>, via: Option<SocketAddr>) -> Value {
    let mut t = json!({"address": addr.ip().to_string(), "port": addr.port()});
    if let Some(p) = proxy {
        t["proxy"] = json!(p);
    }
    if let Some(v) = via {
        t["via"] = json!(v.to_string());
    }
    t
}

/// A loopback address where nothing listens (a moment ago something did).
pub fn closed_port_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "trellis-proxy-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A response read from a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 connection, driven by hand.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no response within 10 s"),
        }
    }

    /// Send `bytes` and read one response head.
    pub async fn request_head(&mut self, bytes: &[u8]) -> RawResponse {
        // The peer may answer and close before taking everything.
        let _ = self.stream.write_all(bytes).await;
        self.read_head().await
    }

    async fn read_head(&mut self) -> RawResponse {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf).unwrap() {
                let out = RawResponse {
                    status: resp.code.unwrap(),
                    headers: resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                };
                self.buf.drain(..n);
                return out;
            }
            assert!(self.fill().await, "closed before a response head");
        }
    }

    /// Send `bytes` and read one whole response.
    pub async fn request(&mut self, bytes: &[u8]) -> RawResponse {
        let mut resp = self.request_head(bytes).await;
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "closed mid-body");
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            loop {
                let Some(eol) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                    assert!(self.fill().await, "closed mid-body");
                    continue;
                };
                let size_line = String::from_utf8_lossy(&self.buf[..eol]).into_owned();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
                while self.buf.len() < eol + 2 + size + 2 {
                    assert!(self.fill().await, "closed mid-body");
                }
                if size == 0 {
                    self.buf.drain(..eol + 4);
                    break;
                }
                resp.body
                    .extend_from_slice(&self.buf[eol + 2..eol + 2 + size]);
                self.buf.drain(..eol + 2 + size + 2);
            }
        } else if resp.status != 101 && resp.status != 204 && resp.status != 304 {
            while self.fill().await {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }

    /// Whether the peer closes the connection within `limit` (any bytes
    /// that arrive meanwhile are kept): `false` if it is still open then.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut chunk = [0u8; 16384];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }

    /// Write `bytes` and read as many back.
    pub async fn echo(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.stream.write_all(bytes).await.unwrap();
        while self.buf.len() < bytes.len() {
            assert!(self.fill().await, "tunnel closed");
        }
        self.buf.drain(..bytes.len()).collect()
    }
}

/// One request on a new connection.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    Conn::open(addr).await.request(bytes).await
}

/// An h2c (prior knowledge) GET: status, headers, body, trailers.
pub async fn h2_get(
    addr: SocketAddr,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>, Option<HeaderMap>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let head = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, head, collected.to_bytes().to_vec(), trailers)
}
