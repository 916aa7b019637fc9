//! `POST /v1/explain`: what a proxy would do with one request, and why.
//!
//! It runs the proxy's own code, not a copy: the snapshot comes from
//! [`crate::compile`] (the same scope a proxy of the caller gets), the
//! route from [`trellis_proxy::route::RouteTable`] and the policy verdict
//! from [`trellis_proxy::authz`], which the proxy's listeners call on
//! every request. trellis-control already depends on the trellis-proxy
//! library (the CLI starts proxies for `trellis dev`), so using its
//! public `route` and `authz` modules is the smaller and cleaner change
//! than moving the route table into trellis-config, which would drag
//! `http` header matching into the model crate and split the proxy's
//! request path across two crates.
//!
//! The steps, in the order the outbound listener takes them: host →
//! service (404 `no_service`), port → listener (404 `no_listener`),
//! rules by priority → action; auth policies at the network and service
//! level (401 `unauthenticated`, 403 `access_denied`); then the fixed
//! response or the forward to target groups (by weight). Rate limits,
//! health and circuit breakers are runtime state and are not predicted.

use crate::compile::{compile, proxy_account};
use crate::model::Model;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde::{Deserialize, Serialize};
use trellis_config::identity::WorkloadIdentity;
use trellis_config::policy::{ANONYMOUS, StatementMatch, StatementTrace};
use trellis_config::{FieldError, ProxyRegistration, ValidationErrors};
use trellis_proxy::authz::{self, CallerId, Headers, LevelTrace, Policies};
use trellis_proxy::route::{Route, RouteTable, split_host_port};

/// Name of the synthetic proxy whose view an explain without a proxy
/// uses (it never registers; any name would do).
pub const EXPLAIN_PROXY: &str = "explain";

/// `POST /v1/explain` body.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExplainRequest {
    /// The caller: a workload SPIFFE id
    /// (`spiffe://<td>/account/<id>/workload/<name>`) or `anonymous`.
    pub from: String,
    /// The URL as the application would call it through its proxy
    /// (`http://api.blue.trellis.internal/v1/x?y=1`).
    pub url: String,
    /// HTTP method; `GET` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request headers: a name and a value, or a list of values.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// Whose view to use: a registered proxy of the caller's account.
    /// Absent: the registered proxy named as `from`'s workload, else a
    /// proxy of `from`'s account with no service networks of its own
    /// (proxy associations decide); for `anonymous`, every service
    /// network of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

/// What the proxy would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainResponse {
    /// The status the proxy answers itself (404, 401, 403, a fixed
    /// response's), or 200 for a request forwarded to a target (whose own
    /// answer is then the client's).
    pub status: u16,
    /// `forward`, `fixed_response`, or the proxy's error reason
    /// (`no_service`, `no_listener`, `unauthenticated`, `access_denied`).
    pub outcome: String,
    /// One line for people.
    pub message: String,
    /// The caller as policies see it.
    pub caller: String,
    /// The proxy whose view was compiled, and the service networks in it.
    pub view: ExplainView,
    /// The route taken; absent for `no_service` / `no_listener`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<ExplainRoute>,
    /// The auth-policy verdict; absent when no service was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<ExplainAuthorization>,
}

/// Whose snapshot was used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainView {
    /// Proxy name (registered, or [`EXPLAIN_PROXY`]).
    pub proxy: String,
    /// Whether it is a registered proxy.
    pub registered: bool,
    /// Its account.
    pub account: String,
    /// Names of the service networks in its scope.
    pub service_networks: Vec<String>,
}

/// The route a request takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainRoute {
    /// Service id.
    pub service_id: String,
    /// Service name.
    pub service: String,
    /// Listener name.
    pub listener: String,
    /// Listener port addressed.
    pub port: u16,
    /// The matching rule; `None`: the listener's default action.
    pub rule: Option<String>,
    /// The network whose policy took part (named by the host, or the
    /// service's; `None` when no network level was checked).
    pub service_network: Option<String>,
    /// Status of a fixed-response action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_response: Option<u16>,
    /// Target groups of a forward action, with their weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_groups: Vec<ExplainTargetGroup>,
}

