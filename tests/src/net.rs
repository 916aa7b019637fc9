//! Loopback addresses for tests: free ports and ports where nothing listens.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0 by the
/// OS, then released). Another process may take it before the caller binds
/// it; prefer binding port 0 directly where the code under test allows.
///
/// # Panics
/// When the OS cannot bind 127.0.0.1:0 at all (the test cannot run then).
pub fn free_port() -> u16 {
    free_addr().port()
}

/// `127.0.0.1:<free port>`; see [`free_port`].
///
/// # Panics
/// When the OS cannot bind 127.0.0.1:0 at all.
pub fn free_addr() -> SocketAddr {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
}

/// An address on 127.0.0.1 where nothing listens: connecting to it is
/// refused (RST), which is what a target that died looks like.
///
/// # Panics
/// When the OS cannot bind 127.0.0.1:0 at all.
pub fn refusing_addr() -> SocketAddr {
    free_addr()
}
