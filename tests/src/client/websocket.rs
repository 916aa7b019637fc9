//! WebSocket clients that connect to any address (usually a proxy) and do
//! the handshake with a chosen `Host`.

use super::{bounded, connect};
use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Open a WebSocket to `ws://{host}{path}` over a TCP connection to `addr`:
/// the handshake's `Host` is `host` (which may carry a `:port`), the bytes
/// go to `addr`. Returns the open stream and the handshake response.
pub async fn websocket_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<(
    WebSocketStream<TcpStream>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
)> {
    let stream = connect(addr).await?;
    let url = format!("ws://{host}{path}");
    bounded(
        || format!("WebSocket handshake for {url} via {addr}"),
        async {
            tokio_tungstenite::client_async(url.as_str(), stream)
                .await
                .with_context(|| format!("WebSocket handshake for {url} via {addr}"))
        },
    )
    .await
}

/// Open a WebSocket through `addr` with `Host: host`, send `message` as one
/// text message, return the first text reply and close.
pub async fn websocket_echo(
    addr: SocketAddr,
    host: &str,
    path: &str,
    message: &str,
) -> anyhow::Result<String> {
    let (mut ws, _) = websocket_connect(addr, host, path).await?;
    let reply = bounded(|| format!("WebSocket echo via {addr}"), async {
        ws.send(Message::text(message))
            .await
            .context("sending the message")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => {
                    return Ok(String::from_utf8_lossy(&b).into_owned());
                }
                Some(Ok(Message::Close(f))) => anyhow::bail!("closed by the peer: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("reading the reply"),
                None => anyhow::bail!("connection ended before a reply"),
            }
        }
    })
    .await?;
    let _ = ws.close(None).await;
    Ok(reply)
}
