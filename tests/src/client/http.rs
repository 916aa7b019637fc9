//! HTTP/1.1 and h2c (prior knowledge) requests with an explicit host.

use super::{bounded, connect, connect_tcp_from};
use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::{IpAddr, SocketAddr};

/// A complete response: status, headers, the whole body, and trailers if
/// any arrived.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// HTTP version of the response.
    pub version: Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Trailers, when the peer sent any.
    pub trailers: Option<HeaderMap>,
}

impl HttpResponse {
    /// A header's value as text (`None` when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {:?}", self.text()))
    }
}

fn build(
    version: Version,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let method = Method::from_bytes(method.as_bytes()).context("method")?;
    let mut b = Request::builder().method(method).version(version);
    b = if version == Version::HTTP_2 {
        // h2 carries the host as :authority, taken from an absolute URI.
        b.uri(format!("http://{host}{path}"))
    } else {
        b.uri(path).header(header::HOST, host)
    };
    let mut req = b.body(Full::new(body)).context("building the request")?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .with_context(|| format!("header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).with_context(|| format!("header value {value:?}"))?;
        if name == header::HOST {
            req.headers_mut().remove(header::HOST);
        }
        req.headers_mut().append(name, value);
    }
    Ok(req)
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> anyhow::Result<HttpResponse> {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.context("reading the response body")?;
    let trailers = collected.trailers().cloned();
    Ok(HttpResponse {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// One HTTP/1.1 request on a fresh connection to `addr`, with `Host: host`.
/// `headers` are added as given (a `host` entry replaces the `Host`); a
/// non-empty `body` is sent with a `content-length`.
pub async fn http1_request(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<HttpResponse> {
    let mut conn = Http1Connection::connect(addr).await?;
    conn.request(host, method, path, headers, body).await
}

/// Like [`http1_request`], over TLS with `config`.
pub async fn https1_request(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<HttpResponse> {
    let mut conn = Http1Connection::connect_tls(addr, config).await?;
    conn.request(host, method, path, headers, body).await
}

/// Like [`http1_request`], on a connection made from the local address
/// `local` (e.g. `127.0.0.2` to look like another client on loopback).
pub async fn http1_request_from(
    local: IpAddr,
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<HttpResponse> {
    let mut conn = Http1Connection::connect_from(local, addr).await?;
    conn.request(host, method, path, headers, body).await
}

/// One h2c request (prior knowledge) on a fresh connection to `addr`, with
/// `:authority` = `host`.
pub async fn http2_request(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<HttpResponse> {
    let conn = Http2Connection::connect(addr).await?;
    conn.request(host, method, path, headers, body).await
}

/// An HTTP/1.1 keep-alive connection: several requests in sequence on one
/// TCP connection (for pooling and keep-alive tests).
#[derive(Debug)]
pub struct Http1Connection {
    addr: SocketAddr,
    send: http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

impl Http1Connection {
    /// Connect to `addr` and do nothing else yet.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::handshake(addr, connect(addr).await?).await
    }

    /// Connect to `addr` from the local address `local` (see
    /// [`http1_request_from`]).
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::handshake(addr, connect_tcp_from(local, addr).await?).await
    }

    /// Connect to `addr` with TLS (`config`: e.g. a mesh client
    /// certificate) and speak HTTP/1.1 over it.
    pub async fn connect_tls(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        Self::connect_tls_to(addr, config, "inbound.trellis.invalid").await
    }

    /// [`Http1Connection::connect_tls`] with the TLS server name `name`.
    pub async fn connect_tls_to(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: &str,
    ) -> anyhow::Result<Self> {
        let stream = connect(addr).await?;
        let name =
            rustls::pki_types::ServerName::try_from(name.to_owned()).context("server name")?;
        let tls = bounded(|| format!("TLS handshake with {addr}"), async move {
            tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .with_context(|| format!("TLS handshake with {addr}"))
        })
        .await?;
        Self::handshake(addr, tls).await
    }

    async fn handshake<I>(addr: SocketAddr, stream: I) -> anyhow::Result<Self>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { addr, send, conn })
    }

    /// Send one request and read the whole response.
    pub async fn request(
        &mut self,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<HttpResponse> {
        let req = build(Version::HTTP_11, host, method, path, headers, body.into())?;
        let addr = self.addr;
        let send = &mut self.send;
        bounded(
            || format!("HTTP/1.1 {method} {path} to {addr}"),
            async move {
                send.ready().await.context("connection closed")?;
                let resp = send
                    .send_request(req)
                    .await
                    .with_context(|| format!("HTTP/1.1 request to {addr}"))?;
                read(resp).await
            },
        )
        .await
    }

    /// Whether the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

impl Drop for Http1Connection {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// An h2c connection (prior knowledge); clones share it, so requests can
/// run concurrently as streams of one connection.
#[derive(Debug, Clone)]
pub struct Http2Connection {
    addr: SocketAddr,
    send: http2::SendRequest<Full<Bytes>>,
}

impl Http2Connection {
    /// Connect to `addr` and send the HTTP/2 preface. The connection closes
    /// when the last clone is dropped.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = connect(addr).await?;
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { addr, send })
    }

    /// Send one request as a new stream and read the whole response.
    pub async fn request(
        &self,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<HttpResponse> {
        let req = build(Version::HTTP_2, host, method, path, headers, body.into())?;
        let addr = self.addr;
        let mut send = self.send.clone();
        bounded(|| format!("HTTP/2 {method} {path} to {addr}"), async move {
            send.ready().await.context("connection closed")?;
            let resp = send
                .send_request(req)
                .await
                .with_context(|| format!("HTTP/2 request to {addr}"))?;
            read(resp).await
        })
        .await
    }

    /// Whether the connection is closed (GOAWAY or reset).
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}
