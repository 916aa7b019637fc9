//! The listeners: outbound (local applications), inbound (other proxies)
//! and admin, and what every data connection goes through.
//!
//! | listener | default address   | speaks                  | forwards to |
//! |----------|-------------------|-------------------------|-------------|
//! | outbound | 127.0.0.1:15001   | HTTP/1.1, h2c (prior knowledge) | any target the routes pick |
//! | inbound  | 0.0.0.0:15006     | HTTP/1.1, h2c           | only targets this proxy fronts (`x-trellis-target`) |
//! | admin    | 127.0.0.1:15000   | HTTP/1.1, h2c           | nothing: `/live`, `/ready`, `/config` |
//!
//! A data connection starts with the proxy reading the first request head
//! itself (`head`), within the header read timeout and the head limits,
//! so that a slow, oversized, malformed or wrong-version first request is
//! answered in the proxy's error shape (408, 431, 400, 505). The bytes
//! read are then replayed (`rewind`) to hyper's HTTP/1 server, or to its
//! HTTP/2 server when they are the HTTP/2 preface. (We call hyper's two
//! servers directly rather than `hyper_util`'s auto builder because the
//! version is already known and the auto builder's HTTP/1 settings lack
//! `max_header_size`.)
//!
//! What stays hyper's: on a kept-alive HTTP/1 connection, later request
//! heads are parsed by hyper. Its size limit is set to
//! [`HYPER_HEAD_SIZE_FACTOR`] times ours, so that a head between our limit
//! and that hard stop reaches [`admit::admit`], which answers our 431 (and
//! 400/413 for framing and body size). Its header-count limit equals ours
//! (raising it would move hyper's header array to the heap for every
//! request). So on a reused connection, a head over the hard size stop,
//! with more header fields than the limit, malformed, or with a wrong
//! version gets hyper's bare 431/400 (no `x-trellis-error`, no body) and
//! the connection closes; a head that is too slow, or a connection idle
//! longer than `max(header_read_timeout, idle_timeout)`, is closed without
//! a response. On HTTP/2, a header block over the list-size setting is
//! refused by the h2 library before it reaches us; smaller ones over our
//! limits get our 431.
//!
//! The inbound listener's limits are the outbound ones plus what a calling
//! proxy adds (`config::INBOUND_EXTRA_HEADERS`), so a request within the
//! limits at the caller's proxy is within them at the target's.
//!
//! Rate limits (`ratelimit`) are checked on the outbound listener once a
//! request is routed; they are local to each proxy.
//!
//! **Draining.** When the proxy is told to stop (SIGTERM,
//! `RunningProxy::shutdown`) the data listeners drain: their sockets close
//! at once (new connections are refused), [`Shared::is_draining`] turns
//! true (the admin `/ready` answers 503 from then on), and requests in
//! flight get the drain timeout to finish. HTTP/2 connections get a GOAWAY
//! at once (hyper's graceful shutdown: streams in flight finish, no new
//! ones). HTTP/1.1 responses carry `Connection: close` from then on, so a
//! client learns to go elsewhere with an answer rather than a closed
//! socket; connections still idle after [`drain_http1_grace`] are closed.
//! Upgraded tunnels run until the end of the drain. What is left at the
//! drain timeout is cut.

pub(crate) mod admin;
pub(crate) mod admit;
pub(crate) mod head;
mod inbound;
mod outbound;
pub(crate) mod ratelimit;
mod rewind;

use crate::config::{DEFAULT_MAX_REQUEST_HEADERS, Limits};
use crate::error::{Failure, Reason};
use crate::forward::headers::{ClientHttps, X_FORWARDED_PROTO, new_request_id};
use crate::identity::PeerIdentity;
use crate::run::signalled;
use crate::state::Shared;
use bytes::{Bytes, BytesMut};
use head::{HeadCheck, check_first_head};
use http::header::CONNECTION;
use http::{HeaderValue, StatusCode};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rewind::Rewind;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use trellis_config::identity::WorkloadIdentity;

const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// Pause after a failed `accept` (e.g. out of file descriptors) so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Time to write a proxy-made answer on a connection hyper never saw.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// After answering an invalid first head, read (and discard) what the
/// client is still sending for up to this long before closing, so that
/// closing with unread data does not reset the connection and destroy the
/// answer before the client reads it.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// ... and at most this many bytes.
const LINGER_MAX_BYTES: usize = 256 * 1024;

