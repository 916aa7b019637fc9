//! End-to-end tests: one binary, one module per area.

mod backends;
mod control_api;
mod harness;
