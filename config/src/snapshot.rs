//! The per-proxy snapshot: everything one proxy needs, compiled by the
//! control plane and pushed over the watch stream.
//!
//! It holds only the service networks in the proxy's scope, with every
//! name reference resolved to an id, so the proxy never consults anything
//! else to route. The proxy prepares its lookup tables (host map, ordered
//! rules) once per snapshot, never per request.

use crate::listener::ListenerSpec;
use crate::network::AuthType;
use crate::target_group::{Algorithm, HealthCheck, ProtocolVersion, TargetProtocol};
use serde::{Deserialize, Serialize};

/// One proxy's view of the mesh at one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Grows with every change to this proxy's view (the store revision
    /// that produced it); a reconnecting proxy sends the version it has.
    pub version: u64,
    /// Name of the proxy it was compiled for.
    pub proxy: String,
    /// The networks in scope.
    pub networks: Vec<SnapshotNetwork>,
    /// Services associated with those networks.
    pub services: Vec<SnapshotService>,
    /// Target groups used by those services, plus those with targets this
    /// proxy fronts.
    pub target_groups: Vec<SnapshotTargetGroup>,
    /// Services (of any scope) that forward to target groups with targets
    /// this proxy fronts: what its inbound listener checks a caller's
    /// request against. Empty for a proxy that fronts nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fronted_services: Vec<FrontedService>,
    /// The service networks those services are associated with, with
    /// their auth policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fronted_networks: Vec<SnapshotNetwork>,
}

/// A service whose requests reach targets this proxy fronts: enough for
/// the inbound listener to check the route a calling proxy names
/// (`x-trellis-service`, `x-trellis-network`) and to evaluate the
/// service's auth policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontedService {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owning account.
    pub account: String,
    /// Ids of every network it is associated with (see
    /// [`Snapshot::fronted_networks`]).
    pub networks: Vec<String>,
    /// Ports of its listeners.
    pub ports: Vec<u16>,
    /// Ids of the target groups it forwards to that hold targets this
    /// proxy fronts.
    pub target_groups: Vec<String>,
    /// Auth type at the service level.
    pub auth_type: AuthType,
    /// The service's auth policy as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth_policy: Option<serde_json::Value>,
}

/// A network in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotNetwork {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owning account.
    pub account: String,
    /// Every account that may use the network: the owner, then the
    /// accounts it is shared with (sorted). Proxies check a caller's
    /// account against it.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Auth type.
    pub auth_type: AuthType,
    /// The network's auth policy as stored (validated on write); the
    /// proxy compiles it once per snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth_policy: Option<serde_json::Value>,
}

/// A service in a snapshot, with its listeners; in the listeners' actions
/// `targetGroup` holds a target group **id**.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotService {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owning account.
    pub account: String,
    /// Ids of the networks (in scope) it is associated with.
    pub networks: Vec<String>,
    /// Every host name it answers to: generated names and the custom domain.
    pub hosts: Vec<String>,
    /// Auth type at the service level.
    pub auth_type: AuthType,
    /// The service's auth policy as stored (validated on write); the
    /// proxy compiles it once per snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth_policy: Option<serde_json::Value>,
    /// Listeners with their rules, sorted by priority.
    pub listeners: Vec<ListenerSpec>,
    /// Idle timeout of the service's upstream connections and tunnels.
    #[serde(
        default = "crate::defaults::u32_of::<{ crate::resilience::SERVICE_IDLE_SECONDS_DEFAULT }>"
    )]
    pub idle_timeout_seconds: u32,
    /// Service-wide rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::resilience::RateLimit>,
    /// Where this proxy writes the access log of requests to this service:
    /// the service's own subscriptions and those of every in-scope network
    /// it is associated with, one entry per destination
    /// ([`crate::AccessLogDestination::key`]), sorted. Empty: not logged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logs: Vec<crate::AccessLogDestination>,
}

/// A target group in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTargetGroup {
    /// Resource id (stable across changes; runtime state is keyed by it).
    pub id: String,
    /// Name.
    pub name: String,
    /// Owning account.
    pub account: String,
    /// Protocol to targets.
    pub protocol: TargetProtocol,
    /// HTTP version to targets.
    pub protocol_version: ProtocolVersion,
    /// Default port.
    pub port: u16,
    /// Load-balancing algorithm.
    pub algorithm: Algorithm,
    /// Health-check settings.
    pub health_check: HealthCheck,
    /// Targets with their ports and how to reach them.
    pub targets: Vec<SnapshotTarget>,
    /// Passive outlier ejection, if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<crate::resilience::OutlierDetection>,
    /// Fail-fast limits.
    #[serde(default)]
    pub circuit_breaker: crate::resilience::CircuitBreaker,
    /// Upstream connection settings.
    #[serde(default)]
    pub connection: crate::resilience::ConnectionSettings,
}

/// A target in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTarget {
    /// Target address.
    pub address: String,
    /// Effective port (override or group port).
    pub port: u16,
    /// Name of the proxy that fronts it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// That proxy's inbound `ip:port`, where traffic for this target goes.
    /// `None` when the fronting proxy is this snapshot's own proxy (it
    /// then forwards directly) or no proxy fronts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Deregistered and draining: no new requests; in-flight ones finish.
    /// The control plane drops it after the deregistration delay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

impl SnapshotTarget {
    /// `address:port` of the target itself (IPv6 bracketed).
    pub fn authority(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// One line of the watch stream (`GET /v1/proxies/{name}/watch`), which is
/// newline-delimited JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WatchEvent {
    /// A new snapshot to apply.
    Snapshot {
        /// The snapshot; its `version` is what to acknowledge.
        snapshot: Snapshot,
    },
    /// Sent every few seconds so both ends notice a dead connection.
    Heartbeat {
        /// Version the control plane believes is current for this proxy.
        version: u64,
    },
}

/// A proxy's report after trying a snapshot (`POST /v1/proxies/{name}/ack`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ack {
    /// Version the proxy now runs.
    pub version: u64,
    /// Why a newer snapshot was rejected (the proxy keeps `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
