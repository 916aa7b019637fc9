//! A WebSocket echo backend: HTTP/1.1 `Upgrade: websocket` handshake served
//! by hyper, then tokio-tungstenite on the upgraded connection.

use super::serve::{Ctx, start};
use super::{BACKEND_HEADER, BackendHandle, RespBody, body};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A backend that upgrades `GET` requests with `Upgrade: websocket` and
/// echoes every text and binary message back unchanged until the peer
/// closes. Other requests (health checks) get `200 text/plain`. Each
/// handshake counts as one request; upgraded connections are cut when the
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct WebSocketEchoBackend {
    name: String,
    listen: SocketAddr,
}

impl WebSocketEchoBackend {
    /// A backend named `name` on `127.0.0.1:0`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }

    /// Listen on `addr` instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Bind and serve until the handle is dropped.
    pub async fn start(self) -> io::Result<BackendHandle> {
        let name = self.name.clone();
        start(self.listen, self.name.clone(), move |req, ctx| {
            let name = name.clone();
            async move { answer(&name, req, ctx) }
        })
        .await
    }
}

fn answer(name: &str, mut req: Request<Incoming>, ctx: Ctx) -> Response<RespBody> {
    ctx.stats.record(req.uri().path());
    let name_value =
        HeaderValue::from_str(name).unwrap_or_else(|_| HeaderValue::from_static("invalid-name"));
    let wants_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (wants_ws, key) else {
        let mut r = Response::new(body::full(format!("websocket echo backend {name}\n")));
        r.headers_mut().insert(BACKEND_HEADER, name_value);
        return r;
    };

    let upgrade = hyper::upgrade::on(&mut req);
    ctx.spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(ws).await;
    });

    let mut r = Response::new(body::full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    h.insert(BACKEND_HEADER, name_value);
    r
}

async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            // tungstenite answers pings and close frames itself.
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    let _ = ws.close(None).await;
}
