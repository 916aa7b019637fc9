//! Request bodies as sent to a target, and the replay of a body for a
//! retry.
//!
//! A request that cannot be retried sends its body straight through
//! ([`UpstreamBody::Direct`], as before retries existed). A retryable
//! request with a body streams it through a [`ReplayBody`], which tees the
//! data into a buffer on the way; a retry gets a new `ReplayBody` on the
//! same buffer that sends what was buffered, then goes on reading the
//! client's body where the failed attempt left it. The body is never held
//! back: it streams to the first attempt as it arrives.
//!
//! If more than `maxBufferedBodyBytes` go by, the buffer is freed and the
//! request goes on streaming, but it can no longer be retried
//! ([`ReplayBody::can_replay`] turns false). A bodiless request (GET)
//! needs no buffer at all: its retries send [`UpstreamBody::Empty`].

use crate::body::RequestBody;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way to a target.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// Streamed through, not replayable.
    Direct(RequestBody),
    /// Streamed through a replay buffer.
    Replay(ReplayBody),
    /// No body.
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Direct(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Replay(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Direct(b) => b.is_end_stream(),
            UpstreamBody::Replay(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Direct(b) => b.size_hint(),
            UpstreamBody::Replay(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

#[derive(Debug)]
struct State {
    /// The client's body; `None` while an attempt's body reads it, or
    /// once it has ended.
    source: Option<RequestBody>,
    /// Data seen so far (empty once `overflowed`).
    chunks: Vec<Bytes>,
    buffered: usize,
    trailers: Option<HeaderMap>,
    /// The client's body has ended.
    ended: bool,
    /// More than the limit went by: no replay.
    overflowed: bool,
    /// A replay waiting for the previous attempt to give the source back.
    waiter: Option<Waker>,
}

/// One attempt's view of a replayable body. See the module docs.
#[derive(Debug)]
pub(crate) struct ReplayBody {
    state: Arc<Mutex<State>>,
    /// Next buffered chunk this attempt sends.
    pos: usize,
    /// The source, while this attempt reads it.
    held: Option<RequestBody>,
    trailers_sent: bool,
    hint: SizeHint,
    max: usize,
}

impl ReplayBody {
    /// Tee `source`, keeping up to `max` bytes for replays.
    pub(crate) fn new(source: RequestBody, max: usize) -> Self {
        let hint = source.size_hint();
        let hint = match hint.exact() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        };
        Self {
            state: Arc::new(Mutex::new(State {
                source: Some(source),
                chunks: Vec::new(),
                buffered: 0,
                trailers: None,
                ended: false,
                overflowed: false,
                waiter: None,
            })),
            pos: 0,
            held: None,
            trailers_sent: false,
            hint,
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a retry can still send the whole body.
    pub(crate) fn can_replay(&self) -> bool {
        !self.lock().overflowed
    }

    /// A body for the next attempt, from the start; `None` when the
    /// buffer overflowed.
    pub(crate) fn replay(&self) -> Option<ReplayBody> {
        if !self.can_replay() {
            return None;
        }
        Some(Self {
            state: Arc::clone(&self.state),
            pos: 0,
            held: None,
            trailers_sent: false,
            hint: self.hint,
            max: self.max,
        })
    }

    /// Bytes held for replay (for tests).
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.lock().buffered
    }
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        if let Some(source) = self.held.take() {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.source = Some(source);
            if let Some(w) = st.waiter.take() {
                w.wake();
            }
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.held.is_none() {
            let mut st = this.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(chunk) = st.chunks.get(this.pos) {
                this.pos += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
            if st.ended {
                if !this.trailers_sent
                    && let Some(t) = &st.trailers
                {
                    this.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                }
                return Poll::Ready(None);
            }
            match st.source.take() {
                Some(source) => this.held = Some(source),
                None => {
                    // The previous attempt still holds it; it gives it back
                    // when dropped.
                    st.waiter = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let Some(source) = this.held.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                let mut st = this.state.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(data) = frame.data_ref() {
                    if !st.overflowed {
                        if st.buffered.saturating_add(data.len()) > this.max {
                            st.overflowed = true;
                            st.chunks = Vec::new();
                            st.buffered = 0;
                        } else {
                            st.buffered += data.len();
                            st.chunks.push(data.clone());
                        }
                    }
                    this.pos = st.chunks.len();
                } else if let Some(t) = frame.trailers_ref() {
                    st.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.held = None;
                this.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The client's body failed: nothing to replay.
                this.held = None;
                let mut st = this.state.lock().unwrap_or_else(PoisonError::into_inner);
                st.overflowed = true;
                st.chunks = Vec::new();
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(held) = &self.held {
            return held.is_end_stream();
        }
        let st = self.lock();
        if self.pos < st.chunks.len() {
            return false;
        }
        if st.ended {
            return st.trailers.is_none() || self.trailers_sent;
        }
        st.source.as_ref().is_some_and(|s| s.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A real `Incoming` body (the type `RequestBody` wraps) made by a
    /// hyper server from raw HTTP/1.1 bytes, passed out through a channel.
    async fn request_body(raw: &'static [u8], limit: u64) -> RequestBody {
        use hyper_util::rt::TokioIo;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send(req.into_body());
                    }
                    async {
                        // Never answer: keeps the body alive for the test.
                        std::future::pending::<
                            Result<http::Response<String>, std::convert::Infallible>,
                        >()
                        .await
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        let (_, mut w) = tokio::io::split(client);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = w.write_all(raw).await;
            std::future::pending::<()>().await;
        });
        RequestBody::new(rx.await.unwrap(), limit)
    }

    const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\nx-t: 1\r\n\r\n";

    async fn collect(b: ReplayBody) -> (Bytes, Option<HeaderMap>) {
        let c = b.collect().await.unwrap();
        let t = c.trailers().cloned();
        (c.to_bytes(), t)
    }

    #[tokio::test]
    async fn replays_the_whole_body_and_trailers() {
        let first = ReplayBody::new(request_body(CHUNKED, 1 << 20).await, 1024);
        let second = first.replay().unwrap();
        let (bytes, trailers) = collect(first).await;
        assert_eq!(bytes, "abcdef");
        assert_eq!(trailers.unwrap()["x-t"], "1");
        assert!(!second.is_end_stream());
        let third = second.replay().unwrap();
        let (bytes, trailers) = collect(second).await;
        assert_eq!(bytes, "abcdef");
        assert_eq!(trailers.unwrap()["x-t"], "1");
        assert_eq!(third.buffered(), 6);
    }

    #[tokio::test]
    async fn a_retry_continues_where_the_failed_attempt_stopped() {
        let mut first = ReplayBody::new(request_body(CHUNKED, 1 << 20).await, 1024);
        // The first attempt reads one frame, then fails (is dropped).
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "abc");
        let second = first.replay().unwrap();
        drop(first);
        let (bytes, _) = collect(second).await;
        assert_eq!(bytes, "abcdef");
    }

    #[tokio::test]
    async fn over_the_limit_streams_on_but_cannot_replay() {
        let first = ReplayBody::new(request_body(CHUNKED, 1 << 20).await, 4);
        let probe = first.replay().unwrap();
        let (bytes, _) = collect(first).await;
        assert_eq!(bytes, "abcdef", "the attempt got the whole body");
        assert!(!probe.can_replay());
        assert!(probe.replay().is_none());
        assert_eq!(probe.buffered(), 0, "the buffer was freed");
    }

    #[tokio::test]
    async fn exactly_the_limit_is_replayable() {
        let first = ReplayBody::new(request_body(CHUNKED, 1 << 20).await, 6);
        let probe = first.replay().unwrap();
        collect(first).await;
        assert!(probe.can_replay());
    }

    #[tokio::test]
    async fn content_length_is_the_size_hint_of_every_attempt() {
        let first = ReplayBody::new(
            request_body(
                b"PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
                1 << 20,
            )
            .await,
            64,
        );
        assert_eq!(first.size_hint().exact(), Some(5));
        let second = first.replay().unwrap();
        collect(first).await;
        assert_eq!(second.size_hint().exact(), Some(5));
        assert_eq!(collect(second).await.0, "hello");
    }

    #[tokio::test]
    async fn empty_body_is_end_of_stream() {
        assert!(UpstreamBody::Empty.is_end_stream());
        let b = ReplayBody::new(
            request_body(
                b"PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
                1 << 20,
            )
            .await,
            64,
        );
        assert!(b.is_end_stream());
    }
}
