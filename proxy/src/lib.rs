//! The Trellis data plane.
//!
//! A proxy runs beside workloads. Its **outbound** listener takes plain
//! HTTP/1.1 and h2c from local applications, routes each request by host,
//! method, path and headers ([`route`]), picks a target group by weight and
//! a target in it ([`balance`]), and forwards it over pooled connections
//! (`forward`), directly or through the **inbound** listener of the proxy
//! that fronts the target. Its configuration is a [`trellis_config::Snapshot`]
//! pushed by the control plane (`sync`), swapped in whole, and kept on
//! disk for restarts without a control plane. An **admin** listener says
//! whether it is live and ready and shows the snapshot.
//!
//! Start one in-process with [`start`] and a [`ProxyConfig`]; every error
//! it answers itself is listed in [`error`].
#![forbid(unsafe_code)]

pub mod authz;
pub mod balance;
pub(crate) mod body;
pub mod config;
pub mod error;
pub(crate) mod forward;
pub mod identity;
pub(crate) mod listen;
pub(crate) mod observe;

/// The access log's line, for `benches/benches/access_log.rs` (not an API).
#[doc(hidden)]
pub mod access_log_format {
    pub use crate::observe::access_log::write_line;
    pub use crate::observe::record::{Outcome, RequestRecord};
}
pub mod route;
pub(crate) mod run;
pub(crate) mod state;
pub(crate) mod sync;

pub use config::ProxyConfig;
pub use error::{Blame, Failure, Reason};
pub use run::{ProxyError, RunningProxy, start};
pub use sync::disk::SNAPSHOT_FILE;
