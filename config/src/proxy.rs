//! What a proxy tells the control plane about itself, and what the control
//! plane knows of it.

use crate::validate::Validator;
use serde::{Deserialize, Serialize};

/// Sent by a proxy when it starts (and again whenever it reconnects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyRegistration {
    /// Unique name of the proxy (a pod name or a node name).
    pub name: String,
    /// Account the proxy runs for; the default account when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Group for proxy associations (e.g. a node pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `host:port` where other proxies reach this proxy's inbound listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_address: Option<String>,
    /// Service networks (by name) this proxy joins, in addition to proxy associations.
    #[serde(default)]
    pub service_networks: Vec<String>,
}

impl ProxyRegistration {
    /// Check every field; errors carry field paths.
    pub fn validate(&self) -> Result<(), crate::ValidationErrors> {
        let mut v = Validator::new();
        v.name("name", &self.name);
        if let Some(g) = &self.group {
            v.name("group", g);
        }
        if let Some(a) = &self.inbound_address
            && a.parse::<std::net::SocketAddr>().is_err()
        {
            v.error_at("inboundAddress", format!("'{a}' is not an ip:port address"));
        }
        v.field("serviceNetworks", |v| {
            for (i, n) in self.service_networks.iter().enumerate() {
                v.index(i, |v| {
                    if let Err(m) = crate::validate::check_dns_label(n) {
                        v.error(m);
                    }
                });
            }
        });
        v.finish()
    }
}

/// A proxy as `GET /v1/proxies` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// What the proxy registered.
    #[serde(flatten)]
    pub registration: ProxyRegistration,
    /// Names of the service networks in the proxy's scope (registration and associations).
    pub scope: Vec<String>,
    /// Version of the snapshot the control plane has for it.
    pub desired_version: u64,
    /// Version the proxy last acknowledged applying (0: none yet).
    pub applied_version: u64,
    /// Whether the proxy runs the desired version.
    pub in_sync: bool,
    /// Whether a watch stream is open right now.
    pub connected: bool,
    /// RFC 3339 time the proxy was last heard from.
    pub last_contact: Option<String>,
    /// Error the proxy reported for the last snapshot it rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339 end of validity of the proxy's mesh certificate, as last
    /// presented to the control plane (absent: not seen since it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
}
