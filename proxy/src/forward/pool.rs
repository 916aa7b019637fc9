//! Upstream connection pools, one per target group (and one shared pool
//! per protocol for the inbound listener's last hop).
//!
//! A pool is runtime state keyed by target group id and survives pushes;
//! a push that changes the group's `connection` settings, its
//! `maxConnections`/`maxPendingRequests` or its protocol version gets a
//! new pool (the old one's connections finish what they carry and close).
//!
//! Per pool:
//! - `connectTimeoutMs` bounds a TCP connect (then 502
//!   `upstream_connect_failed`, retryable as `connect-failure`);
//! - `idleTimeoutSeconds` closes a pooled connection idle that long
//!   (unrelated to a service's `idleTimeoutSeconds`, which bounds
//!   upgraded tunnels; see `upgrade`);
//! - `maxLifetimeSeconds`: a connection older than this is retired: it
//!   finishes the exchanges it carries and takes no new request, whether
//!   it is busy or resting in the pool when it comes of age (a timer
//!   started on its first answer marks it; see [`retire_at_lifetime`]);
//! - the `maxConnections` breaker counts live connections (the socket
//!   carries a permit until it closes); a request that needs a new
//!   connection beyond it waits for one, as one of at most
//!   `maxPendingRequests` waiting requests, and beyond that is answered
//!   503 `overflow` at once.

use super::connect::{MeshConnector, MeshIo, Purpose};
use super::replay::UpstreamBody;
use crate::identity::MeshTls;
use futures_util::future::BoxFuture;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{
    CaptureConnection, Connected, Connection, HttpConnector,
};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use trellis_config::{CircuitBreaker, ConnectionSettings};

/// TCP keepalive on upstream connections, so a vanished peer is noticed
/// on long-lived (gRPC, WebSocket) connections.
pub const UPSTREAM_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// HTTP/2 PING interval on upstream connections, for the same reason.
pub const UPSTREAM_H2_KEEPALIVE: Duration = Duration::from_secs(30);

/// What a pool is made from; a push that changes it gets a new pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolSettings {
    /// HTTP/2 with prior knowledge, else HTTP/1.1.
    pub h2: bool,
    /// Connect, idle and lifetime settings.
    pub connection: ConnectionSettings,
    /// `maxConnections`; `None`: unlimited.
    pub max_connections: Option<u32>,
    /// `maxPendingRequests`.
    pub max_pending: u32,
}

impl PoolSettings {
    /// A target group's settings.
    pub(crate) fn for_group(
        h2: bool,
        connection: &ConnectionSettings,
        cb: &CircuitBreaker,
    ) -> Self {
        Self {
            h2,
            connection: connection.clone(),
            max_connections: Some(cb.max_connections),
            max_pending: cb.max_pending_requests,
        }
    }

    /// The shared pools of the inbound listener: default connection
    /// settings, no connection limit.
    pub(crate) fn shared(h2: bool) -> Self {
        Self {
            h2,
            connection: ConnectionSettings::default(),
            max_connections: None,
            max_pending: 0,
        }
    }
}

/// A new connection was refused by the `maxConnections` breaker with
/// `maxPendingRequests` requests already waiting.
#[derive(Debug, thiserror::Error)]
#[error(
    "{max_connections} connections are open and {pending} requests wait for one (maxConnections, maxPendingRequests)"
)]
pub(crate) struct ConnectOverflow {
    max_connections: u32,
    pending: u32,
}

/// When a connection was opened, and its retirement timer; put in every
/// response's extensions by the pool, read for `maxLifetimeSeconds`.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBorn {
    /// When the connection was opened.
    pub at: Instant,
    life: Arc<ConnectionLife>,
}

/// Shared by a connection and its retirement timer.
#[derive(Debug, Default)]
struct ConnectionLife {
    /// A timer was started (one per connection).
    timer: AtomicBool,
    /// The connection is gone (its socket was dropped).
    closed: AtomicBool,
    /// Wakes the timer when the connection goes, so no timer outlives its
    /// connection.
    gone: Notify,
}

