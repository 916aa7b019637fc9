//! The OpenAPI 3.1 document, built from the same kinds and handlers the
//! router mounts; schemas come from the model's `ToSchema` derives.

use super::accounts::{NewAccount, NewToken};
use super::error::ErrorBody;
use crate::accounts::{Account, IssuedToken, TokenInfo};
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
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
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
    (paths, components) = add_accounts(paths, components);
    paths = add_auth_policy(paths, Kind::ServiceNetwork);
    paths = add_auth_policy(paths, Kind::Service);
    (paths, components) = add_explain(paths, components);
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

    let components = {
        let mut c = components;
        c.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("trellis_<token id>_<secret>")
                    .description(Some("An account's API token (POST /v1/tokens; `trellis dev` prints one), or the admin token for /v1/accounts and /v1/tokens"))
                    .build(),
            ),
        );
        c
    };
    let mut doc = OpenApiBuilder::new()
        .security(Some([SecurityRequirement::new(
            BEARER_SCHEME,
            Vec::<String>::new(),
        )]))
        .info(InfoBuilder::new().title("Trellis control plane").version(env!("CARGO_PKG_VERSION")).description(Some("Service networks, services, target groups and associations; proxy registration and config push.")).build())
        .paths(paths.build())
        .components(Some(components))
        .build();
    mark_security(&mut doc);
    doc
}

/// Name of the bearer-token security scheme.
pub const BEARER_SCHEME: &str = "bearerAuth";

/// Routes without a token get `security: [{}]`; the others a 401 reply.
fn mark_security(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("GET", &mut item.get),
            ("PUT", &mut item.put),
            ("POST", &mut item.post),
            ("DELETE", &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            if super::UNAUTHENTICATED_ROUTES.contains(&(method, path.as_str())) {
                op.security = Some(vec![SecurityRequirement::default()]);
            } else {
                op.responses.responses.insert(
                    "401".into(),
                    RefOr::T(
                        error_response(
                            "No token, or an unknown or revoked one (`WWW-Authenticate: Bearer`)",
                        )
                        .build(),
                    ),
                );
                op.responses.responses.entry("403".into()).or_insert_with(|| {
                    RefOr::T(error_response("The admin token on a resource route, or an action the caller's account may not take").build())
                });
            }
        }
    }
}

