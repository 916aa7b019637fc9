//! The Trellis data plane.
#![forbid(unsafe_code)]

pub mod balance;
pub mod route;