/// Read granularity while waiting for the first head.
const HEAD_READ_CHUNK: usize = 8 * 1024;

/// HTTP/2 counts 32 bytes of overhead per header field against
/// `SETTINGS_MAX_HEADER_LIST_SIZE` (RFC 9113 §6.5.2).
const H2_FIELD_OVERHEAD: usize = 32;

/// hyper's hard stop for a request head on a reused HTTP/1 connection, as a
/// multiple of our limit; heads between the two get our 431 from
/// [`admit::admit`]. Costs nothing until a client sends such a head.
pub(crate) const HYPER_HEAD_SIZE_FACTOR: usize = 2;

/// Which data listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// From local applications.
    Outbound,
    /// From other proxies.
    Inbound,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Outbound => "outbound",
            Side::Inbound => "inbound",
        }
    }
}

/// The longest an idle HTTP/1.1 connection is kept open once a drain
/// started, so that a client about to reuse it still gets an answer (with
/// `Connection: close`) rather than a closed socket.
pub(crate) const MAX_DRAIN_HTTP1_GRACE: Duration = Duration::from_secs(5);

/// Half the drain timeout, at most [`MAX_DRAIN_HTTP1_GRACE`].
pub(crate) fn drain_http1_grace(drain_timeout: Duration) -> Duration {
    (drain_timeout / 2).min(MAX_DRAIN_HTTP1_GRACE)
}

/// Settings of one data listener, made once: its request limits,
/// hyper's servers configured to match, and its drain state.
#[derive(Debug)]
pub(crate) struct Servers {
    /// What requests on this listener must stay within.
    pub limits: Limits,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// Turns `true` when the drain starts.
    drain: watch::Receiver<bool>,
    /// The same, read per response without a lock.
    draining: AtomicBool,
    /// See [`drain_http1_grace`].
    h1_grace: Duration,
}

impl Servers {
    /// Servers for `limits`; `idle_timeout` bounds a kept-alive HTTP/1
    /// connection between requests; `drain` turns `true` when the proxy
    /// starts draining, which lasts at most `drain_timeout`.
    pub(crate) fn new(
        limits: Limits,
        idle_timeout: Duration,
        drain: watch::Receiver<bool>,
        drain_timeout: Duration,
    ) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // hyper's header timer also runs while a kept-alive connection
            // idles between requests, so it gets the longer of the two.
            .header_read_timeout(limits.header_read_timeout.max(idle_timeout))
            .max_header_size(
                limits
                    .max_header_bytes
                    .saturating_mul(HYPER_HEAD_SIZE_FACTOR),
            )
            .keep_alive(true);
        if limits.max_headers != DEFAULT_MAX_REQUEST_HEADERS {
            // Only when it differs: a non-default count moves hyper's
            // header array from the stack to the heap.
            h1.max_headers(limits.max_headers);
        }
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        let list_size = limits
            .max_header_bytes
            .saturating_mul(HYPER_HEAD_SIZE_FACTOR)
            .saturating_add(limits.max_headers.saturating_mul(H2_FIELD_OVERHEAD));
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(list_size).unwrap_or(u32::MAX));
        Self {
            limits,
            h1,
            h2,
            drain,
            draining: AtomicBool::new(false),
            h1_grace: drain_http1_grace(drain_timeout),
        }
    }

    /// Mark the start of the drain (before the drain signal is sent).
    pub(crate) fn start_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Whether the proxy is draining: it takes no new connections and
    /// should be reported not ready (`/ready` 503).
    pub(crate) fn is_draining(&self) -> bool {
        self.outbound.is_draining() || self.inbound.is_draining()
    }

    /// Start draining both data listeners (see the module docs).
    pub(crate) fn start_drain(&self) {
        self.outbound.start_drain();
        self.inbound.start_drain();
    }
}

/// Accept connections on `listener` and serve each with `serve`, until
/// `shutdown`. Then the listener is closed at once (its port is free),
/// connections get `drain` to finish (each watches `shutdown` itself to
/// stop taking requests), and whatever is left is cut.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(listener = name, %peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    conns.spawn(serve(stream, peer));
                }
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done && e.is_panic() {
                    tracing::error!(listener = name, error = %e, "connection task panicked");
                }
            }
            _ = signalled(&mut shutdown) => break,
        }
    }
    drop(listener);
    let open = conns.len();
    if open > 0 {
        tracing::debug!(listener = name, open, "draining connections");
    }
    let drained =
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(
            listener = name,
            left = conns.len(),
            "drain timeout; closing connections"
        );
        conns.shutdown().await;
    }
}

