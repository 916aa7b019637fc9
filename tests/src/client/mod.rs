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

async fn bounded<T>(
    what: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(crate::CLIENT_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("{} timed out after {:?}", what(), crate::CLIENT_TIMEOUT),
    }
}