impl ConnectionBorn {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            life: Arc::default(),
        }
    }
}

/// Retire the connection an exchange went over (`capture`, whose answer
/// carried `born`) once it is `max` old. Already that old: marked now, so
/// this exchange finishes and no new request is sent on it. Younger: on
/// the connection's first answer a timer is started that marks it when it
/// comes of age, so that a connection resting idle in the pool is not
/// handed a request past its lifetime either. The timer ends early when
/// the connection closes.
pub(crate) fn retire_at_lifetime(born: &ConnectionBorn, capture: CaptureConnection, max: Duration) {
    let poison = move |capture: &CaptureConnection| {
        if let Some(conn) = capture.connection_metadata().as_ref() {
            conn.poison();
        }
    };
    let Some(until) = max.checked_sub(born.at.elapsed()) else {
        poison(&capture);
        return;
    };
    if born.life.timer.swap(true, Ordering::AcqRel) {
        return;
    }
    let life = Arc::clone(&born.life);
    tokio::spawn(async move {
        let gone = life.gone.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        if life.closed.load(Ordering::Acquire) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(until) => {
                tracing::debug!(?max, "upstream connection reached its maxLifetimeSeconds; retiring it");
                poison(&capture);
            }
            () = gone => {}
        }
    });
}

/// Live-connection and pending counters of one pool.
#[derive(Debug)]
pub(crate) struct ConnLimits {
    max_connections: u32,
    max_pending: u32,
    permits: Arc<Semaphore>,
    pending: AtomicUsize,
}

impl ConnLimits {
    fn new(max_connections: u32, max_pending: u32) -> Self {
        Self {
            max_connections,
            max_pending,
            permits: Arc::new(Semaphore::new(
                (max_connections as usize).min(Semaphore::MAX_PERMITS),
            )),
            pending: AtomicUsize::new(0),
        }
    }

    /// A permit for one connection: at once if one is free, else after a
    /// wait as one of at most `max_pending` waiters, else an overflow.
    async fn acquire(self: Arc<Self>) -> Result<OwnedSemaphorePermit, ConnectOverflow> {
        if let Ok(p) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(p);
        }
        let overflow = || ConnectOverflow {
            max_connections: self.max_connections,
            pending: self.max_pending,
        };
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending as usize {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(overflow());
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.pending);
        // The semaphore is never closed, so this waits until a permit frees.
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| overflow())
    }

    /// Connections open.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        (self.max_connections as usize)
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(self.permits.available_permits())
    }

    /// Requests waiting for a connection.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

/// `HttpConnector` behind the `maxConnections` breaker.
#[derive(Debug, Clone)]
pub(crate) struct PoolConnector {
    http: MeshConnector,
    limits: Option<Arc<ConnLimits>>,
}

impl tower_service::Service<http::Uri> for PoolConnector {
    type Response = PooledIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<PooledIo, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut http = self.http.clone();
        let limits = self.limits.clone();
        Box::pin(async move {
            let permit = match limits {
                Some(l) => Some(l.acquire().await?),
                None => None,
            };
            let io = tower_service::Service::call(&mut http, uri).await?;
            Ok(PooledIo {
                inner: io,
                born: ConnectionBorn::now(),
                _permit: permit,
            })
        })
    }
}

/// An upstream connection; its breaker permit is released when it closes.
#[derive(Debug)]
pub(crate) struct PooledIo {
    inner: MeshIo,
    born: ConnectionBorn,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connection for PooledIo {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.born.clone())
    }
}

impl Drop for PooledIo {
    fn drop(&mut self) {
        self.born.life.closed.store(true, Ordering::Release);
        self.born.life.gone.notify_waiters();
    }
}

impl Read for PooledIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Write for PooledIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

/// One pool: a hyper client over a [`PoolConnector`].
#[derive(Debug)]
pub(crate) struct Pool {
    /// What it was made from.
    pub settings: PoolSettings,
    /// The client.
    pub client: Client<PoolConnector, UpstreamBody>,
    /// `maxLifetimeSeconds`, when set.
    pub max_lifetime: Option<Duration>,
}

