//! Response bodies the backends stream.

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;

/// The body type of every backend response: data frames, optionally
/// followed by trailers.
pub type RespBody = UnsyncBoxBody<Bytes, Infallible>;

/// Size of one data frame of a filler body.
const FILLER_CHUNK: usize = 16 * 1024;
static FILLER: [u8; FILLER_CHUNK] = [b'x'; FILLER_CHUNK];

/// A body of exactly `len` bytes of `x`, produced lazily in 16 KiB frames,
/// so a backend can answer with megabytes without holding them in memory.
pub fn filler_body(len: u64) -> RespBody {
    let frames = stream::unfold(len, |left| async move {
        if left == 0 {
            return None;
        }
        let n = left.min(FILLER_CHUNK as u64) as usize;
        let frame: Result<Frame<Bytes>, Infallible> =
            Ok(Frame::data(Bytes::from_static(&FILLER[..n])));
        Some((frame, left - n as u64))
    });
    StreamBody::new(frames).boxed_unsync()
}

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// One data frame, then trailers.
pub(crate) fn data_then_trailers(data: Bytes, trailers: http::HeaderMap) -> RespBody {
    let frames: [Result<Frame<Bytes>, Infallible>; 2] =
        [Ok(Frame::data(data)), Ok(Frame::trailers(trailers))];
    StreamBody::new(stream::iter(frames)).boxed_unsync()
}
