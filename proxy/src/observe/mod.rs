//! What every request leaves behind: access logs (here), metrics and
//! traces.
//!
//! - `record`: [`record::RequestRecord`], everything known about one finished
//!   request, and `Recorder`, which the outbound listener fills while it
//!   handles the request and which hands the finished record to its
//!   consumers (today the access log; metrics and traces can take the same
//!   record)
//! - `failure`: Lattice's `failureReason` taxonomy and where each of the
//!   proxy's error reasons falls in it
//! - `body`: the response body wrapper that counts bytes sent and
//!   finishes the record when the body ends or is dropped
//! - `access_log`: subscriptions' destinations, bounded queues and writer
//!   threads, the JSON line, file rotation

pub mod access_log;
pub(crate) mod body;
pub mod failure;
pub mod metrics;
pub mod record;
pub mod trace;

pub use access_log::AccessLog;
pub(crate) use record::Recorder;
