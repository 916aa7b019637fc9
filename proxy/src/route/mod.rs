//! Request routing: host -> service -> listener (by port) -> rules by
//! priority -> action. The table is prepared once per snapshot; a lookup
//! allocates nothing.
//!
//! INTERFACE STUB — implemented by the route/balance work.

use http::{HeaderMap, Method};
use trellis_config::Snapshot;

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

/// A forward action prepared for weighted choice.
#[derive(Debug)]
pub struct WeightedGroups {
    _private: (),
}

impl WeightedGroups {
    /// Pick a target group id by weight (weight 0 never chosen).
    pub fn pick(&self) -> &str {
        todo!()
    }
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

/// The routing table of one snapshot.
#[derive(Debug)]
pub struct RouteTable {
    _private: (),
}

impl RouteTable {
    /// Prepare lookups for `snapshot`.
    pub fn build(snapshot: &Snapshot) -> Result<Self, BuildError> {
        let _ = snapshot;
        todo!()
    }

    /// Route a request. `host` is the Host header or `:authority`, possibly
    /// with a port (no port means 80); matching is case-insensitive on the host.
    pub fn route<'a>(&'a self, host: &str, method: &Method, path: &str, headers: &HeaderMap) -> Route<'a> {
        let _ = (host, method, path, headers);
        todo!()
    }
}
