//! The response body of a recorded request: passes frames through,
//! counts data bytes, reads `grpc-status` from trailers, and completes the
//! record when the body ends, fails, or is dropped unfinished.

use super::record::{BodyEnd, Pending};
use crate::body::ProxyBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A [`ProxyBody`] whose end completes a record.
#[derive(Debug)]
pub(crate) struct ObservedBody {
    inner: ProxyBody,
    /// `None` once the record was handed on.
    pending: Option<Box<Pending>>,
}

impl ObservedBody {
    /// Wrap `inner`; the record completes when it ends.
    pub(crate) fn wrap(inner: ProxyBody, pending: Box<Pending>) -> ProxyBody {
        ProxyBody::Observed(Box::new(ObservedBody {
            inner,
            pending: Some(pending),
        }))
    }

    fn complete(&mut self, end: BodyEnd) {
        if let Some(p) = self.pending.take() {
            p.complete(end);
        }
    }

    /// Pass one frame through, counting it.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(p) = self.pending.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        p.sent(data.len());
                    } else if let Some(trailers) = frame.trailers_ref() {
                        p.grpc_trailers(trailers);
                    }
                }
                if self.inner.is_end_stream() {
                    self.complete(BodyEnd::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => self.complete(BodyEnd::SourceFailed),
            Poll::Ready(None) => self.complete(BodyEnd::Complete),
            Poll::Pending => {}
        }
        polled
    }

    /// Whether the inner body has ended.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    /// The inner body's size hint.
    pub(crate) fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    /// Dropped before its end: the client went away, unless there was
    /// nothing (more) to send.
    fn drop(&mut self) {
        let Some(p) = self.pending.as_ref() else {
            return;
        };
        let end = if self.inner.is_end_stream() || p.bodiless() {
            BodyEnd::Complete
        } else {
            BodyEnd::ClientGone
        };
        self.complete(end);
    }
}
