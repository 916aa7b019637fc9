//! One port, two audiences: REST clients in plain HTTP, proxies in TLS with
//! a mesh certificate (see the module doc of [`super`]).

use super::ProxyPeer;
use axum::Router;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a new connection may stay silent before its first byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors), so the loop
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serve until `shutdown` turns true, then let requests in flight finish
/// (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    api: Router,
    proxy_api: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut conns = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(connection(
                        stream,
                        peer,
                        api.clone(),
                        proxy_api.clone(),
                        acceptor.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    api: Router,
    proxy_api: Router,
    acceptor: TlsAcceptor,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] != TLS_HANDSHAKE {
        http(TokioIo::new(stream), api, None, shutdown).await;
        return;
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "proxy TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "proxy TLS handshake timed out");
            return;
        }
    };
    let who = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(ProxyPeer::from_chain);
    let Some(who) = who else {
        tracing::info!(%peer, "proxy certificate names no workload; closing");
        return;
    };
    http(TokioIo::new(tls), proxy_api, Some(who), shutdown).await;
}

async fn http<I>(
    io: TokioIo<I>,
    router: Router,
    who: Option<ProxyPeer>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(who) = &who {
            req.extensions_mut().insert(who.clone());
        }
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let builder = Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped(&mut shutdown) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
