//! The echo backend: answers every request with a JSON description of it.

use super::serve::{Ctx, start};
use super::{BACKEND_HEADER, BackendHandle, RespBody, body, filler_body};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Map, Value, json};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Request header: answer with this status code instead of the configured one.
pub const ECHO_STATUS_HEADER: &str = "x-echo-status";
/// Request header: wait this many milliseconds before answering.
pub const ECHO_DELAY_MS_HEADER: &str = "x-echo-delay-ms";
/// Request header: answer with a body of this many filler bytes.
pub const ECHO_BODY_BYTES_HEADER: &str = "x-echo-body-bytes";

/// An HTTP/1.1 + h2c backend that describes each request it receives.
///
/// The response body is JSON:
/// `{"backend", "method", "path", "query", "authority", "headers": {name:
/// value}, "bodyBytes", "version": "HTTP/1.1"|"HTTP/2.0"}`; repeated header
/// values are joined with `", "`. The request body is read frame by frame
/// and only counted, never held. Every response carries `x-backend: <name>`.
///
/// Behaviour per request, in order: count it, read the body, wait `delay`,
/// answer. Options are set on the builder; the request headers
/// `x-echo-status`, `x-echo-delay-ms` and `x-echo-body-bytes` override them
/// for one request.
#[derive(Debug, Clone)]
pub struct EchoBackend {
    name: String,
    listen: SocketAddr,
    status: StatusCode,
    delay: Duration,
    body_bytes: Option<u64>,
    fail_every: Option<u64>,
}

impl EchoBackend {
    /// An echo backend named `name` that answers 200 at once, on
    /// `127.0.0.1:0`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            status: StatusCode::OK,
            delay: Duration::ZERO,
            body_bytes: None,
            fail_every: None,
        }
    }

    /// Start `EchoBackend::new(name)` with the defaults.
    pub async fn start_named(name: impl Into<String>) -> io::Result<BackendHandle> {
        Self::new(name).start().await
    }

    /// Listen on `addr` instead of `127.0.0.1:0` (e.g. to bring a stopped
    /// backend back on the same port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Answer every request with `status` (the echo body is still sent).
    ///
    /// # Panics
    /// When `status` is not a valid status code (100–999).
    pub fn status(mut self, status: u16) -> Self {
        let status = StatusCode::from_u16(status).expect("a valid status code");
        self.status = status;
        self
    }

    /// Wait `delay` after reading the request body, before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answer with `n` filler bytes (`x`), streamed in 16 KiB frames with a
    /// `content-length`, instead of the JSON description.
    pub fn body_bytes(mut self, n: u64) -> Self {
        self.body_bytes = Some(n);
        self
    }

    /// Answer the `n`-th, `2n`-th, ... request (counting every request this
    /// backend receives, health checks included) with 500.
    pub fn fail_every(mut self, n: u64) -> Self {
        self.fail_every = (n > 0).then_some(n);
        self
    }

    /// Bind and serve until the handle is dropped.
    pub async fn start(self) -> io::Result<BackendHandle> {
        let name = self.name.clone();
        let listen = self.listen;
        let cfg = Arc::new(self);
        start(listen, name, move |req, ctx| {
            let cfg = Arc::clone(&cfg);
            async move { cfg.answer(req, ctx).await }
        })
        .await
    }

    async fn answer(&self, req: Request<Incoming>, ctx: Ctx) -> Response<RespBody> {
        let nth = ctx.stats.record(req.uri().path());
        let (parts, mut body) = req.into_parts();
        let mut body_bytes: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        body_bytes += data.len() as u64;
                    }
                }
                // The client went away or sent a broken body: describe what
                // arrived; the response is most likely dropped anyway.
                Err(_) => break,
            }
        }

        let h = &parts.headers;
        let mut status = header_num(h, ECHO_STATUS_HEADER)
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(self.status);
        if self.fail_every.is_some_and(|n| nth.is_multiple_of(n)) {
            status = StatusCode::INTERNAL_SERVER_ERROR;
        }
        let delay = header_num(h, ECHO_DELAY_MS_HEADER)
            .map(Duration::from_millis)
            .unwrap_or(self.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }

        let mut resp = Response::builder()
            .status(status)
            .header(BACKEND_HEADER, header_value(&self.name));
        if let Some(n) = header_num(h, ECHO_BODY_BYTES_HEADER).or(self.body_bytes) {
            resp = resp
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .header(http::header::CONTENT_LENGTH, n);
            return finish(resp, filler_body(n));
        }
        let echo = json!({
            "backend": self.name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "authority": parts.uri.authority().map(|a| a.as_str()),
            "headers": headers_json(h),
            "bodyBytes": body_bytes,
            "version": format!("{:?}", parts.version),
        });
        let bytes = serde_json::to_vec(&echo).unwrap_or_default();
        resp = resp
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, bytes.len());
        finish(resp, body::full(bytes))
    }
}

fn finish(resp: http::response::Builder, body: RespBody) -> Response<RespBody> {
    resp.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(body::full("echo backend: could not build the response\n"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

fn header_num(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid-name"))
}

/// Header names to values; repeated values joined with `", "`.
fn headers_json(h: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in h.keys() {
        let joined = h
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Value::Object(out)
}