impl Pool {
    /// A pool for `settings`.
    pub(crate) fn new(settings: PoolSettings, mesh: &MeshTls) -> Self {
        let c = &settings.connection;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(u64::from(c.connect_timeout_ms))));
        http.set_keepalive(Some(UPSTREAM_TCP_KEEPALIVE));
        http.enforce_http(true);
        let limits = settings
            .max_connections
            .map(|max| Arc::new(ConnLimits::new(max, settings.max_pending)));
        let http = MeshConnector::new(http, mesh.clone(), Purpose::Peer { h2: settings.h2 });
        let connector = PoolConnector { http, limits };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(u64::from(c.idle_timeout_seconds)));
        if settings.h2 {
            builder
                .http2_only(true)
                .http2_keep_alive_interval(UPSTREAM_H2_KEEPALIVE);
        }
        let client = builder.build(connector);
        let max_lifetime = (c.max_lifetime_seconds > 0)
            .then(|| Duration::from_secs(u64::from(c.max_lifetime_seconds)));
        Self {
            settings,
            client,
            max_lifetime,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// A loopback HTTP/1.1 server answering 200; counts accepted
    /// connections.
    async fn counting_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_connection_that_comes_of_age_idle_in_the_pool_is_not_reused() {
        use http_body_util::BodyExt;
        let (addr, accepted) = counting_server().await;
        let connection = ConnectionSettings {
            max_lifetime_seconds: 1,
            ..ConnectionSettings::default()
        };
        let pool = Pool::new(
            PoolSettings {
                h2: false,
                connection,
                max_connections: None,
                max_pending: 0,
            },
            &MeshTls::new(false),
        );
        let max = Duration::from_millis(300);
        let get = || async {
            let mut req = http::Request::builder()
                .uri(format!("http://{addr}/"))
                .body(UpstreamBody::Empty)
                .unwrap();
            let capture = hyper_util::client::legacy::connect::capture_connection(&mut req);
            let resp = pool.client.request(req).await.unwrap();
            let born = resp.extensions().get::<ConnectionBorn>().cloned().unwrap();
            retire_at_lifetime(&born, capture, max);
            resp.into_body().collect().await.unwrap();
        };
        get().await;
        get().await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "a young connection is reused"
        );
        tokio::time::sleep(max + Duration::from_millis(200)).await;
        get().await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a connection past its lifetime took a new request"
        );
    }

    #[tokio::test]
    async fn limits_admit_then_queue_then_overflow() {
        let l = Arc::new(ConnLimits::new(2, 1));
        let a = Arc::clone(&l).acquire().await.unwrap();
        let _b = Arc::clone(&l).acquire().await.unwrap();
        assert_eq!(l.open(), 2);
        // The third waits (one pending allowed) ...
        let waiter = tokio::spawn(Arc::clone(&l).acquire());
        while l.pending() == 0 {
            tokio::task::yield_now().await;
        }
        // ... the fourth overflows at once.
        let e = Arc::clone(&l).acquire().await.unwrap_err();
        assert!(e.to_string().contains("2 connections"), "{e}");
        // A connection closes: the waiter gets its permit.
        drop(a);
        let c = waiter.await.unwrap().unwrap();
        assert_eq!(l.pending(), 0);
        assert_eq!(l.open(), 2);
        drop(c);
        assert_eq!(l.open(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_is_no_longer_pending() {
        let l = Arc::new(ConnLimits::new(1, 1));
        let _a = Arc::clone(&l).acquire().await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(20), Arc::clone(&l).acquire()).await;
        assert!(r.is_err());
        assert_eq!(l.pending(), 0);
    }

    #[tokio::test]
    async fn zero_pending_overflows_immediately() {
        let l = Arc::new(ConnLimits::new(1, 0));
        let _a = Arc::clone(&l).acquire().await.unwrap();
        assert!(Arc::clone(&l).acquire().await.is_err());
    }
}