/// A target group of a forward action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainTargetGroup {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Relative weight (0: never picked).
    pub weight: u32,
    /// Where the policies are checked for requests to this group:
    /// `outbound` (some target is sent to directly) or `inbound` (every
    /// target is behind another proxy, which checks).
    pub checked_at: String,
}

/// The policy verdict with every statement's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainAuthorization {
    /// `allowed`, `denied` or `unauthenticated`.
    pub decision: String,
    /// What `x-trellis-auth-denied` would say (level; statement), or which
    /// statements allowed.
    pub summary: String,
    /// Networks first, then the service.
    pub levels: Vec<ExplainLevel>,
}

/// One level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainLevel {
    /// `network` or `service`.
    pub level: String,
    /// Its name.
    pub name: String,
    /// `NONE` or `IAM`.
    pub auth_type: trellis_config::AuthType,
    /// Whether a policy is attached.
    pub has_policy: bool,
    /// Each statement's verdict (none with `NONE` or without a policy).
    pub statements: Vec<ExplainStatement>,
}

/// One statement's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainStatement {
    /// Position, from 0.
    pub index: usize,
    /// Its Sid.
    pub sid: Option<String>,
    /// `Allow` or `Deny`.
    pub effect: String,
    /// Whether it applies to the request.
    pub applies: bool,
    /// Why not, if not (the first part that does not match).
    pub why: String,
}

/// Why a request cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Bad input, with field paths.
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// The named proxy is not registered in the caller's account.
    #[error("no proxy named '{0}' is registered in this account")]
    NoProxy(String),
    /// The view does not build (as a proxy would reject the snapshot).
    #[error("the view of proxy '{proxy}' cannot be prepared: {message}")]
    Snapshot {
        /// Proxy name.
        proxy: String,
        /// Why.
        message: String,
    },
}

fn invalid(field: &str, message: impl Into<String>) -> ExplainError {
    ExplainError::Invalid(ValidationErrors::one(field, message))
}

/// The registration whose view to compile, and whether it is registered.
fn view_of(
    model: &Model,
    account: &str,
    from: Option<&WorkloadIdentity>,
    proxy: Option<&str>,
) -> Result<(ProxyRegistration, bool), ExplainError> {
    if let Some(name) = proxy {
        return match model.proxies.get(name) {
            Some(reg) if proxy_account(reg) == account => Ok((reg.clone(), true)),
            _ => Err(ExplainError::NoProxy(name.to_string())),
        };
    }
    if let Some(id) = from {
        if let Some(reg) = model.proxies.get(id.workload())
            && proxy_account(reg) == id.account()
        {
            return Ok((reg.clone(), true));
        }
        return Ok((
            ProxyRegistration {
                name: id.workload().to_string(),
                account: Some(id.account().to_string()),
                group: None,
                inbound_address: None,
                service_networks: Vec::new(),
            },
            false,
        ));
    }
    let mut networks: Vec<String> = model
        .networks
        .by_id
        .values()
        .filter(|n| n.meta.account == account)
        .map(|n| n.spec.name.clone())
        .collect();
    networks.sort();
    Ok((
        ProxyRegistration {
            name: EXPLAIN_PROXY.into(),
            account: Some(account.to_string()),
            group: None,
            inbound_address: None,
            service_networks: networks,
        },
        false,
    ))
}

fn headers_of(
    input: &serde_json::Map<String, serde_json::Value>,
) -> Result<HeaderMap, ExplainError> {
    let mut out = HeaderMap::new();
    let mut errors = Vec::new();
    for (name, value) in input {
        let field = format!("headers.{name}");
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
            errors.push(FieldError {
                field,
                message: "not a valid header name".into(),
            });
            continue;
        };
        let values: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            match v.as_str().map(HeaderValue::from_str) {
                Some(Ok(v)) => {
                    out.append(n.clone(), v);
                }
                _ => errors.push(FieldError {
                    field: field.clone(),
                    message: "must be a string (or a list of strings) of visible ASCII".into(),
                }),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ExplainError::Invalid(ValidationErrors { errors }))
    }
}

