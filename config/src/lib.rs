//! The Trellis model, shared by the control plane, the proxy and the CLI.
//!
//! Everything a user writes (service networks, services with their listeners
//! and rules, target groups with their targets, associations) is a *spec*
//! here; the control plane stores specs wrapped in [`Resource`] with
//! server-assigned metadata, and compiles them into one [`Snapshot`] per
//! proxy. Validation never stops at the first problem: it returns every
//! problem with a field path so a user can fix a file in one pass.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod association;
mod defaults;
pub mod document;
pub mod error;
pub mod health;
pub mod identity;
pub mod kind;
pub mod limits;
pub mod listener;
pub mod network;
pub mod policy;
pub mod proxy;
pub mod resilience;
pub mod resource;
pub mod service;
pub mod snapshot;
pub mod target_group;
pub mod validate;

pub use access_log::{
    AccessLogDestination, AccessLogResource, AccessLogSubscriptionSpec, FileDestination,
};
pub use association::{ProxyAssociationSpec, ServiceAssociationSpec};
pub use document::{Document, DocumentError, parse_documents, spec_from_json};
pub use error::{FieldError, ValidationErrors};
pub use health::{HealthReport, TargetHealth, TargetState};
pub use kind::{Kind, Reference, Spec, UnknownKind};
pub use listener::{
    Action, FixedResponseAction, ForwardAction, HeaderMatch, ListenerProtocol, ListenerSpec,
    MatchType, PathMatch, PathMatchType, RuleMatch, RuleSpec, WeightedTargetGroup,
};
pub use network::{AuthType, ServiceNetworkSpec};
pub use policy::{CompiledPolicy, Decision, PolicyDocument, RequestFacts};
pub use proxy::{ProxyRegistration, ProxyStatus};
pub use resilience::{
    CircuitBreaker, ConnectionSettings, FastHealthCheck, OutlierDetection, RateLimit, RateLimitKey,
    RetryOn, RetryPolicy,
};
pub use resource::{Meta, Resource};
pub use service::{ServiceSpec, dns_name};
pub use snapshot::{
    Ack, FrontedService, Snapshot, SnapshotNetwork, SnapshotService, SnapshotTarget,
    SnapshotTargetGroup, WatchEvent,
};
pub use target_group::{
    Algorithm, HealthCheck, ProtocolVersion, Target, TargetGroupSpec, TargetProtocol,
};
