//! A real gRPC unary server over h2c, hand-framed: no codegen, no tonic.
//!
//! gRPC on the wire is HTTP/2 `POST`s with `content-type:
//! application/grpc`, a body of length-prefixed messages (1 byte
//! compressed flag, 4 bytes big-endian length, the message) and the status
//! in *trailers* (`grpc-status`, `grpc-message`). This backend speaks
//! exactly that, so a proxy that loses trailers or mangles framing fails
//! the tests.

use super::serve::{Ctx, start};
use super::{BACKEND_HEADER, BackendHandle, RespBody, body};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Trailer every gRPC reply carries besides `grpc-status`/`grpc-message`:
/// the backend's name, to prove custom trailers pass through.
pub const GRPC_TRAILER_HEADER: &str = "x-backend-trailer";
/// Request header: reply with this `grpc-status` instead of the configured one.
pub const GRPC_STATUS_HEADER: &str = "x-echo-grpc-status";

/// A gRPC unary backend. Any method path is accepted; the reply message is
/// a protobuf with field 1 = the backend's name (string) and field 2 = the
/// request message (bytes), so a client sees who answered and what arrived.
///
/// Non-gRPC requests (no `application/grpc` content type, e.g. a health
/// check) get `200 text/plain`.
#[derive(Debug, Clone)]
pub struct GrpcBackend {
    name: String,
    listen: SocketAddr,
    grpc_status: u32,
    grpc_message: String,
    delay: Duration,
}

impl GrpcBackend {
    /// A backend named `name` replying `grpc-status: 0` on `127.0.0.1:0`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            grpc_status: 0,
            grpc_message: "OK".into(),
            delay: Duration::ZERO,
        }
    }

    /// Listen on `addr` instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Reply with this gRPC status code and message (in the trailers).
    pub fn grpc_status(mut self, code: u32, message: impl Into<String>) -> Self {
        self.grpc_status = code;
        self.grpc_message = message.into();
        self
    }

    /// Wait `delay` after reading the request before replying.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
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
        ctx.stats.record(req.uri().path());
        let name = HeaderValue::from_str(&self.name)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-name"));
        let is_grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !is_grpc {
            let mut r = Response::new(body::full(format!("grpc backend {}\n", self.name)));
            r.headers_mut().insert(BACKEND_HEADER, name);
            return r;
        }
        let override_status = req
            .headers()
            .get(GRPC_STATUS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());

        let (status, message, reply) = match req.into_body().collect().await {
            Err(e) => (13, format!("reading the request: {e}"), Bytes::new()),
            Ok(collected) => match grpc_unframe(&collected.to_bytes()).as_deref() {
                Some([msg]) => {
                    let mut reply = pb_bytes_field(1, self.name.as_bytes());
                    reply.extend_from_slice(&pb_bytes_field(2, msg));
                    (
                        self.grpc_status,
                        self.grpc_message.clone(),
                        grpc_frame(&reply),
                    )
                }
                Some(msgs) => (
                    12,
                    format!("unary call with {} request messages", msgs.len()),
                    Bytes::new(),
                ),
                None => (13, "malformed gRPC request framing".into(), Bytes::new()),
            },
        };
        let status = override_status.unwrap_or(status);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }

        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(status));
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
            trailers.insert("grpc-message", v);
        }
        trailers.insert(GRPC_TRAILER_HEADER, name.clone());
        let mut r = Response::new(body::data_then_trailers(reply, trailers));
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(BACKEND_HEADER, name);
        r
    }
}

/// gRPC's percent-encoding of `grpc-message`: bytes outside printable ASCII
/// and `%` itself become `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One uncompressed gRPC message: flag 0, 4-byte big-endian length, `msg`.
pub fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// Split a gRPC body into its messages; `None` when the framing is broken
/// (truncated, or a compressed message, which nothing here negotiates).
pub fn grpc_unframe(mut body: &[u8]) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 || body[0] != 0 {
            return None;
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let rest = &body[5..];
        if rest.len() < len {
            return None;
        }
        out.push(Bytes::copy_from_slice(&rest[..len]));
        body = &rest[len..];
    }
    Some(out)
}

/// A protobuf length-delimited field (`string`, `bytes` or a nested
/// message): tag `(field << 3) | 2`, varint length, `value`.
pub fn pb_bytes_field(field: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    put_varint(&mut out, (u64::from(field) << 3) | 2);
    put_varint(&mut out, value.len() as u64);
    out.extend_from_slice(value);
    out
}

/// Decode a protobuf message made only of length-delimited fields into
/// `(field number, value)` pairs; `None` on any other wire type or a
/// truncated buffer.
pub fn pb_fields(mut buf: &[u8]) -> Option<Vec<(u32, Bytes)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = get_varint(&mut buf)?;
        if tag & 7 != 2 {
            return None;
        }
        let len = usize::try_from(get_varint(&mut buf)?).ok()?;
        if buf.len() < len {
            return None;
        }
        out.push((
            u32::try_from(tag >> 3).ok()?,
            Bytes::copy_from_slice(&buf[..len]),
        ));
        buf = &buf[len..];
    }
    Some(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn protobuf_and_framing_round_trip() {
        let long = vec![7u8; 300];
        let mut msg = pb_bytes_field(1, b"hello");
        msg.extend_from_slice(&pb_bytes_field(2, &long));
        let fields = pb_fields(&msg).unwrap();
        assert_eq!(fields[0], (1, Bytes::from_static(b"hello")));
        assert_eq!(fields[1].1.len(), 300);
        let framed = grpc_frame(&msg);
        assert_eq!(msg.len(), 310);
        assert_eq!(&framed[..5], &[0, 0, 0, 0x01, 0x36]);
        assert_eq!(grpc_unframe(&framed).unwrap(), vec![Bytes::from(msg)]);
        assert!(grpc_unframe(&framed[..framed.len() - 1]).is_none());
        assert_eq!(percent_encode("bad 100%\n"), "bad 100%25%0A");
    }
}
