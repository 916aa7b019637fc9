//! Associations: which services are in which networks, and which proxies
//! see which networks.

use crate::kind::{Kind, Reference, Spec};
use crate::validate::Validator;
use serde::{Deserialize, Serialize};

/// Puts a service into a service network. The service becomes reachable as
/// `<service>.<network>.trellis.internal` (and its custom domain) from
/// every proxy associated with the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAssociationSpec {
    /// Unique per account; by convention `<service>-<network>`.
    pub name: String,
    /// Name of the service network.
    pub service_network: String,
    /// Name of the service.
    pub service: String,
}

impl Spec for ServiceAssociationSpec {
    const KIND: Kind = Kind::ServiceAssociation;

    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, v: &mut Validator) {
        v.name("name", &self.name);
        v.name("serviceNetwork", &self.service_network);
        v.name("service", &self.service);
    }

    fn references(&self) -> Vec<Reference> {
        vec![
            Reference {
                kind: Kind::ServiceNetwork,
                name: self.service_network.clone(),
                field: "serviceNetwork".into(),
            },
            Reference {
                kind: Kind::Service,
                name: self.service.clone(),
                field: "service".into(),
            },
        ]
    }
}

/// Lets a proxy, or every proxy of a group, route to the services of a
/// network. Proxies may also name networks when they register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyAssociationSpec {
    /// Unique per account.
    pub name: String,
    /// Name of the service network.
    pub service_network: String,
    /// A proxy name; exactly one of `proxy` and `proxyGroup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// A proxy group (proxies register with a group, e.g. one per node pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_group: Option<String>,
}

impl ProxyAssociationSpec {
    /// Whether this association applies to a proxy with `name` in `group`.
    pub fn applies_to(&self, name: &str, group: Option<&str>) -> bool {
        self.proxy.as_deref() == Some(name)
            || (self.proxy_group.is_some() && self.proxy_group.as_deref() == group)
    }
}

impl Spec for ProxyAssociationSpec {
    const KIND: Kind = Kind::ProxyAssociation;

    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, v: &mut Validator) {
        v.name("name", &self.name);
        v.name("serviceNetwork", &self.service_network);
        match (&self.proxy, &self.proxy_group) {
            (Some(p), None) => v.name("proxy", p),
            (None, Some(g)) => v.name("proxyGroup", g),
            _ => v.error("exactly one of proxy and proxyGroup must be set"),
        }
    }

    fn references(&self) -> Vec<Reference> {
        vec![Reference {
            kind: Kind::ServiceNetwork,
            name: self.service_network.clone(),
            field: "serviceNetwork".into(),
        }]
    }
}