/// Accounts and API tokens.
fn add_accounts(
    paths: PathsBuilder,
    components: ComponentsBuilder,
) -> (PathsBuilder, ComponentsBuilder) {
    let body = |name: &str| {
        Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", json(Ref::from_schema_name(name)))
                .build(),
        )
    };
    let ok = |desc: &str, schema: RefOr<Schema>| {
        ResponseBuilder::new()
            .description(desc)
            .content("application/json", json(schema))
    };
    let items = |name: &str| -> RefOr<Schema> {
        ObjectBuilder::new()
            .property(
                "items",
                utoipa::openapi::schema::ArrayBuilder::new().items(Ref::from_schema_name(name)),
            )
            .required("items")
            .into()
    };
    let account_q = query_param(
        "account",
        "The account (required with the admin token; an account token acts on itself)",
        String::schema(),
    );
    let mut accounts = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Account")
            .operation_id(Some("listAccounts"))
            .summary(Some("Every account (admin), or the caller's own"))
            .response("200", ok("Accounts", items("Account"))),
    );
    accounts.merge_operations(PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Account")
            .operation_id(Some("createAccount"))
            .summary(Some("Create an account (admin token only)"))
            .request_body(body("NewAccount"))
            .response(
                "201",
                ok("Created", Ref::from_schema_name("Account").into()),
            )
            .response("400", error_response("Invalid id (12 digits) or name"))
            .response("409", error_response("The id is taken")),
    ));
    let account = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Account")
            .operation_id(Some("getAccount"))
            .parameter(path_param("id", "The account id"))
            .response(
                "200",
                ok("The account", Ref::from_schema_name("Account").into()),
            )
            .response(
                "404",
                error_response("No such account, or another account's"),
            ),
    );
    let mut tokens = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Token")
            .operation_id(Some("listTokens"))
            .summary(Some("The account's API tokens, by id (never the value)"))
            .parameter(account_q.clone())
            .response("200", ok("Tokens", items("TokenInfo"))),
    );
    tokens.merge_operations(PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Token")
            .operation_id(Some("createToken"))
            .summary(Some("Make an API token; its value is in this reply only"))
            .request_body(body("NewToken"))
            .response(
                "201",
                ok("Created", Ref::from_schema_name("IssuedToken").into()),
            )
            .response("400", error_response("Invalid input"))
            .response("404", error_response("No such account")),
    ));
    let token = PathItem::new(
        HttpMethod::Delete,
        OperationBuilder::new()
            .tag("Token")
            .operation_id(Some("revokeToken"))
            .summary(Some("Revoke a token: the next request with it gets 401"))
            .parameter(path_param("id", "The token id"))
            .parameter(account_q)
            .response("204", ResponseBuilder::new().description("Revoked"))
            .response("404", error_response("No such token in the account")),
    );
    let audit = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Audit")
            .operation_id(Some("listAudit"))
            .summary(Some("The caller account's audit records, newest first"))
            .description(Some("One record per change (resources, proxies forgotten, the account, its tokens), written in the same store transaction as the change."))
            .parameter(query_param("limit", "Page size 1-1000 (default 100)", usize::schema()))
            .parameter(query_param("pageToken", "nextPageToken of the previous page", String::schema()))
            .response("200", ok("A page", Ref::from_schema_name("AuditPage").into()))
            .response("400", error_response("Bad page size")),
    );
    let network = path_param("key", "The service network's id or name (the owner's)");
    let mut shares = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("ServiceNetwork")
            .operation_id(Some("listShares"))
            .summary(Some("The accounts the network is shared with (owner only)"))
            .parameter(network.clone())
            .response("200", ok("Shares", items("ShareRecord")))
            .response("404", error_response("No such network")),
    );
    shares.merge_operations(PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("ServiceNetwork")
            .operation_id(Some("shareNetwork"))
            .summary(Some("Share the network with an account (owner only)"))
            .description(Some("The sharee sees the network (by id, and in its list with `shared: true`), names it by id in its service associations, proxy associations and proxy registrations, and cannot change it (403). Revoking blocks new associations and drops the network from the sharee's proxies on the next push; the sharee's associations stay stored but are inactive until shared again."))
            .parameter(network.clone())
            .request_body(body("NewShare"))
            .response("201", ok("Shared", Ref::from_schema_name("ShareRecord").into()))
            .response("200", ok("Already shared", Ref::from_schema_name("ShareRecord").into()))
            .response("400", error_response("Invalid or unknown account"))
            .response("404", error_response("No such network")),
    ));
    let share_item = PathItem::new(
        HttpMethod::Delete,
        OperationBuilder::new()
            .tag("ServiceNetwork")
            .operation_id(Some("revokeShare"))
            .summary(Some(
                "Stop sharing the network with an account (owner only)",
            ))
            .parameter(network)
            .parameter(path_param("account", "The sharee's account id"))
            .response("204", ResponseBuilder::new().description("Revoked"))
            .response("404", error_response("No such network or share")),
    );
    let on_network = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("ServiceNetwork")
            .operation_id(Some("listNetworkAssociations"))
            .summary(Some(
                "Every service association on the network, of the owner and of its sharees",
            ))
            .parameter(path_param(
                "key",
                "The network's id or name (a sharee uses the id)",
            ))
            .response(
                "200",
                ok("Associations", items("ServiceAssociationResource")),
            )
            .response(
                "404",
                error_response("No such network (or not shared with you)"),
            ),
    );
    let paths = paths
        .path("/v1/service-networks/{key}/associations", on_network)
        .path("/v1/service-networks/{key}/shares", shares)
        .path("/v1/service-networks/{key}/shares/{account}", share_item)
        .path("/v1/audit", audit)
        .path("/v1/accounts", accounts)
        .path("/v1/accounts/{id}", account)
        .path("/v1/tokens", tokens)
        .path("/v1/tokens/{id}", token);
    let components = components
        .schema_from::<Account>()
        .schema_from::<TokenInfo>()
        .schema_from::<IssuedToken>()
        .schema_from::<NewAccount>()
        .schema_from::<NewToken>()
        .schema_from::<crate::share::ShareRecord>()
        .schema_from::<super::shares::NewShare>()
        .schema_from::<crate::audit::AuditPage>()
        .schema_from::<crate::audit::AuditRecord>()
        .schema_from::<crate::audit::Action>();
    (paths, components)
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

