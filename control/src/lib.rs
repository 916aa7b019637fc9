//! The Trellis control plane: REST API, store, snapshot compiler and push.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod api;
pub mod audit;
pub mod ca;
pub mod cli;
pub mod client;
pub mod compile;
pub mod drain;
pub mod explain;
pub mod join;
pub mod keys;
pub mod mesh;
pub mod metrics;
pub mod model;
pub mod push;
pub mod repo;
pub mod server;
pub mod share;
pub mod store;
pub mod target_health;
