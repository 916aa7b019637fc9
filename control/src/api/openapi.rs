//! The OpenAPI 3.1 document, built from the same kinds and handlers the
//! router mounts; schemas come from the model's `ToSchema` derives.

use super::error::ErrorBody;
use crate::target_health::TargetList;
use axum::Json;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use trellis_config::{
    AccessLogSubscriptionSpec, Ack, Meta, ProxyAssociationSpec, ProxyRegistration, ProxyStatus,
    ServiceAssociationSpec, ServiceNetworkSpec, ServiceSpec, Snapshot, Spec, TargetGroupSpec,
    WatchEvent,
};
use trellis_config::{HealthReport, Kind};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    RefOr, Required, ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

pub(super) fn json(schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

pub(super) fn error_response(desc: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(desc)
        .content("application/json", json(Ref::from_schema_name("ErrorBody")))
}

pub(super) fn path_param(name: &str, desc: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(desc))
        .schema(Some(String::schema()))
        .build()
}

fn header_param(name: &str, desc: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(desc))
        .schema(Some(String::schema()))
        .build()
}

fn query_param(name: &str, desc: &str, schema: RefOr<Schema>) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(desc))
        .schema(Some(schema))
        .build()
}

/// Schema name of the API shape of a kind: metadata + spec + kind + status.
fn resource_schema_name<S: Spec>() -> String {
    format!("{}Resource", S::KIND.as_str())
}

fn add_kind<S: Spec + ToSchema>(
    paths: PathsBuilder,
    components: ComponentsBuilder,
) -> (PathsBuilder, ComponentsBuilder) {
    let kind = S::KIND;
    let words = kind.words();
    let tag = kind.as_str();
    let spec_ref = Ref::from_schema_name(<S as ToSchema>::name());
    let res_ref = Ref::from_schema_name(resource_schema_name::<S>());
    let body = || {
        RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content("application/json", json(spec_ref.clone()))
            .build()
    };
    let one = |desc: &str| {
        ResponseBuilder::new()
            .description(desc)
            .content("application/json", json(res_ref.clone()))
    };
    let key = path_param("key", &format!("The {words}'s id or name"));
    let if_match = header_param(
        "If-Match",
        "Expected current version, e.g. \"3\"; 412 when stale",
    );

    let list_schema = ObjectBuilder::new()
        .property(
            "items",
            utoipa::openapi::schema::ArrayBuilder::new().items(res_ref.clone()),
        )
        .property(
            "nextPageToken",
            ObjectBuilder::new().schema_type(Type::String),
        )
        .required("items")
        .build();
    let list = OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(format!("list{tag}s")))
        .summary(Some(format!("List {words}s")))
        .parameter(query_param(
            "limit",
            "Page size 1-1000 (default 100)",
            usize::schema(),
        ))
        .parameter(query_param(
            "pageToken",
            "nextPageToken of the previous page",
            String::schema(),
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("A page")
                .content("application/json", json(list_schema)),
        )
        .response("400", error_response("Bad page size"));
    let create = OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(format!("create{tag}")))
        .summary(Some(format!("Create a {words}")))
        .request_body(Some(body()))
        .response("201", one("Created"))
        .response(
            "400",
            error_response("Invalid: every problem with its field path"),
        )
        .response("409", error_response("Name taken"));
    let get = OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(format!("get{tag}")))
        .summary(Some(format!("Get a {words}")))
        .parameter(key.clone())
        .response("200", one("The resource; ETag carries the version"))
        .response("404", error_response("Not found"));
    let put = OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(format!("put{tag}")))
        .summary(Some(format!("Create or update a {words}")))
        .description(Some("Upsert by name. Unchanged input writes nothing and sets `x-trellis-unchanged: true`. Names are immutable."))
        .parameter(key.clone())
        .parameter(if_match.clone())
        .request_body(Some(body()))
        .response("200", one("Updated, or unchanged"))
        .response("201", one("Created"))
        .response("400", error_response("Invalid: every problem with its field path"))
        .response("404", error_response("No resource with that id"))
        .response("409", error_response("Conflict"))
        .response("412", error_response("If-Match is stale"));
    let delete = OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(format!("delete{tag}")))
        .summary(Some(format!("Delete a {words}")))
        .parameter(key)
        .parameter(if_match)
        .response("204", ResponseBuilder::new().description("Deleted"))
        .response("404", error_response("Not found"))
        .response("409", error_response("Still referenced"))
        .response("412", error_response("If-Match is stale"));

    let collection = format!("/v1/{}", kind.collection());
    let mut coll_item = PathItem::new(HttpMethod::Get, list);
    coll_item.merge_operations(PathItem::new(HttpMethod::Post, create));
    let mut item = PathItem::new(HttpMethod::Get, get);
    item.merge_operations(PathItem::new(HttpMethod::Put, put));
    item.merge_operations(PathItem::new(HttpMethod::Delete, delete));
    let paths = paths
        .path(collection.clone(), coll_item)
        .path(format!("{collection}/{{key}}"), item);

    let kind_and_status = ObjectBuilder::new()
        .property(
            "kind",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([kind.as_str()])),
        )
        .property(
            "status",
            ObjectBuilder::new().description(Some("Server-computed facts, e.g. dnsName")),
        )
        .required("kind");
    let resource = AllOfBuilder::new()
        .item(Ref::from_schema_name("Meta"))
        .item(spec_ref)
        .item(kind_and_status)
        .build();
    let mut deps = Vec::new();
    S::schemas(&mut deps);
    let components = components
        .schema_from::<S>()
        .schemas_from_iter(deps)
        .schema(resource_schema_name::<S>(), Schema::AllOf(resource));
    (paths, components)
}

