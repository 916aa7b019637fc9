//! The kinds of resource and what every spec can tell about itself.

use crate::error::ValidationErrors;
use crate::validate::Validator;
use serde::{Serialize, de::DeserializeOwned};
use std::fmt;
use std::str::FromStr;

/// A kind of resource the control plane stores.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub enum Kind {
    /// [`crate::ServiceNetworkSpec`]
    ServiceNetwork,
    /// [`crate::TargetGroupSpec`]
    TargetGroup,
    /// [`crate::ServiceSpec`]
    Service,
    /// [`crate::ServiceAssociationSpec`]
    ServiceAssociation,
    /// [`crate::ProxyAssociationSpec`]
    ProxyAssociation,
    /// [`crate::AccessLogSubscriptionSpec`]
    AccessLogSubscription,
}

impl Kind {
    /// Every kind, in the order a multi-document file is applied so that
    /// references resolve (networks and target groups before the services
    /// that use them, associations, then access-log subscriptions, which
    /// name a network or a service).
    pub const ALL: [Kind; 6] = [
        Kind::ServiceNetwork,
        Kind::TargetGroup,
        Kind::Service,
        Kind::ServiceAssociation,
        Kind::ProxyAssociation,
        Kind::AccessLogSubscription,
    ];

    /// The REST collection under `/v1/`.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::ServiceNetwork => "service-networks",
            Kind::TargetGroup => "target-groups",
            Kind::Service => "services",
            Kind::ServiceAssociation => "service-associations",
            Kind::ProxyAssociation => "proxy-associations",
            Kind::AccessLogSubscription => "access-log-subscriptions",
        }
    }

    /// Prefix of server-assigned ids, e.g. `sn-0123456789abcdef`.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Kind::ServiceNetwork => "sn",
            Kind::TargetGroup => "tg",
            Kind::Service => "svc",
            Kind::ServiceAssociation => "sna",
            Kind::ProxyAssociation => "pxa",
            Kind::AccessLogSubscription => "als",
        }
    }

    /// The name used in documents (`kind: Service`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServiceNetwork => "ServiceNetwork",
            Kind::TargetGroup => "TargetGroup",
            Kind::Service => "Service",
            Kind::ServiceAssociation => "ServiceAssociation",
            Kind::ProxyAssociation => "ProxyAssociation",
            Kind::AccessLogSubscription => "AccessLogSubscription",
        }
    }

    /// Human words for messages ("target group").
    pub fn words(self) -> &'static str {
        match self {
            Kind::ServiceNetwork => "service network",
            Kind::TargetGroup => "target group",
            Kind::Service => "service",
            Kind::ServiceAssociation => "service association",
            Kind::ProxyAssociation => "proxy association",
            Kind::AccessLogSubscription => "access log subscription",
        }
    }

    /// Kind of a server-assigned id, judged by its prefix.
    pub fn of_id(id: &str) -> Option<Kind> {
        let prefix = id.split_once('-')?.0;
        Kind::ALL.into_iter().find(|k| k.id_prefix() == prefix)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown kind name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown kind '{0}'; expected one of: ServiceNetwork (network, sn), TargetGroup (targetgroup, tg), Service (service, svc), ServiceAssociation (service-association, sna), ProxyAssociation (proxy-association, pxa), AccessLogSubscription (access-log-subscription, access-log, als)"
)]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts the document name, the REST collection, and short CLI
    /// aliases, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.to_ascii_lowercase();
        Ok(match l.as_str() {
            "servicenetwork" | "service-network" | "service-networks" | "servicenetworks"
            | "network" | "networks" | "sn" => Kind::ServiceNetwork,
            "targetgroup" | "target-group" | "target-groups" | "targetgroups" | "tg" | "tgs" => {
                Kind::TargetGroup
            }
            "service" | "services" | "svc" => Kind::Service,
            "serviceassociation"
            | "service-association"
            | "service-associations"
            | "serviceassociations"
            | "sna" => Kind::ServiceAssociation,
            "proxyassociation" | "proxy-association" | "proxy-associations"
            | "proxyassociations" | "pxa" => Kind::ProxyAssociation,
            "accesslogsubscription"
            | "access-log-subscription"
            | "access-log-subscriptions"
            | "accesslogsubscriptions"
            | "access-log"
            | "access-logs"
            | "accesslog"
            | "accesslogs"
            | "als" => Kind::AccessLogSubscription,
            _ => return Err(UnknownKind(s.to_string())),
        })
    }
}

/// A reference from one resource to another, by name within the owner's
/// account, with the field that holds it (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Kind of the referenced resource.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Field path of the reference in the referring spec.
    pub field: String,
}

/// What every user-written resource spec provides.
pub trait Spec: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static {
    /// The kind this spec is.
    const KIND: Kind;

    /// The resource's name, unique per account and kind, immutable.
    fn name(&self) -> &str;

    /// Record every local problem (ranges, formats, uniqueness within the
    /// document). Cross-resource checks, such as references, are the
    /// control plane's.
    fn check(&self, v: &mut Validator);

    /// Resources this one refers to; they must exist when it is written,
    /// and cannot be deleted while it does.
    fn references(&self) -> Vec<Reference>;

    /// Fill server-side defaults that depend on other fields (called before
    /// validation and storage so that stored specs are complete and an
    /// idempotent re-apply compares equal).
    fn normalize(&mut self) {}

    /// Run [`Spec::check`] and collect the result.
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut v = Validator::new();
        self.check(&mut v);
        v.finish()
    }
}
