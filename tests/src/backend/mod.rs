//! In-process backends on `127.0.0.1:0`.
//!
//! Each backend type is a small builder (`EchoBackend::new("a").status(503)`)
//! whose `start()` binds a listener and returns a [`BackendHandle`]. Every
//! backend serves HTTP/1.1 and h2c (prior knowledge) on the same port, counts
//! the requests it receives (in total and per path) and stops when the
//! handle is dropped or [`BackendHandle::shutdown`] is called: the listener
//! is closed and open connections (including upgraded WebSockets) are cut.
//!
//! Every backend answers plain `GET`s (the proxy's default health check is
//! `GET /`), so a target group pointing at one becomes healthy.

mod body;
mod echo;
mod grpc;
mod handle;
mod serve;
mod websocket;

pub use body::{RespBody, filler_body};
pub use echo::{ECHO_BODY_BYTES_HEADER, ECHO_DELAY_MS_HEADER, ECHO_STATUS_HEADER, EchoBackend};
pub use grpc::{
    GRPC_STATUS_HEADER, GRPC_TRAILER_HEADER, GrpcBackend, grpc_frame, grpc_unframe, pb_bytes_field,
    pb_fields,
};
pub use handle::{BackendHandle, BackendStats, PATH_LOG_CAPACITY};
pub use websocket::WebSocketEchoBackend;

/// Response header every backend sets to its name, so a test can tell which
/// target answered without parsing the body.
pub const BACKEND_HEADER: &str = "x-backend";