fn build() -> OpenApi {
    let (mut paths, mut components) = (PathsBuilder::new(), ComponentsBuilder::new());
    (paths, components) = add_kind::<ServiceNetworkSpec>(paths, components);
    (paths, components) = add_kind::<TargetGroupSpec>(paths, components);
    (paths, components) = add_kind::<ServiceSpec>(paths, components);
    (paths, components) = add_kind::<ServiceAssociationSpec>(paths, components);
    (paths, components) = add_kind::<ProxyAssociationSpec>(paths, components);
    (paths, components) = add_kind::<AccessLogSubscriptionSpec>(paths, components);

    let status_ref = Ref::from_schema_name("ProxyStatus");
    let name = path_param("name", "The proxy's name");
    let mut proxies = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Proxy")
            .operation_id(Some("listProxies"))
            .summary(Some("Every registered proxy and whether it is in sync"))
            .response(
                "200",
                ResponseBuilder::new().description("Proxies").content(
                    "application/json",
                    json(ObjectBuilder::new().property(
                        "items",
                        utoipa::openapi::schema::ArrayBuilder::new().items(status_ref.clone()),
                    )),
                ),
            ),
    );
    proxies.merge_operations(PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Proxy")
            .operation_id(Some("registerProxy"))
            .summary(Some("TLS with the proxy's mesh certificate (plain HTTP: 401). Register a proxy (again, on every reconnect); the account is the certificate's"))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        json(Ref::from_schema_name("ProxyRegistration")),
                    )
                    .build(),
            ))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("Registered again")
                    .content("application/json", json(status_ref.clone())),
            )
            .response(
                "201",
                ResponseBuilder::new()
                    .description("Registered")
                    .content("application/json", json(status_ref.clone())),
            )
            .response("400", error_response("Invalid registration")),
    ));
    let mut proxy = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Proxy")
            .operation_id(Some("getProxy"))
            .parameter(name.clone())
            .response(
                "200",
                ResponseBuilder::new()
                    .description("Status")
                    .content("application/json", json(status_ref)),
            )
            .response("404", error_response("Not registered")),
    );
    proxy.merge_operations(PathItem::new(
        HttpMethod::Delete,
        OperationBuilder::new()
            .tag("Proxy")
            .operation_id(Some("deleteProxy"))
            .parameter(name.clone())
            .response("204", ResponseBuilder::new().description("Forgotten"))
            .response("404", error_response("Not registered")),
    ));
    let watch = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Proxy")
            .operation_id(Some("watchProxy"))
            .summary(Some("Endless newline-delimited JSON stream of WatchEvent: snapshots as they change, heartbeats"))
            .parameter(name.clone())
            .parameter(query_param("version", "Snapshot version the proxy has; not sent again if current", u64::schema()))
            .response("200", ResponseBuilder::new().description("Stream of WatchEvent lines").content("application/x-ndjson", json(Ref::from_schema_name("WatchEvent"))))
            .response("404", error_response("Not registered")),
    );
    let ack = PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Proxy")
            .operation_id(Some("ackSnapshot"))
            .summary(Some(
                "Report the snapshot version applied (or why one was rejected)",
            ))
            .parameter(name)
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content("application/json", json(Ref::from_schema_name("Ack")))
                    .build(),
            ))
            .response("204", ResponseBuilder::new().description("Recorded"))
            .response("404", error_response("Not registered")),
    );
    let openapi_doc = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Meta")
            .operation_id(Some("openapi"))
            .response("200", ResponseBuilder::new().description("This document")),
    );
    let metrics = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Meta")
            .operation_id(Some("metrics"))
            .summary(Some("Prometheus metrics of this control-plane replica"))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("OpenMetrics text exposition")
                    .content(
                        crate::metrics::CONTENT_TYPE,
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                            .build(),
                    ),
            ),
    );
    (paths, components) = add_target_health(paths, components);
    paths = paths
        .path("/metrics", metrics)
        .path("/v1/proxies", proxies)
        .path("/v1/proxies/{name}", proxy)
        .path("/v1/proxies/{name}/watch", watch)
        .path("/v1/proxies/{name}/ack", ack)
        .path("/v1/openapi.json", openapi_doc);
    paths = super::openapi_identity::add_identity(paths);

    let mut deps = Vec::new();
    ProxyStatus::schemas(&mut deps);
    ProxyRegistration::schemas(&mut deps);
    Snapshot::schemas(&mut deps);
    WatchEvent::schemas(&mut deps);
    let components = components
        .schema_from::<Meta>()
        .schema_from::<ErrorBody>()
        .schema_from::<ProxyStatus>()
        .schema_from::<ProxyRegistration>()
        .schema_from::<Snapshot>()
        .schema_from::<WatchEvent>()
        .schema_from::<Ack>()
        .schemas_from_iter(deps)
        .build();

    OpenApiBuilder::new()
        .info(InfoBuilder::new().title("Trellis control plane").version(env!("CARGO_PKG_VERSION")).description(Some("Service networks, services, target groups and associations; proxy registration and config push.")).build())
        .paths(paths.build())
        .components(Some(components))
        .build()
}

