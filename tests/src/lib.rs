//! Test support for Trellis: real backends and real clients on loopback.
//!
//! Everything here talks over real sockets on `127.0.0.1` so the end-to-end
//! tests exercise the proxy exactly as a workload would:
//!
//! - [`backend`]: in-process servers ([`EchoBackend`], [`GrpcBackend`],
//!   [`WebSocketEchoBackend`]) started on port 0, each returning a
//!   [`BackendHandle`] with its address and request counters; dropping the
//!   handle stops the server and closes its connections.
//! - [`client`]: HTTP/1.1 and h2c requests, gRPC unary calls and WebSocket
//!   round trips, addressed to any socket (a backend or a proxy) with any
//!   `Host`/`:authority`.
//! - [`raw`]: byte-exact HTTP/1.1 over TCP for edge cases (malformed heads,
//!   slow clients, pipelining).
//! - [`net`]: free and refusing loopback addresses.
//! - [`wait`]: bounded polling. Tests wait for conditions with generous
//!   timeouts and never assert on wall-clock speed.
#![forbid(unsafe_code)]

pub mod backend;
pub mod client;
pub mod net;
pub mod otlp;
pub mod prom;
pub mod raw;
pub mod wait;

pub use backend::{BackendHandle, EchoBackend, GrpcBackend, WebSocketEchoBackend};
pub use client::grpc::{GrpcReply, grpc_unary_call, grpc_unary_call_with};
pub use client::http::{
    Http1Connection, Http2Connection, HttpResponse, http1_request, http1_request_from,
    http2_request, https1_request,
};
pub use client::websocket::{websocket_connect, websocket_echo};
pub use net::{free_addr, free_port, refusing_addr};
pub use raw::{
    RawConnection, RawResponse, SlowSend, parse_response, parse_response_head, raw_request,
    send_slowly,
};
pub use wait::{WaitTimeout, eventually, wait_until, wait_until_async};

use std::time::Duration;

/// Upper bound for one client helper call (connect, request, response
/// body). Generous on purpose: it only turns a hang into a clear error on a
/// loaded 2-core CI machine, it never measures speed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A generous default bound for [`wait_until`] and friends.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(20);