/// Explain `req` for an API caller of `account`.
///
/// `from` must be `anonymous` or a workload of `account`: explaining
/// another account's workload would show that account's view.
pub fn explain(
    model: &Model,
    account: &str,
    req: &ExplainRequest,
) -> Result<ExplainResponse, ExplainError> {
    let from: Option<WorkloadIdentity> = if req.from == ANONYMOUS {
        None
    } else {
        let id: WorkloadIdentity =
            req.from
                .parse()
                .map_err(|e: trellis_config::identity::InvalidIdentity| {
                    invalid("from", format!("{e}; or 'anonymous'"))
                })?;
        if id.account() != account {
            return Err(invalid(
                "from",
                format!(
                    "names account {}; explain works for workloads of your own account ({account})",
                    id.account()
                ),
            ));
        }
        Some(id)
    };
    let uri: Uri = req
        .url
        .parse()
        .map_err(|e| invalid("url", format!("not a URL: {e}")))?;
    let Some(authority) = uri.authority() else {
        return Err(invalid(
            "url",
            "needs a host, e.g. http://api.blue.trellis.internal/path",
        ));
    };
    // What the application's client sends as Host: the authority, with
    // 443 made explicit for https (the route table reads no port as 80).
    let host = match (uri.scheme_str(), authority.port_u16()) {
        (Some("https"), None) => format!("{}:443", authority.host()),
        _ => authority.as_str().to_string(),
    };
    if split_host_port(&host).is_none() {
        return Err(invalid("url", format!("'{host}' is not a valid host")));
    }
    let method = match &req.method {
        None => Method::GET,
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| invalid("method", format!("'{m}' is not an HTTP method")))?,
    };
    let headers = headers_of(&req.headers)?;
    // Origin-form, as the proxy sees it.
    let origin: Uri = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()
        .map_err(|e| invalid("url", format!("bad path: {e}")))?;

    let (reg, registered) = view_of(model, account, from.as_ref(), req.proxy.as_deref())?;
    let snapshot = compile(model, &reg);
    let fail = |message: String| ExplainError::Snapshot {
        proxy: reg.name.clone(),
        message,
    };
    let routes = RouteTable::build(&snapshot).map_err(|e| fail(e.to_string()))?;
    let policies = Policies::build(&snapshot, &reg.name).map_err(|e| fail(e.to_string()))?;
    let view = ExplainView {
        proxy: reg.name.clone(),
        registered,
        account: proxy_account(&reg).to_string(),
        service_networks: snapshot.networks.iter().map(|n| n.name.clone()).collect(),
    };
    let caller = from.as_ref().map_or(ANONYMOUS.to_string(), |id| id.uri());
    let mut resp = ExplainResponse {
        status: 0,
        outcome: String::new(),
        message: String::new(),
        caller,
        view,
        route: None,
        authorization: None,
    };
    let port = split_host_port(&host).map_or(trellis_proxy::route::DEFAULT_PORT, |(_, p)| p);
    let (info, fixed, groups) = match routes.route(&host, &method, origin.path(), &headers) {
        Route::NoService => {
            resp.status = 404;
            resp.outcome = "no_service".into();
            resp.message = format!("no service answers to host '{host}' in this view");
            return Ok(resp);
        }
        Route::NoListener { port } => {
            resp.status = 404;
            resp.outcome = "no_listener".into();
            resp.message = format!("the service for host '{host}' has no listener on port {port}");
            return Ok(resp);
        }
        Route::Fixed { status, info } => (info, Some(status), None),
        Route::Forward { groups, info } => (info, None, Some(groups)),
    };
    let target_groups = groups
        .map(|g| {
            g.iter()
                .map(|(id, weight)| ExplainTargetGroup {
                    id: id.to_string(),
                    name: snapshot
                        .target_groups
                        .iter()
                        .find(|t| t.id == id)
                        .map_or_else(String::new, |t| t.name.clone()),
                    weight,
                    checked_at: if policies.checked_here(id) {
                        "outbound".into()
                    } else {
                        "inbound".into()
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let mut route = ExplainRoute {
        service_id: info.service_id.to_string(),
        service: info.service.to_string(),
        listener: info.listener.to_string(),
        port,
        rule: info.rule.map(str::to_string),
        service_network: None,
        fixed_response: fixed,
        target_groups,
    };
    if let Some(subject) = policies.outbound(info.service_id, &host, port) {
        let caller = CallerId::of(from.as_ref());
        let lent = Headers(&headers);
        let parts = authz::request_parts(&method, &origin, &lent, caller.as_ref(), None);
        let (verdict, levels) = subject.explain(&parts);
        route.service_network = verdict.network.map(str::to_string);
        let failure = verdict.failure(subject.service_name());
        resp.authorization = Some(ExplainAuthorization {
            decision: match verdict.decision.status() {
                None => "allowed",
                Some(401) => "unauthenticated",
                Some(_) => "denied",
            }
            .into(),
            summary: verdict.summary(),
            levels: levels.iter().map(level).collect(),
        });
        if let Some(f) = failure {
            resp.status = f.reason.status().as_u16();
            resp.outcome = f.reason.as_str().into();
            resp.message = f.message.into_owned();
            resp.route = Some(route);
            return Ok(resp);
        }
    }
    match fixed {
        Some(status) => {
            resp.status = status;
            resp.outcome = "fixed_response".into();
            resp.message = format!("answered with {status} by a fixed-response action");
        }
        None => {
            resp.status = 200;
            resp.outcome = "forward".into();
            resp.message = "forwarded to a target of a target group picked by weight; the target's answer is the client's".into();
        }
    }
    resp.route = Some(route);
    Ok(resp)
}

fn level(l: &LevelTrace<'_>) -> ExplainLevel {
    ExplainLevel {
        level: l.level.as_str().into(),
        name: l.name.into(),
        auth_type: l.auth_type,
        has_policy: l.has_policy,
        statements: l.statements.iter().map(statement).collect(),
    }
}

fn statement(t: &StatementTrace<'_>) -> ExplainStatement {
    let why = match t.outcome {
        StatementMatch::Applies => "applies".to_string(),
        StatementMatch::Principal => "the caller is not one of its principals".into(),
        StatementMatch::NeedsAuthentication => {
            "would apply to an authenticated caller; the caller is anonymous".into()
        }
        StatementMatch::Resource => "the service or path is not one of its resources".into(),
        StatementMatch::Condition { operator, key } => {
            format!("condition {operator} on {key} does not hold")
        }
    };
    ExplainStatement {
        index: t.statement.index,
        sid: t.statement.sid.map(str::to_string),
        effect: t.effect.as_str().into(),
        applies: t.outcome == StatementMatch::Applies,
        why,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::keys;
    use crate::store::KeyValue;
    use serde_json::{Value, json};
    use trellis_config::Kind;
    use trellis_config::limits::DEFAULT_ACCOUNT;

    fn res(kind: Kind, id: &str, account: &str, spec: Value) -> KeyValue {
        let v = json!({"meta": {"id": id, "account": account, "version": 1, "createdAt": id,
            "updatedAt": "t"}, "spec": spec});
        KeyValue {
            key: keys::resource(kind, id),
            value: serde_json::to_vec(&v).unwrap(),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    /// Networks `a` and `b` of the default account, one of another
    /// account; service `s` in `b` with a policy admitting only its own
    /// account; proxies `web` (in `a`) and `other` (in `b`).
    fn model() -> Model {
        let policy = json!({"Statement": [{"Sid": "Mine", "Effect": "Allow",
            "Principal": {"AWS": DEFAULT_ACCOUNT}, "Action": "trellis:Invoke", "Resource": "*"}]});
        let mut kvs = vec![
            res(
                Kind::ServiceNetwork,
                "sn-a",
                DEFAULT_ACCOUNT,
                json!({"name": "a"}),
            ),
            res(
                Kind::ServiceNetwork,
                "sn-b",
                DEFAULT_ACCOUNT,
                json!({"name": "b"}),
            ),
            res(
                Kind::ServiceNetwork,
                "sn-x",
                "999999999999",
                json!({"name": "x"}),
            ),
            res(
                Kind::Service,
                "svc-s",
                DEFAULT_ACCOUNT,
                json!({"name": "s", "authType": "IAM", "authPolicy": policy, "listeners": [
                    {"name": "l", "defaultAction": {"fixedResponse": {"statusCode": 204}}}]}),
            ),
            res(
                Kind::ServiceAssociation,
                "sna-1",
                DEFAULT_ACCOUNT,
                json!({"name": "s-b", "serviceNetwork": "b", "service": "s"}),
            ),
        ];
        for (name, net) in [("web", "a"), ("other", "b")] {
            kvs.push(KeyValue {
                key: keys::proxy(name),
                value: serde_json::to_vec(&json!({"name": name, "serviceNetworks": [net]}))
                    .unwrap(),
                create_revision: 1,
                mod_revision: 1,
            });
        }
        Model::load(&kvs, 1)
    }

    fn ask(from: &str, proxy: Option<&str>) -> Result<ExplainResponse, ExplainError> {
        explain(
            &model(),
            DEFAULT_ACCOUNT,
            &ExplainRequest {
                from: from.into(),
                url: "http://s.b.trellis.internal/".into(),
                method: None,
                headers: serde_json::Map::new(),
                proxy: proxy.map(str::to_string),
            },
        )
    }

    const ME: &str = "spiffe://trellis.local/account/000000000000/workload/other";

    #[test]
    fn anonymous_sees_every_network_of_the_account_and_gets_401() {
        let r = ask("anonymous", None).unwrap();
        assert_eq!(
            r.view.service_networks,
            ["a", "b"],
            "not the other account's"
        );
        assert!(!r.view.registered);
        assert_eq!((r.status, r.outcome.as_str()), (401, "unauthenticated"));
    }

    #[test]
    fn a_workload_gets_its_own_proxys_view_and_its_accounts_rights() {
        let r = ask(ME, None).unwrap();
        assert_eq!((r.view.proxy.as_str(), r.view.registered), ("other", true));
        assert_eq!((r.status, r.outcome.as_str()), (204, "fixed_response"));
        let a = r.authorization.unwrap();
        assert_eq!(a.decision, "allowed");
        assert!(a.levels[1].statements[0].applies);
        let r = ask(ME, Some("web")).unwrap();
        assert_eq!(r.view.proxy, "web");
        assert_eq!(
            (r.status, r.outcome.as_str()),
            (404, "no_service"),
            "web is not in b"
        );
        // Not registered: a proxy of that name, scoped by associations (none).
        let ghost = "spiffe://trellis.local/account/000000000000/workload/ghost";
        let r = ask(ghost, None).unwrap();
        assert_eq!((r.view.proxy.as_str(), r.view.registered), ("ghost", false));
        assert!(r.view.service_networks.is_empty());
    }

    #[test]
    fn bad_input_names_its_field() {
        let field = |r: Result<ExplainResponse, ExplainError>| match r {
            Err(ExplainError::Invalid(e)) => e.errors[0].field.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(field(ask("someone", None)), "from");
        assert_eq!(
            field(ask(
                "spiffe://trellis.local/account/999999999999/workload/w",
                None
            )),
            "from",
            "another account's workload"
        );
        assert!(matches!(
            ask("anonymous", Some("nobody")),
            Err(ExplainError::NoProxy(_))
        ));
    }
}
