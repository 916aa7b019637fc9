//! Clients for tests: each call opens its own TCP connection to `addr` (a
//! backend, a proxy listener or the control plane) and names the virtual
//! host separately, the way a workload talks to its sidecar. Every call is
//! bounded by [`crate::CLIENT_TIMEOUT`].

pub mod grpc;
pub mod http;
pub mod websocket;

use anyhow::Context as _;
pub(crate) use connect_tcp as connect;
use std::net::SocketAddr;
use tokio::net::TcpStream;

pub(crate) async fn connect_tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = tokio::time::timeout(crate::CLIENT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Like [`connect_tcp`], from a given local address (e.g. `127.0.0.2`,
/// which Linux routes over loopback like `127.0.0.1`), so a server sees
/// another client address.
pub(crate) async fn connect_tcp_from(
    local: std::net::IpAddr,
    addr: SocketAddr,
) -> anyhow::Result<TcpStream> {
    let socket = match local {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .context("creating a socket")?;
    socket
        .bind(SocketAddr::new(local, 0))
        .with_context(|| format!("binding {local}:0"))?;
    let stream = tokio::time::timeout(crate::CLIENT_TIMEOUT, socket.connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} from {local} timed out"))?
        .with_context(|| format!("connecting to {addr} from {local}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn bounded<T>(
    what: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(crate::CLIENT_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("{} timed out after {:?}", what(), crate::CLIENT_TIMEOUT),
    }
}
