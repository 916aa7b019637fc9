//! A gRPC unary client over h2c, hand-framed; pairs with
//! [`crate::GrpcBackend`].

use super::http::Http2Connection;
use crate::backend::{grpc_frame, grpc_unframe};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::net::SocketAddr;

/// What a unary call returned.
#[derive(Debug, Clone)]
pub struct GrpcReply {
    /// HTTP status (gRPC always uses 200; anything else is a transport
    /// error, e.g. a proxy's 503).
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The raw (framed) response body.
    pub body: Bytes,
    /// Trailers (empty when none arrived).
    pub trailers: HeaderMap,
}

impl GrpcReply {
    /// `grpc-status` from the trailers, or from the headers of a
    /// trailers-only response.
    pub fn grpc_status(&self) -> Option<u32> {
        self.grpc_header("grpc-status")?.parse().ok()
    }

    /// `grpc-message` (still percent-encoded).
    pub fn grpc_message(&self) -> Option<&str> {
        self.grpc_header("grpc-message")
    }

    /// A trailer's value as text.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The single response message, unframed; `None` when the body is not
    /// exactly one well-framed message.
    pub fn message(&self) -> Option<Bytes> {
        let mut msgs = grpc_unframe(&self.body)?;
        (msgs.len() == 1).then(|| msgs.remove(0))
    }

    fn grpc_header(&self, name: &str) -> Option<&str> {
        self.trailers
            .get(name)
            .or_else(|| self.headers.get(name))
            .and_then(|v| v.to_str().ok())
    }
}

/// One gRPC unary call: connect to `addr` (a backend or a proxy), `POST
/// path` with `:authority` = `authority`, `content-type: application/grpc`
/// and `te: trailers`, the body being `payload` in one gRPC frame. Returns
/// headers, body and trailers as received.
pub async fn grpc_unary_call(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    payload: &[u8],
) -> anyhow::Result<GrpcReply> {
    grpc_unary_call_with(addr, authority, path, payload, &[]).await
}

/// [`grpc_unary_call`] with extra request metadata (headers).
pub async fn grpc_unary_call_with(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    payload: &[u8],
    metadata: &[(&str, &str)],
) -> anyhow::Result<GrpcReply> {
    let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
    headers.extend_from_slice(metadata);
    let conn = Http2Connection::connect(addr).await?;
    let r = conn
        .request(authority, "POST", path, &headers, grpc_frame(payload))
        .await?;
    Ok(GrpcReply {
        status: r.status,
        headers: r.headers,
        body: r.body,
        trailers: r.trailers.unwrap_or_default(),
    })
}
