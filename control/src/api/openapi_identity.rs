//! The OpenAPI entries of mesh identity: join tokens, the join, renewal,
//! HTTPS listener certificates and the CA.

use super::openapi::{error_response, json, path_param};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{PathsBuilder, Required, ResponseBuilder};

fn prop(o: ObjectBuilder, name: &str, t: Type, desc: &str) -> ObjectBuilder {
    o.property(
        name,
        ObjectBuilder::new().schema_type(t).description(Some(desc)),
    )
}

fn token_view() -> ObjectBuilder {
    let o = ObjectBuilder::new();
    let o = prop(o, "id", Type::String, "Public id");
    let o = prop(
        o,
        "token",
        Type::String,
        "The value: in the creation answer only, never again",
    );
    let o = prop(
        o,
        "account",
        Type::String,
        "Account a proxy joining with it belongs to",
    );
    let o = prop(o, "description", Type::String, "Free text");
    let o = prop(o, "createdAt", Type::String, "RFC 3339");
    let o = prop(o, "expiresAt", Type::String, "RFC 3339");
    let o = prop(
        o,
        "maxUses",
        Type::Integer,
        "Joins allowed; null: unlimited",
    );
    let o = prop(o, "uses", Type::Integer, "Joins made");
    prop(
        o,
        "status",
        Type::String,
        "active, expired, used_up or revoked",
    )
}

fn issued() -> ObjectBuilder {
    let o = ObjectBuilder::new();
    let o = prop(
        o,
        "identity",
        Type::String,
        "spiffe://<trust-domain>/account/<id>/workload/<name>",
    );
    let o = prop(o, "account", Type::String, "The proxy's account");
    let o = prop(o, "certificate", Type::String, "PEM certificate");
    let o = prop(o, "caBundle", Type::String, "PEM of the mesh CA");
    let o = prop(o, "notBefore", Type::String, "RFC 3339");
    let o = prop(o, "notAfter", Type::String, "RFC 3339");
    let o = prop(o, "notAfterUnix", Type::Integer, "Unix seconds");
    prop(o, "serial", Type::String, "Hex serial")
}

fn body(o: ObjectBuilder) -> Option<utoipa::openapi::request_body::RequestBody> {
    Some(
        RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content("application/json", json(o))
            .build(),
    )
}