/// `GET/PUT/DELETE /v1/{collection}/{key}/auth-policy` of a network or
/// a service.
fn add_auth_policy(paths: PathsBuilder, kind: Kind) -> PathsBuilder {
    let words = kind.words();
    let key = || path_param("key", &format!("The {words}'s id or name"));
    let policy = || {
        json(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("An IAM-style auth policy document (at most 10 KB): Version, Statement[] with Sid, Effect (Allow|Deny), Principal, Action (trellis:Invoke), Resource, Condition")),
        )
    };
    let op = |id: &str| {
        OperationBuilder::new()
            .tag(kind.as_str())
            .operation_id(Some(format!("{id}{}AuthPolicy", kind.as_str())))
            .parameter(key())
    };
    let mut item = PathItem::new(
        HttpMethod::Get,
        op("get")
            .summary(Some(format!("The auth policy of a {words}")))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The policy document")
                    .content("application/json", policy()),
            )
            .response(
                "404",
                error_response(&format!("No such {words}, or it has no auth policy")),
            ),
    );
    item.merge_operations(PathItem::new(
        HttpMethod::Put,
        op("put")
            .summary(Some(format!("Attach or replace the auth policy of a {words}")))
            .description(Some("Validated like any write; problems are reported with field paths under `authPolicy.` and nothing is stored. Proxies get the change with the next push."))
            .request_body(Some(RequestBodyBuilder::new().required(Some(Required::True)).content("application/json", policy()).build()))
            .response("200", ResponseBuilder::new().description("Stored").content("application/json", policy()))
            .response("400", error_response("Invalid policy"))
            .response("404", error_response(&format!("No such {words}"))),
    ));
    item.merge_operations(PathItem::new(
        HttpMethod::Delete,
        op("delete")
            .summary(Some(format!("Detach the auth policy of a {words} (with auth type IAM, everything is then denied)")))
            .response("204", ResponseBuilder::new().description("Detached (or there was none)"))
            .response("404", error_response(&format!("No such {words}"))),
    ));
    paths.path(
        format!("/v1/{}/{{key}}/auth-policy", kind.collection()),
        item,
    )
}

/// `POST /v1/explain`.
fn add_explain(
    paths: PathsBuilder,
    components: ComponentsBuilder,
) -> (PathsBuilder, ComponentsBuilder) {
    use crate::explain::{ExplainRequest, ExplainResponse};
    let item = PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Explain")
            .operation_id(Some("explain"))
            .summary(Some("What a proxy would do with a request, and why"))
            .description(Some("Runs the proxy's own route table and auth-policy code on the view a proxy of the caller would get: the service, listener, rule and target groups the request takes, every policy statement's verdict at each level, and the status the proxy would answer (404 no_service/no_listener, 401 unauthenticated, 403 access_denied, a fixed response's, or 200 when forwarded)."))
            .request_body(Some(RequestBodyBuilder::new().required(Some(Required::True)).content("application/json", json(Ref::from_schema_name("ExplainRequest"))).build()))
            .response("200", ResponseBuilder::new().description("The explanation").content("application/json", json(Ref::from_schema_name("ExplainResponse"))))
            .response("400", error_response("Invalid request (field paths: from, url, method, headers.<name>)"))
            .response("404", error_response("The named proxy is not registered"))
            .response("422", error_response("The view cannot be prepared")),
    );
    let mut deps = Vec::new();
    ExplainRequest::schemas(&mut deps);
    ExplainResponse::schemas(&mut deps);
    let components = components
        .schema_from::<ExplainRequest>()
        .schema_from::<ExplainResponse>()
        .schemas_from_iter(deps);
    (paths.path("/v1/explain", item), components)
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