/// Serve one connection of a data listener.
/// What the listener knows of a connection beyond its address, given to
/// each of its requests (as [`PeerIdentity`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnMeta {
    /// The caller's mesh identity (mTLS inbound).
    pub peer: Option<WorkloadIdentity>,
    /// `TLSv1.3` or `TLSv1.2` on a TLS connection of an HTTPS listener.
    pub tls_version: Option<&'static str>,
    /// The host name the client sent in SNI.
    pub sni: Option<Arc<str>>,
}

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Serve a connection of the outbound listener. A proxy with a mesh
/// identity also serves HTTPS there: a connection that opens with a TLS
/// handshake gets the certificate of its SNI host name (a service with an
/// HTTPS listener; unknown names fail the handshake). Its requests are
/// anonymous (no client certificate) and route with port 443 by default.
pub(crate) async fn serve_outbound_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let https = shared.mesh.state().and_then(|_| shared.mesh.https_config());
    let Some(config) = https else {
        serve_data_connection(stream, peer, Side::Outbound, shared, ConnMeta::default()).await;
        return;
    };
    let timeout = shared.outbound.limits.header_read_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(_) => return,
        Err(_) => {
            let failure = Failure::new(
                Reason::RequestTimeout,
                format!("the request head did not arrive within {timeout:?}"),
            );
            shared.metrics.rejected(Side::Outbound, failure.reason);
            reject(stream, &failure).await;
            return;
        }
    }
    if first[0] != TLS_HANDSHAKE {
        serve_data_connection(stream, peer, Side::Outbound, shared, ConnMeta::default()).await;
        return;
    }
    let tls = match tokio::time::timeout(
        timeout,
        tokio_rustls::TlsAcceptor::from(config).accept(stream),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_failed();
            tracing::debug!(%peer, error = %e, "outbound: HTTPS handshake refused");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failed();
            tracing::debug!(%peer, "outbound: HTTPS handshake timed out");
            return;
        }
    };
    let conn = tls.get_ref().1;
    let meta = ConnMeta {
        peer: None,
        tls_version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
            Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
            _ => None,
        },
        sni: conn.server_name().map(Arc::from),
    };
    serve_data_connection(tls, peer, Side::Outbound, shared, meta).await;
}

/// Serve a connection of the inbound listener: mTLS when the proxy speaks
/// mesh TLS (the handshake refuses plaintext, missing, foreign and expired
/// certificates), plain otherwise. A proxy that requires mesh TLS but has
/// no identity yet refuses every connection.
pub(crate) async fn serve_inbound_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    if !shared.mesh.is_required() {
        serve_data_connection(stream, peer, Side::Inbound, shared, ConnMeta::default()).await;
        return;
    }
    let Some(state) = shared.mesh.state() else {
        tracing::debug!(%peer, "inbound: no mesh identity yet; refusing the connection");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&state.server));
    let timeout = shared.inbound.limits.header_read_timeout;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            shared.metrics.tls_handshake_done();
            tls
        }
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_failed();
            tracing::debug!(%peer, error = %e, "inbound: TLS handshake refused");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failed();
            tracing::debug!(%peer, "inbound: TLS handshake timed out");
            return;
        }
    };
    let meta = ConnMeta {
        peer: tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(crate::identity::peer_identity),
        ..ConnMeta::default()
    };
    serve_data_connection(tls, peer, Side::Inbound, shared, meta).await;
}