/// Health reports from proxies and the targets of a target group with
/// their aggregated states.
fn add_target_health(
    paths: PathsBuilder,
    components: ComponentsBuilder,
) -> (PathsBuilder, ComponentsBuilder) {
    let report = PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Proxy")
            .operation_id(Some("reportTargetHealth"))
            .summary(Some("Report the health of every target the proxy checks"))
            .description(Some("The full current view, not a delta: it replaces the proxy's previous report. Reports live in the control plane's memory and count while the proxy is connected, and for a short time after it was last heard from."))
            .parameter(path_param("name", "The proxy's name"))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content("application/json", json(Ref::from_schema_name("HealthReport")))
                    .build(),
            ))
            .response("204", ResponseBuilder::new().description("Recorded"))
            .response("400", error_response("Not a HealthReport"))
            .response("404", error_response("Not registered")),
    );
    let targets = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag(Kind::TargetGroup.as_str())
            .operation_id(Some("listTargets"))
            .summary(Some("The group's targets with their health"))
            .description(Some("Registered targets, then those still draining after a deregistration. State, in this order: DRAINING if deregistered and draining; UNAVAILABLE if health checks are disabled or no proxy reports checking the target; UNHEALTHY if any reporting proxy says so (reason names that proxy); HEALTHY if all say so; else INITIAL. `reports` holds each proxy's own view."))
            .parameter(path_param("key", "The target group's id or name"))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The targets")
                    .content("application/json", json(Ref::from_schema_name("TargetList"))),
            )
            .response("404", error_response("No such target group")),
    );
    let paths = paths
        .path("/v1/proxies/{name}/health", report)
        .path("/v1/target-groups/{key}/targets", targets);
    let mut deps = Vec::new();
    HealthReport::schemas(&mut deps);
    TargetList::schemas(&mut deps);
    let components = components
        .schema_from::<HealthReport>()
        .schema_from::<TargetList>()
        .schemas_from_iter(deps);
    (paths, components)
}

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build)
}

/// `GET /v1/openapi.json`
pub async fn serve() -> impl IntoResponse {
    Json(document().clone())
}