/// Add `/v1/join-tokens`, `/v1/join-tokens/{id}`, `/v1/join`,
/// `/v1/proxies/{name}/renew`, `/v1/proxies/{name}/host-certificates` and
/// `/v1/ca`.
pub(super) fn add_identity(paths: PathsBuilder) -> PathsBuilder {
    let new_token = {
        let o = ObjectBuilder::new();
        let o = prop(o, "ttlSeconds", Type::Integer, "Lifetime, 1 s to 30 days");
        let o = prop(
            o,
            "maxUses",
            Type::Integer,
            "Joins allowed (at least 1); null or absent: unlimited",
        );
        prop(
            o,
            "description",
            Type::String,
            "Free text, at most 256 bytes",
        )
        .required("ttlSeconds")
    };
    let mut tokens = PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Identity")
            .operation_id(Some("createJoinToken"))
            .summary(Some(
                "Create a join token for the caller's account; its value is shown once",
            ))
            .request_body(body(new_token))
            .response(
                "201",
                ResponseBuilder::new()
                    .description("Created, with its value")
                    .content("application/json", json(token_view())),
            )
            .response("400", error_response("Invalid request (field errors)")),
    );
    tokens.merge_operations(PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Identity")
            .operation_id(Some("listJoinTokens"))
            .summary(Some("The caller's join tokens, without values"))
            .response(
                "200",
                ResponseBuilder::new().description("Tokens").content(
                    "application/json",
                    json(
                        ObjectBuilder::new()
                            .property("items", ArrayBuilder::new().items(token_view())),
                    ),
                ),
            ),
    ));
    let token = PathItem::new(
        HttpMethod::Delete,
        OperationBuilder::new()
            .tag("Identity")
            .operation_id(Some("revokeJoinToken"))
            .parameter(path_param("id", "The token's id"))
            .response("204", ResponseBuilder::new().description("Revoked"))
            .response(
                "404",
                error_response("No such token in the caller's account"),
            ),
    );
    let join_req = {
        let o = ObjectBuilder::new();
        let o = prop(
            o,
            "name",
            Type::String,
            "The proxy's name (the workload of its identity)",
        );
        prop(
            o,
            "csr",
            Type::String,
            "PEM PKCS#10 request made with the proxy's own key",
        )
        .required("name")
        .required("csr")
    };
    let join = PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Identity")
            .operation_id(Some("join"))
            .summary(Some("Authorization: Bearer <join token>. Sign the proxy's CSR for the token's account"))
            .request_body(body(join_req))
            .response("200", ResponseBuilder::new().description("The certificate").content("application/json", json(issued())))
            .response("400", error_response("Invalid name or CSR (field errors)"))
            .response("401", error_response("join_token_missing, join_token_unknown, join_token_expired, join_token_used_up or join_token_revoked")),
    );
    let renew = PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Identity")
            .operation_id(Some("renewCertificate"))
            .summary(Some("TLS with the proxy's current mesh certificate: a new certificate for the same identity"))
            .parameter(path_param("name", "The proxy's name (must be the certificate's)"))
            .request_body(body(prop(ObjectBuilder::new(), "csr", Type::String, "PEM PKCS#10 request").required("csr")))
            .response("200", ResponseBuilder::new().description("The new certificate").content("application/json", json(issued())))
            .response("401", error_response("Plain HTTP: proxy_certificate_required"))
            .response("403", error_response("The certificate is another proxy's")),
    );
    let host_req = {
        let o = ObjectBuilder::new();
        let o = prop(
            o,
            "host",
            Type::String,
            "A host name of a service with an HTTPS listener in the proxy's configuration",
        );
        prop(
            o,
            "csr",
            Type::String,
            "PEM PKCS#10 request of the proxy's key for that host",
        )
        .required("host")
        .required("csr")
    };
    let host_cert = {
        let o = ObjectBuilder::new();
        let o = prop(o, "host", Type::String, "The host name");
        let o = prop(
            o,
            "certificate",
            Type::String,
            "PEM certificate (DNS SAN, server auth)",
        );
        prop(o, "notAfterUnix", Type::Integer, "Unix seconds")
    };
    let host_certs = PathItem::new(
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("Identity")
            .operation_id(Some("issueHostCertificate"))
            .summary(Some("TLS with the proxy's mesh certificate: a certificate for an HTTPS listener's host name"))
            .parameter(path_param("name", "The proxy's name (must be the certificate's)"))
            .request_body(body(host_req))
            .response("200", ResponseBuilder::new().description("The certificate").content("application/json", json(host_cert)))
            .response("401", error_response("Plain HTTP: proxy_certificate_required"))
            .response("403", error_response("Another proxy's certificate, or no HTTPS listener answers to the host in this proxy's configuration")),
    );
    let ca = PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("Identity")
            .operation_id(Some("meshCa"))
            .summary(Some(
                "The mesh CA certificate (PEM), for clients of HTTPS listeners",
            ))
            .response(
                "200",
                ResponseBuilder::new().description("PEM").content(
                    "application/x-pem-file",
                    json(ObjectBuilder::new().schema_type(Type::String)),
                ),
            ),
    );
    paths
        .path("/v1/ca", ca)
        .path("/v1/proxies/{name}/host-certificates", host_certs)
        .path("/v1/join-tokens", tokens)
        .path("/v1/join-tokens/{id}", token)
        .path("/v1/join", join)
        .path("/v1/proxies/{name}/renew", renew)
}
