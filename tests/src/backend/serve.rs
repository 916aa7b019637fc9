//! The accept loop all backends share: HTTP/1.1 and h2c on one port, with
//! upgrades, counters and a stop signal.

use super::{BackendHandle, BackendStats, RespBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What a request handler gets besides the request.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The backend's counters.
    pub stats: Arc<BackendStats>,
    /// Becomes `true` (or closes) when the backend stops.
    pub stop: watch::Receiver<bool>,
    /// Tasks the handler spawns (upgraded connections); aborted and awaited
    /// when the backend stops.
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Ctx {
    /// Resolves when the backend is stopping.
    pub async fn stopped(mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }

    /// Run `fut` until it ends or the backend stops.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        // Only the stop signal, not the whole context: the task must not keep
        // the set that owns it alive.
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.spawn(async move {
                tokio::select! {
                    _ = fut => {}
                    _ = stopped => {}
                }
            });
        }
    }
}

/// Bind `listen` and serve `handler` until the returned handle is dropped.
pub(crate) async fn start<H, Fut>(
    listen: SocketAddr,
    name: String,
    handler: H,
) -> io::Result<BackendHandle>
where
    H: Fn(Request<Incoming>, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(BackendStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Ctx {
        stats: Arc::clone(&stats),
        stop: stop_rx,
        tasks: Arc::default(),
    };
    let task = tokio::spawn(accept_loop(listener, Arc::new(handler), ctx));
    Ok(BackendHandle::new(name, addr, stats, stop_tx, task))
}

async fn accept_loop<H, Fut>(listener: TcpListener, handler: Arc<H>, ctx: Ctx)
where
    H: Fn(Request<Incoming>, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    // Connections live in this set: when the loop ends (stop, or the task is
    // aborted) the set is dropped and every connection task is aborted.
    let mut conns = JoinSet::new();
    let stopped = ctx.clone().stopped();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    ctx.stats.connections.fetch_add(1, Ordering::SeqCst);
                    conns.spawn(serve_conn(stream, Arc::clone(&handler), ctx.clone()));
                }
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Close the listener first, then cut every connection and wait until
    // their sockets are closed, so `BackendHandle::shutdown` is exact.
    drop(listener);
    conns.shutdown().await;
    let mut tasks = match ctx.tasks.lock() {
        Ok(mut t) => std::mem::take(&mut *t),
        Err(_) => return,
    };
    tasks.shutdown().await;
}

async fn serve_conn<H, Fut>(stream: TcpStream, handler: Arc<H>, ctx: Ctx)
where
    H: Fn(Request<Incoming>, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| {
        let handler = Arc::clone(&handler);
        let ctx = svc_ctx.clone();
        async move { Ok::<_, Infallible>(handler(req, ctx).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = ctx.stopped() => {}
    }
}
