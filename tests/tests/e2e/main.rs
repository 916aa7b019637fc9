//! End-to-end tests: one binary, one module per area.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_log;
mod accounts;
mod audit;
mod backends;
mod control_api;
mod cross_account;
mod draining_health_api;
mod harness;
mod identity;
mod metrics;
mod policy;
mod protocols;
mod proxy_errors;
mod push;
mod resilience;
mod routing;
mod sharing;
mod traces;
