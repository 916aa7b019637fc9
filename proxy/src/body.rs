//! The two bodies that stream through the proxy, without buffering:
//!
//! - [`ProxyBody`]: every response the listeners send: a target's body
//!   passed through frame by frame (trailers included, for gRPC), or a
//!   small body the proxy made itself.
//! - [`RequestBody`]: a client's request body on its way to a target,
//!   counted so that a streamed (chunked) body over the limit fails with
//!   [`BodyTooLarge`] instead of reaching the target whole.

use crate::balance::EndpointGuard;
use crate::observe::record::Tally;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A response body. Holding the upstream variant keeps the chosen target's
/// [`EndpointGuard`], so the request counts as outstanding until the
/// client has the whole body (least-request sees real load).
#[derive(Debug)]
pub enum ProxyBody {
    /// A body made by the proxy; `None` once sent.
    Full(Option<Bytes>),
    /// A target's body, streamed.
    Upstream {
        /// The body.
        body: Incoming,
        /// The target it came from, released when the body is dropped;
        /// held, never read.
        _guard: Option<EndpointGuard>,
    },
    /// Either of the above, for a request whose record
    /// ([`crate::observe::RequestRecord`]) completes when the body ends.
    Observed(Box<crate::observe::body::ObservedBody>),
}

impl ProxyBody {
    /// A body of these bytes (empty bytes: an empty body).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// A target's body, holding `guard` until it is finished or dropped.
    pub fn upstream(body: Incoming, guard: Option<EndpointGuard>) -> Self {
        ProxyBody::Upstream {
            body,
            _guard: guard,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            ProxyBody::Observed(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Observed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Observed(body) => body.size_hint(),
        }
    }
}

/// The request body crossed the proxy's limit while streaming.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit, in bytes.
    pub limit: u64,
}

/// A client's request body as sent to a target: frames pass through as
/// they come; once more than `limit` data bytes went by, the body fails
/// with [`BodyTooLarge`] (the target sees an aborted request, and the
/// client a 413 if the target had not answered yet).
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: u64,
    seen: u64,
    /// Where a recorded request counts its body bytes.
    tally: Option<Arc<Tally>>,
    /// Where metrics count them.
    counter: Option<crate::observe::metrics::ByteCounter>,
}

impl RequestBody {
    /// Count `inner` against `limit` bytes.
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            tally: None,
            counter: None,
        }
    }

    /// Also count the bytes into a recorded request's tally (see
    /// [`crate::observe::record::Tally`]); `None` counts nothing more.
    pub(crate) fn tally(mut self, tally: Option<Arc<Tally>>) -> Self {
        self.tally = tally;
        self
    }

    /// Also count the bytes into a metrics counter; `None` counts nothing.
    pub(crate) fn count_into(
        mut self,
        counter: Option<crate::observe::metrics::ByteCounter>,
    ) -> Self {
        self.counter = counter;
        self
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(t) = &this.tally {
                        t.received(data.len());
                    }
                    if let Some(c) = &this.counter {
                        c.inc_by(data.len() as u64);
                    }
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
