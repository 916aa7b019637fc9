//! HTTP/1.1 upgrades (WebSocket): after the target answered 101, the two
//! connections are joined byte for byte.
//!
//! A tunnel closes when either side closes, when no byte has gone either
//! way for the service's `idleTimeoutSeconds` (Lattice: 60 s by default,
//! 60–600 s), or when the proxy stops (at the end of its drain). That
//! idle timeout is the service's, on the tunnel as a whole; it is not the
//! target group's `connection.idleTimeoutSeconds`, which closes *pooled*
//! upstream connections that carry no request, and never applies to a
//! tunnel (an upgraded connection leaves the pool).
//!
//! The inbound listener, which does not know the service, keeps its
//! tunnels for [`INBOUND_TUNNEL_IDLE_TIMEOUT`], the longest a service may
//! set, so the calling proxy's tunnel (with the service's setting) is the
//! one that decides.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Idle timeout of tunnels on the inbound listener: the upper end of a
/// service's `idleTimeoutSeconds` range.
pub const INBOUND_TUNNEL_IDLE_TIMEOUT: Duration =
    Duration::from_secs(trellis_config::resilience::SERVICE_IDLE_SECONDS_RANGE.1 as u64);

/// Counts an open tunnel while it lives (the drain waits for them).
#[derive(Debug)]
pub(super) struct TunnelCount(Arc<watch::Sender<usize>>);

impl TunnelCount {
    pub(super) fn new(count: Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for TunnelCount {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Wait for both sides to finish switching, then copy bytes both ways
/// until either side closes, nothing moves for `idle`, or the proxy stops.
pub(super) async fn tunnel(
    client: OnUpgrade,
    target: OnUpgrade,
    mut stop: watch::Receiver<bool>,
    idle: Duration,
    _open: TunnelCount,
) {
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Active {
        io: TokioIo::new(client),
        start,
        last: Arc::clone(&last),
    };
    let mut target = Active {
        io: TokioIo::new(target),
        start,
        last: Arc::clone(&last),
    };
    let idle_watch = async {
        loop {
            let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
            let until = seen + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    };
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut target) => match res {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(error = %e, "upgraded connection failed"),
        },
        () = idle_watch => {
            tracing::debug!(?idle, "upgraded connection idle; closing it");
        }
        _ = crate::run::signalled(&mut stop) => {
            tracing::debug!("upgraded connection cut by shutdown");
        }
    }
}

/// An upgraded connection that notes when bytes last moved through it.
struct Active<T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Active<T> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_mark_activity() {
        let (a, mut b) = tokio::io::duplex(64);
        let start = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let mut active = Active {
            io: a,
            start,
            last: Arc::clone(&last),
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        active.read_exact(&mut buf).await.unwrap();
        assert!(last.load(Ordering::Relaxed) >= 20);
    }

    #[test]
    fn inbound_tunnels_allow_the_longest_service_setting() {
        assert_eq!(INBOUND_TUNNEL_IDLE_TIMEOUT, Duration::from_secs(600));
    }
}