pub(crate) async fn serve_data_connection<S>(
    mut stream: S,
    peer: SocketAddr,
    side: Side,
    shared: Arc<Shared>,
    meta: ConnMeta,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _open = shared.metrics.connection(side);
    let servers = shared.servers(side);
    let mut drain = servers.drain.clone();
    let h1_grace = servers.h1_grace;
    // A connection accepted before the drain may still send its request,
    // within the HTTP/1 grace.
    let opening = tokio::select! {
        o = read_opening(&mut stream, &servers.limits) => o,
        () = async {
            signalled(&mut drain).await;
            tokio::time::sleep(h1_grace).await;
        } => return,
    };
    let (prefix, h2) = match opening {
        Opening::Http1(prefix) => (prefix, false),
        Opening::Http2(prefix) => (prefix, true),
        Opening::Reject(failure) => {
            tracing::debug!(listener = side.as_str(), %peer, reason = %failure.reason, message = %failure.message, "rejected request head");
            shared.metrics.rejected(side, failure.reason);
            reject(stream, &failure).await;
            return;
        }
        Opening::Closed => return,
    };

    let io = TokioIo::new(Rewind::new(prefix, stream));
    let svc_shared = Arc::clone(&shared);
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let shared = Arc::clone(&svc_shared);
        req.extensions_mut().insert(PeerIdentity(meta.peer.clone()));
        if meta.tls_version.is_some() {
            // An HTTPS listener's request (routing and the access log read it).
            req.extensions_mut().insert(meta.clone());
            req.extensions_mut().insert(ClientHttps);
        } else if side == Side::Inbound
            && req
                .headers()
                .get(X_FORWARDED_PROTO)
                .is_some_and(|v| v.as_bytes() == b"https")
        {
            // The calling proxy (a mesh certificate vouches for it) took
            // the request from a client of an HTTPS listener.
            req.extensions_mut().insert(ClientHttps);
        }
        async move {
            let mut metered = shared.metrics.exchange(side);
            let mut resp = match side {
                Side::Outbound => {
                    outbound::handle(Arc::clone(&shared), req, peer, &mut metered).await
                }
                Side::Inbound => {
                    inbound::handle(Arc::clone(&shared), req, peer, &mut metered).await
                }
            };
            // Not on a 101: its `Connection: upgrade` hands the
            // connection to a tunnel, which the drain's deadline bounds.
            if !h2
                && shared.servers(side).is_draining()
                && resp.status() != StatusCode::SWITCHING_PROTOCOLS
            {
                resp.headers_mut().insert(CONNECTION, CLOSE);
            }
            Ok::<_, Infallible>(metered.finish(resp))
        }
    });

    macro_rules! drive {
        ($conn:expr, $grace:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res,
                _ = signalled(&mut drain) => {
                    // HTTP/1: answers now carry `Connection: close`; give
                    // idle connections a moment before closing them.
                    let grace = $grace;
                    let finished = if grace.is_zero() {
                        None
                    } else {
                        tokio::time::timeout(grace, conn.as_mut()).await.ok()
                    };
                    match finished {
                        Some(res) => res,
                        None => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    }
                }
            }
        }};
    }
    let result = if h2 {
        drive!(servers.h2.serve_connection(io, svc), Duration::ZERO)
    } else {
        drive!(
            servers.h1.serve_connection(io, svc).with_upgrades(),
            h1_grace
        )
    };
    if let Err(e) = result {
        tracing::debug!(listener = side.as_str(), %peer, error = %e, "connection ended with an error");
    }
}

/// How a data connection starts.
#[derive(Debug)]
enum Opening {
    /// A valid HTTP/1 head; the bytes read so far.
    Http1(Bytes),
    /// The HTTP/2 preface; the bytes read so far.
    Http2(Bytes),
    /// Answer this and close.
    Reject(Failure),
    /// The client left (or the socket failed) before a complete head.
    Closed,
}

/// Read until the first head can be judged, within the header read
/// timeout. A client that sends nothing in time also gets the 408 (RFC
/// 9110 allows it; the connection closes anyway).
async fn read_opening<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limits: &Limits) -> Opening {
    let mut buf = BytesMut::with_capacity(HEAD_READ_CHUNK);
    let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    loop {
        if !buf.is_empty() {
            match check_first_head(&buf, limits.max_header_bytes, limits.max_headers) {
                HeadCheck::Partial => {}
                HeadCheck::Http1 => return Opening::Http1(buf.freeze()),
                HeadCheck::Http2 => return Opening::Http2(buf.freeze()),
                HeadCheck::Invalid(f) => return Opening::Reject(f),
            }
        }
        buf.reserve(HEAD_READ_CHUNK);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => {
                return Opening::Reject(Failure::new(
                    Reason::RequestTimeout,
                    format!(
                        "the request head did not arrive within {:?}",
                        limits.header_read_timeout
                    ),
                ));
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Opening::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

/// Write `failure` as a raw HTTP/1.1 answer, then close gracefully.
async fn reject<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    failure: &Failure,
) {
    let bytes = failure.to_http1_bytes(&new_request_id());
    let written = tokio::time::timeout(REJECT_WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut sink = vec![0u8; 16 * 1024];
        let mut total = 0;
        while total < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
