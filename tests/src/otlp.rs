//! An OTLP trace receiver for tests: what a collector or Jaeger would be.
//!
//! [`OtlpReceiver::start`] listens on `127.0.0.1:0` and takes spans over
//! both OTLP protocols on the one port: gRPC (the generated tonic
//! `TraceService` of `opentelemetry-proto`, over h2c) and HTTP/protobuf
//! (`POST /v1/traces`). Every span received is kept, flattened into a
//! [`ReceivedSpan`] with hex ids and its resource's attributes, for the
//! test to inspect. [`OtlpReceiver::refuse`] makes it answer every export
//! with an error, as an overloaded collector would.
//! [`OtlpReceiver::start_counting`] only counts spans, keeping none: the
//! load harness's collector (`trellis-otlp-sink`), which receives millions.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tonic::codegen::Service as _;

/// One span as received, ids in lower-case hex (`parent_span_id` empty
/// for a root span).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: &'static str,
    /// Attributes, values as text (integers in decimal).
    pub attributes: BTreeMap<String, String>,
    /// `unset`, `ok` or `error`.
    pub status: &'static str,
    /// The status message (set with errors).
    pub status_message: String,
    /// The attributes of the resource that sent it (`service.name`, ...).
    pub resource: BTreeMap<String, String>,
    /// The protocol it came over: `grpc` or `http`.
    pub protocol: &'static str,
}

impl ReceivedSpan {
    /// An attribute's value, or `""` when it is absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    exports: AtomicU64,
    refuse: AtomicBool,
    /// Only count spans (see [`OtlpReceiver::start_counting`]).
    count_only: bool,
    /// Spans accepted, kept or not.
    received: AtomicU64,
}

impl Store {
    fn take(&self, req: ExportTraceServiceRequest, protocol: &'static str) -> bool {
        self.exports.fetch_add(1, Ordering::SeqCst);
        if self.refuse.load(Ordering::SeqCst) {
            return false;
        }
        let n: usize = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.received.fetch_add(n as u64, Ordering::SeqCst);
        if self.count_only {
            return true;
        }
        let mut out = Vec::new();
        for rs in req.resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let (status, status_message) = match s.status {
                        Some(st) => (
                            match st.code {
                                1 => "ok",
                                2 => "error",
                                _ => "unset",
                            },
                            st.message,
                        ),
                        None => ("unset", String::new()),
                    };
                    out.push(ReceivedSpan {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name,
                        kind: match s.kind {
                            1 => "internal",
                            2 => "server",
                            3 => "client",
                            4 => "producer",
                            5 => "consumer",
                            _ => "unspecified",
                        },
                        attributes: attributes(&s.attributes),
                        status,
                        status_message,
                        resource: resource.clone(),
                        protocol,
                    });
                }
            }
        }
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(out);
        }
        true
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

fn value(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[derive(Debug, Clone)]
struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.take(request.into_inner(), "grpc") {
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        } else {
            Err(tonic::Status::unavailable(
                "the test receiver refuses exports",
            ))
        }
    }
}

/// A running receiver; dropping it stops it.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Listen on `127.0.0.1:0` for both protocols.
    pub async fn start() -> io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(io::Error::other)?, false).await
    }

    /// Listen on `addr` for both protocols and only count the spans
    /// received ([`OtlpReceiver::spans_received`]); [`OtlpReceiver::spans`]
    /// stays empty. For load, where keeping every span would cost the
    /// receiver gigabytes.
    pub async fn start_counting(addr: SocketAddr) -> io::Result<Self> {
        Self::start_on(addr, true).await
    }

    async fn start_on(addr: SocketAddr, count_only: bool) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store {
            count_only,
            ..Store::default()
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&store), stop_rx));
        Ok(Self {
            addr,
            store,
            stop,
            task: Some(task),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint for OTLP/gRPC: `http://127.0.0.1:<port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The endpoint for OTLP/HTTP: `http://127.0.0.1:<port>/v1/traces`.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Spans accepted so far (kept or only counted).
    pub fn spans_received(&self) -> u64 {
        self.store.received.load(Ordering::SeqCst)
    }

    /// Export calls received so far (accepted or refused).
    pub fn exports(&self) -> u64 {
        self.store.exports.load(Ordering::SeqCst)
    }

    /// Answer every export from now on with an error (gRPC `UNAVAILABLE`,
    /// HTTP 503), keeping nothing.
    pub fn refuse(&self, refuse: bool) {
        self.store.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Wait until the spans received satisfy `done`, and return them.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>, crate::WaitTimeout> {
        crate::eventually(what, timeout, || {
            let spans = self.spans();
            let ok = done(&spans);
            async move { ok.then_some(spans) }
        })
        .await
    }

    /// Stop and wait until the port is closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

type Body = tonic::body::Body;

async fn accept_loop(listener: TcpListener, store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let store = Arc::clone(&store);
                    conns.spawn(async move {
                        let grpc = TraceServiceServer::new(Grpc(Arc::clone(&store)));
                        let svc = service_fn(move |req: http::Request<Incoming>| {
                            let store = Arc::clone(&store);
                            let mut grpc = grpc.clone();
                            async move {
                                if req.uri().path() == "/v1/traces" {
                                    return Ok::<_, Infallible>(http_export(req, &store).await);
                                }
                                Ok(grpc.call(req).await.unwrap_or_else(|e| match e {}))
                            }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// OTLP/HTTP with a protobuf body.
async fn http_export(req: http::Request<Incoming>, store: &Store) -> http::Response<Body> {
    let answer = |status: u16, body: Vec<u8>| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Body::new(Full::new(Bytes::from(body))))
            .unwrap_or_default()
    };
    if req.method() != http::Method::POST {
        return answer(405, Vec::new());
    }
    let Ok(body) = req.into_body().collect().await else {
        return answer(400, Vec::new());
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return answer(400, Vec::new());
    };
    if store.take(export, "http") {
        answer(
            200,
            ExportTraceServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
        )
    } else {
        answer(503, Vec::new())
    }
}
