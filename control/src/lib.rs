//! The Trellis control plane: REST API, store, snapshot compiler and push.
#![forbid(unsafe_code)]

pub mod server;
pub mod store;
