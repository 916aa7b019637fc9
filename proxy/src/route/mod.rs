//! Request routing: host -> service -> listener (by port) -> rules by
//! priority -> action. The table is prepared once per snapshot; a lookup
//! allocates nothing and takes no lock.
//!
//! - `host`: splitting `Host` from its port, the case-insensitive host map
//! - `rules`: a rule's method, path and header conditions
//! - `weighted`: a forward action's target groups, chosen by weight
//! - `table`: [`RouteTable`], tying them together

mod host;
mod rules;
mod table;
mod weighted;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;

pub use host::{DEFAULT_PORT, split_host_port};
pub use table::RouteTable;
pub use weighted::WeightedGroups;

/// Why a snapshot could not be prepared (the proxy then keeps its previous one).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An action names a target group the snapshot does not contain.
    #[error("service '{service}' listener '{listener}': unknown target group id '{target_group}'")]
    UnknownTargetGroup {
        /// Service name.
        service: String,
        /// Listener name.
        listener: String,
        /// The missing id.
        target_group: String,
    },
    /// A forward action has no target group with a weight above 0, so it
    /// could send a request nowhere.
    #[error(
        "service '{service}' listener '{listener}': a forward action has no target group with a weight above 0"
    )]
    NoWeightedTargetGroup {
        /// Service name.
        service: String,
        /// Listener name.
        listener: String,
    },
    /// Two services answer to the same host name, so which one gets the
    /// request would be arbitrary.
    #[error("host '{host}' belongs to both service '{first}' and service '{second}'")]
    DuplicateHost {
        /// The host name, lower-case.
        host: String,
        /// Name of the service listed first.
        first: String,
        /// Name of the other service.
        second: String,
    },
}

/// Names of the route a request took, for errors, logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct RouteInfo<'a> {
    /// Service id.
    pub service_id: &'a str,
    /// Service name.
    pub service: &'a str,
    /// Listener name.
    pub listener: &'a str,
    /// Rule name; `None` for the listener's default action.
    pub rule: Option<&'a str>,
}

/// Where a request goes.
#[derive(Debug)]
pub enum Route<'a> {
    /// No service answers to this host (404 `no_service`).
    NoService,
    /// The service has no listener on the addressed port (404 `no_listener`).
    NoListener {
        /// The addressed port.
        port: u16,
    },
    /// Answer with a fixed status.
    Fixed {
        /// The status code.
        status: u16,
        /// The route taken.
        info: RouteInfo<'a>,
    },
    /// Forward to one of these target groups.
    Forward {
        /// The weighted target groups.
        groups: &'a WeightedGroups,
        /// The route taken.
        info: RouteInfo<'a>,
    },
}
