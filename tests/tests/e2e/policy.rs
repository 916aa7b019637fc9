//! Auth policies (issue 3, sections 5 and 6) end to end, through real
//! proxies and the REST API: policies written on a service and a service
//! network, pushed, enforced by the caller's proxy (a target it sends to
//! directly) and by the fronting proxy's inbound listener (a target
//! behind another proxy), with the reason in `x-trellis-error`,
//! `x-trellis-auth-denied` and the access log; invalid policies refused
//! with field paths; and `explain` agreeing with what the proxy did.
//!
//! Every caller here is a mesh workload: the application beside proxy
//! `p1` calls as `p1` (account `000000000000`), and the fronting proxy
//! `p2` sees `p1`'s certificate. Anonymous callers (clients of an HTTPS
//! listener) and callers of other accounts are in `cross_account.rs`.

use crate::harness::{Api, Control, PUSH_WAIT, Proxy, backend_of, forward, run_cli};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use trellis_tests::{BackendHandle, EchoBackend, HttpResponse, http1_request};

const HOST: &str = "api.net.trellis.internal";

/// Two backends: `direct` (no proxy fronts it: the caller's proxy p1
/// checks) and `behind` (fronted by p2: p2's inbound checks). Service
/// `api` in network `net`: `/fronted*` goes to `behind`, `/teapot` is a
/// fixed 418, everything else goes to `direct`. Access log of `api` in
/// `log`.
struct Mesh {
    cp: Control,
    p1: Proxy,
    p2: Proxy,
    _direct: BackendHandle,
    behind: BackendHandle,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mesh {
    async fn start() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let cp = Control::start_in(&dir.path().join("cp")).await;
        let api = cp.api();
        let direct = EchoBackend::start_named("direct").await.unwrap();
        let behind = EchoBackend::start_named("behind").await.unwrap();
        api.put("service-networks", json!({"name": "net"})).await;
        api.put(
            "target-groups",
            json!({"name": "direct", "port": direct.port(), "targets": [{"address": "127.0.0.1"}]}),
        )
        .await;
        api.put(
            "target-groups",
            json!({"name": "behind", "port": behind.port(),
                   "targets": [{"address": "127.0.0.1", "proxy": "p2"}]}),
        )
        .await;
        api.put("services", service(json!({}))).await;
        api.put(
            "service-associations",
            json!({"name": "api-net", "serviceNetwork": "net", "service": "api"}),
        )
        .await;
        let log = dir.path().join("access.log");
        api.put(
            "access-log-subscriptions",
            json!({"name": "api-log", "resource": {"service": "api"},
                   "destination": {"file": {"path": log.to_str().unwrap()}}}),
        )
        .await;
        let p2 = Proxy::start(Proxy::config("p2", &cp.url(), &dir.path().join("p2"), &[])).await;
        let p1 = Proxy::start(Proxy::config(
            "p1",
            &cp.url(),
            &dir.path().join("p1"),
            &["net"],
        ))
        .await;
        let m = Mesh {
            cp,
            p1,
            p2,
            _direct: direct,
            behind,
            log,
            _dir: dir,
        };
        m.wait(req("GET", "/x"), 200).await;
        m.wait(req("GET", "/fronted"), 200).await;
        m
    }

    fn api(&self) -> Api {
        self.cp.api()
    }

    async fn send(&self, r: &Req) -> HttpResponse {
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http1_request(
            self.p1.outbound,
            &r.host,
            &r.method,
            &r.path,
            &headers,
            Vec::new(),
        )
        .await
        .unwrap()
    }

    /// Send `r` until it is answered with `status` (a push in between).
    async fn wait(&self, r: Req, status: u16) -> HttpResponse {
        let what = format!("{} {}{} answered {status}", r.method, r.host, r.path);
        trellis_tests::eventually(&what, PUSH_WAIT, || {
            let r = r.clone();
            async move {
                let resp = self.send(&r).await;
                (resp.status.as_u16() == status).then_some(resp)
            }
        })
        .await
        .unwrap()
    }

    async fn stop(mut self) {
        self.p1.stop().await;
        self.p2.stop().await;
        self.cp.stop().await;
    }
}

/// Service `api` with `extra` fields (authType, authPolicy).
fn service(extra: Value) -> Value {
    let mut s = json!({"name": "api", "listeners": [{"name": "http",
    "defaultAction": forward("direct"),
    "rules": [
        {"name": "to-behind", "priority": 1, "match": {"path": {"type": "prefix", "value": "/fronted"}},
         "action": forward("behind")},
        {"name": "teapot", "priority": 2, "match": {"path": {"type": "exact", "value": "/teapot"}},
         "action": {"fixedResponse": {"statusCode": 418}}}
    ]}]});
    if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    s
}

fn network(extra: Value) -> Value {
    let mut n = json!({"name": "net"});
    if let (Some(n), Some(e)) = (n.as_object_mut(), extra.as_object()) {
        n.extend(e.clone());
    }
    n
}

fn policy(statements: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

const EVERYONE: &str = r#"{"AWS": ["*", "anonymous"]}"#;

fn everyone() -> Value {
    serde_json::from_str(EVERYONE).unwrap()
}

#[derive(Clone, Debug)]
struct Req {
    method: String,
    host: String,
    path: String,
    headers: Vec<(String, String)>,
}

fn req(method: &str, path: &str) -> Req {
    Req {
        method: method.into(),
        host: HOST.into(),
        path: path.into(),
        headers: Vec::new(),
    }
}

impl Req {
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    fn host(mut self, h: &str) -> Self {
        self.host = h.into();
        self
    }
}

fn denied(r: &HttpResponse, status: u16, reason: &str, why: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.header("x-trellis-error"), Some(reason), "{}", r.text());
    assert_eq!(r.header("x-trellis-auth-denied"), Some(why), "{}", r.text());
    let body = r.json().unwrap();
    assert_eq!(body["error"], reason);
    assert!(
        !r.text().contains("trellis:Invoke"),
        "never the policy text: {}",
        r.text()
    );
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn get_is_allowed_post_denied_at_either_proxy_then_the_policy_changes() {
    let m = Mesh::start().await;
    let api = m.api();
    api.put(
        "services",
        service(json!({"authType": "IAM", "authPolicy": policy(json!([
            {"Sid": "ReadAnyone", "Effect": "Allow", "Principal": everyone(), "Action": "trellis:Invoke",
             "Resource": "*"},
            {"Sid": "DenyPost", "Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke",
             "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestMethod": "POST"}}}
        ]))})),
    )
    .await;
    // Checked by p1 (direct target): the push makes POST 403.
    let r = m
        .wait(req("POST", "/x").header("x-request-id", "denied-1"), 403)
        .await;
    denied(&r, 403, "access_denied", "service; Statement[1] (DenyPost)");
    assert_eq!(m.send(&req("GET", "/x")).await.status, 200);
    // A fixed response is checked too.
    let r = m.send(&req("POST", "/teapot")).await;
    denied(&r, 403, "access_denied", "service; Statement[1] (DenyPost)");
    assert_eq!(m.send(&req("GET", "/teapot")).await.status, 418);

    // Checked by p2's inbound (fronted target): the same answer, and the
    // target never sees the request, nor the route headers on others.
    let r = m.wait(req("POST", "/fronted"), 403).await;
    denied(&r, 403, "access_denied", "service; Statement[1] (DenyPost)");
    let r = m
        .send(&req("POST", "/fronted/never").header("x-request-id", "denied-2"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        m.behind.requests_to("/fronted/never"),
        0,
        "denied before the target"
    );
    let r = m.send(&req("GET", "/fronted")).await;
    assert_eq!(backend_of(&r), "behind");
    let seen = r.json().unwrap();
    for h in [
        "x-trellis-service",
        "x-trellis-network",
        "x-trellis-port",
        "x-trellis-target",
    ] {
        assert!(seen["headers"].get(h).is_none(), "{h} reached the target");
    }

    // The access log line of the denied request says why.
    let line = trellis_tests::eventually("the denied request's log line", PUSH_WAIT, || async {
        log_lines(&m.log)
            .into_iter()
            // `wait` sent the same id until the push made it 403.
            .find(|l| l["requestId"] == "denied-1" && l["responseCode"] == 403)
    })
    .await
    .unwrap();
    assert_eq!(line["responseCode"], 403, "{line}");
    assert_eq!(
        line["authDeniedReason"], "service; Statement[1] (DenyPost)",
        "{line}"
    );
    assert_eq!(line["failureReason"], "ClientAccessDenied", "{line}");
    assert_eq!(line["trellisError"], "access_denied", "{line}");
    // The caller is p1's application, which calls as p1.
    assert_eq!(
        line["callerPrincipal"], "spiffe://trellis.local/account/000000000000/workload/p1",
        "{line}"
    );
    assert_eq!(line["callerAccount"], "000000000000", "{line}");
    // Refused by p2: p1's log says so all the same.
    let line = trellis_tests::eventually("the fronted denial's log line", PUSH_WAIT, || async {
        log_lines(&m.log)
            .into_iter()
            .find(|l| l["requestId"] == "denied-2")
    })
    .await
    .unwrap();
    assert_eq!(line["responseCode"], 403, "{line}");
    assert_eq!(line["targetGroup"], "behind", "{line}");
    assert_eq!(
        line["authDeniedReason"], "service; Statement[1] (DenyPost)",
        "{line}"
    );
    assert_eq!(line["failureReason"], "ClientAccessDenied", "{line}");
    assert_eq!(line["trellisError"], "access_denied", "{line}");

    // Lattice's PutAuthPolicy shape: POST allowed after the push.
    let r = api
        .call(
            "PUT",
            "/v1/services/api/auth-policy",
            &policy(
                json!([{"Sid": "All", "Effect": "Allow", "Principal": everyone(),
                "Action": "trellis:Invoke", "Resource": "api/*"}]),
            ),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (code, stored) = api.get("/v1/services/api/auth-policy").await;
    assert_eq!(code, 200);
    assert_eq!(stored["Statement"][0]["Sid"], "All");
    m.wait(req("POST", "/x"), 200).await;
    m.wait(req("POST", "/fronted"), 200).await;

    // IAM without a policy: everything denied, at both proxies.
    let r = api
        .call("DELETE", "/v1/services/api/auth-policy", &Value::Null, &[])
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(api.get("/v1/services/api/auth-policy").await.0, 404);
    let r = m.wait(req("GET", "/x"), 403).await;
    denied(&r, 403, "access_denied", "service; IAM without a policy");
    let r = m.wait(req("GET", "/fronted"), 403).await;
    denied(&r, 403, "access_denied", "service; IAM without a policy");
    m.stop().await;
}

#[tokio::test]
async fn conditions_levels_and_principals() {
    let m = Mesh::start().await;
    let api = m.api();
    // The network decides (service NONE): header, path and query conditions.
    api.put(
        "service-networks",
        network(json!({"authType": "IAM", "authPolicy": policy(json!([
            {"Sid": "Team", "Effect": "Allow", "Principal": {"AWS": "000000000000"}, "Action": "trellis:Invoke",
             "Resource": "*", "Condition": {
                "StringEquals": {"trellis:RequestHeader/x-team": "blue"},
                "StringLike": {"trellis:RequestPath": ["/v1/*", "/fronted*"]}}},
            {"Sid": "NoDebug", "Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke",
             "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestQueryString/debug": "1"}}}
        ]))})),
    )
    .await;
    let r = m.wait(req("GET", "/v1/a"), 403).await;
    denied(&r, 403, "access_denied", "network; no statement allows");
    m.wait(req("GET", "/fronted"), 403).await;
    let blue = |path: &str| req("GET", path).header("x-team", "blue");
    assert_eq!(m.send(&blue("/v1/a")).await.status, 200);
    assert_eq!(backend_of(&m.send(&blue("/fronted")).await), "behind");
    let r = m.send(&blue("/v2/a")).await;
    denied(&r, 403, "access_denied", "network; no statement allows");
    let r = m.send(&req("GET", "/v1/a").header("x-team", "red")).await;
    assert_eq!(r.status, 403);
    let r = m.send(&blue("/v1/a?debug=1")).await;
    denied(&r, 403, "access_denied", "network; Statement[1] (NoDebug)");
    let r = m.send(&blue("/fronted?debug=1")).await;
    denied(&r, 403, "access_denied", "network; Statement[1] (NoDebug)");

    // Both levels IAM: the service's policy names only another account
    // and another workload, so the caller the network admits is denied
    // by the service; naming its workload lets it in.
    api.put(
        "services",
        service(json!({"authType": "IAM", "authPolicy": policy(json!([
            {"Sid": "Others", "Effect": "Allow",
             "Principal": {"AWS": ["111122223333", "spiffe://trellis.local/account/000000000000/workload/p9"]},
             "Action": "trellis:Invoke", "Resource": "*"}
        ]))})),
    )
    .await;
    let r = m.wait(blue("/v1/a"), 403).await;
    denied(&r, 403, "access_denied", "service; no statement allows");
    let r = m.send(&blue("/fronted")).await;
    denied(&r, 403, "access_denied", "service; no statement allows");
    api.put(
        "services",
        service(json!({"authType": "IAM", "authPolicy": policy(json!([
            {"Sid": "P1", "Effect": "Allow",
             "Principal": {"AWS": "spiffe://trellis.local/account/000000000000/workload/p?"},
             "Action": "trellis:Invoke", "Resource": "*"}
        ]))})),
    )
    .await;
    m.wait(blue("/v1/a"), 200).await;
    assert_eq!(backend_of(&m.send(&blue("/fronted")).await), "behind");

    // Network NONE: its policy (still attached) is not checked at all.
    api.put(
        "services",
        service(json!({"authType": "IAM", "authPolicy": policy(json!([
            {"Effect": "Allow", "Principal": everyone(), "Action": "trellis:Invoke", "Resource": "*"}
        ]))})),
    )
    .await;
    let mut net = network(json!({"authType": "NONE"}));
    net["authPolicy"] = api.get("/v1/service-networks/net").await.1["authPolicy"].clone();
    assert!(net["authPolicy"].is_object());
    api.put("service-networks", net).await;
    m.wait(req("GET", "/v2/a?debug=1"), 200).await;
    m.wait(req("GET", "/fronted?debug=1"), 200).await;
    m.stop().await;
}

#[tokio::test]
async fn invalid_policies_are_refused_with_field_paths_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let api = cp.api();
    api.put("service-networks", json!({"name": "net"})).await;
    api.put("services", json!({"name": "api"})).await;
    let ok = |effect: &str, extra: Value| {
        let mut s = json!({"Effect": effect, "Principal": "*", "Action": "trellis:Invoke", "Resource": "*"});
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        policy(json!([s]))
    };
    let cases = [
        (ok("Permit", json!({})), "authPolicy.Statement[0].Effect"),
        (
            ok(
                "Allow",
                json!({"Condition": {"StringEquals": {"trellis:Bogus": "x"}}}),
            ),
            "authPolicy.Statement[0].Condition.StringEquals",
        ),
        (
            ok(
                "Allow",
                json!({"Resource": "arn:aws:vpc-lattice:us-east-1:1:service/x"}),
            ),
            "authPolicy.Statement[0].Resource",
        ),
        (
            json!({"Statement": [], "Padding": "x".repeat(11 * 1024)}),
            "authPolicy",
        ),
    ];
    for (bad, field) in cases {
        for (collection, body) in [
            (
                "services",
                json!({"name": "api", "authType": "IAM", "authPolicy": bad.clone()}),
            ),
            (
                "service-networks",
                json!({"name": "net", "authPolicy": bad.clone()}),
            ),
        ] {
            let r = api
                .call(
                    "PUT",
                    &format!("/v1/{collection}/{}", body["name"].as_str().unwrap()),
                    &body,
                    &[],
                )
                .await;
            assert_eq!(r.status, 400, "{collection} {field}: {}", r.text());
            let v = r.json().unwrap();
            assert_eq!(v["error"], "validation_failed");
            let fields: Vec<&str> = v["fieldErrors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert!(
                fields.iter().any(|f| f.starts_with(field)),
                "{field} not in {fields:?}"
            );
        }
        // The auth-policy route validates the same way.
        let r = api
            .call("PUT", "/v1/services/api/auth-policy", &bad, &[])
            .await;
        assert_eq!(r.status, 400, "{field}: {}", r.text());
        assert!(r.text().contains(field), "{field}: {}", r.text());
    }
    // Nothing was stored.
    let (_, svc) = api.get("/v1/services/api").await;
    assert!(svc.get("authPolicy").is_none(), "{svc}");
    assert_eq!(svc["authType"], "NONE");
    assert_eq!(svc["version"], 1, "{svc}");
    let (_, net) = api.get("/v1/service-networks/net").await;
    assert!(net.get("authPolicy").is_none(), "{net}");
    assert_eq!(api.get("/v1/services/api/auth-policy").await.0, 404);
    // Policy text is accepted too, as Lattice's API takes it.
    let text = ok("Allow", json!({})).to_string();
    let r = api
        .call(
            "PUT",
            "/v1/services/api",
            &json!({"name": "api", "authPolicy": text}),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cp.stop().await;
}

/// One row of the agreement table: a request, and what explain and the
/// proxy must both say.
async fn explain(api: Api, r: &Req) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let resp = api
        .call(
            "POST",
            "/v1/explain",
            &json!({"from": "spiffe://trellis.local/account/000000000000/workload/p1", "method": r.method,
                    "url": format!("http://{}{}", r.host, r.path), "headers": headers}),
            &[],
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json().unwrap()
}

#[tokio::test]
async fn explain_agrees_with_the_proxy() {
    let m = Mesh::start().await;
    let api = m.api();
    api.put(
        "service-networks",
        network(json!({"authType": "IAM", "authPolicy": policy(json!([
            {"Sid": "Open", "Effect": "Allow", "Principal": everyone(), "Action": "trellis:Invoke", "Resource": "*"},
            {"Sid": "NoAdmin", "Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke",
             "Resource": "*", "Condition": {"StringLike": {"trellis:RequestPath": "/admin*"}}}
        ]))})),
    )
    .await;
    api.put(
        "services",
        service(json!({"authType": "IAM", "authPolicy": policy(json!([
            {"Sid": "Reads", "Effect": "Allow", "Principal": {"AWS": "000000000000"}, "Action": "trellis:Invoke",
             "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestMethod": ["GET", "HEAD"]}}},
            {"Sid": "TeamWrites", "Effect": "Allow", "Principal": {"AWS": "000000000000"}, "Action": "trellis:Invoke",
             "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestHeader/x-team": "blue"}}},
            {"Sid": "Members", "Effect": "Allow", "Principal": {"AWS": "000000000000"}, "Action": "trellis:Invoke",
             "Resource": "api/members/*"},
            {"Sid": "NoDelete", "Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke",
             "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestMethod": "DELETE",
                                                              "trellis:RequestQueryString/force": "1"}}}
        ]))})),
    )
    .await;
    m.wait(req("GET", "/admin"), 403).await;
    m.wait(req("POST", "/x"), 403).await;
    m.wait(req("POST", "/fronted"), 403).await;

    let table = vec![
        req("GET", "/"),
        req("GET", "/x?y=1"),
        req("HEAD", "/x"),
        req("POST", "/x"),
        req("POST", "/x").header("x-team", "blue"),
        req("PUT", "/x").header("x-team", "red"),
        req("DELETE", "/x").header("x-team", "blue"),
        req("DELETE", "/x?force=1").header("x-team", "blue"),
        req("GET", "/admin"),
        req("GET", "/admin/users").header("x-team", "blue"),
        req("GET", "/fronted"),
        req("GET", "/fronted/a?b=c"),
        req("POST", "/fronted"),
        req("POST", "/fronted").header("x-team", "blue"),
        req("DELETE", "/fronted?force=1").header("x-team", "blue"),
        req("GET", "/teapot"),
        req("POST", "/teapot"),
        req("POST", "/teapot").header("x-team", "blue"),
        req("GET", "/members/1"),
        req("POST", "/members/1"),
        req("GET", "/").host("nobody.net.trellis.internal"),
        req("GET", "/").host("api.net.trellis.internal:8080"),
        req("GET", "/").host("API.Net.Trellis.Internal"),
    ];
    assert!(table.len() >= 20);
    let mut outcomes = std::collections::BTreeSet::new();
    for r in &table {
        let e = explain(api, r).await;
        let got = m.send(r).await;
        let label = format!("{} {}{} {:?}", r.method, r.host, r.path, r.headers);
        assert_eq!(
            got.status.as_u16() as u64,
            e["status"].as_u64().unwrap(),
            "{label}: explain {e} vs proxy {} {}",
            got.status,
            got.text()
        );
        let outcome = e["outcome"].as_str().unwrap().to_string();
        match outcome.as_str() {
            "forward" => {
                let groups = e["route"]["targetGroups"].as_array().unwrap();
                assert_eq!(groups.len(), 1, "{label}");
                if r.method != "HEAD" {
                    assert_eq!(backend_of(&got), groups[0]["name"], "{label}");
                }
            }
            "fixed_response" => assert_eq!(got.header("x-trellis-error"), Some("fixed_response")),
            reason => {
                assert_eq!(got.header("x-trellis-error"), Some(reason), "{label}");
                if let Some(summary) = got.header("x-trellis-auth-denied") {
                    assert_eq!(e["authorization"]["summary"], summary, "{label}");
                }
            }
        }
        outcomes.insert(outcome);
    }
    for o in [
        "forward",
        "fixed_response",
        "access_denied",
        // `unauthenticated` needs an anonymous caller: explain agrees with
        // an HTTPS listener's client in cross_account.rs.
        "no_service",
        "no_listener",
    ] {
        assert!(
            outcomes.contains(o),
            "the table never produced {o}: {outcomes:?}"
        );
    }

    // The trace names every statement's verdict at both levels.
    let e = explain(api, &req("DELETE", "/x?force=1").header("x-team", "blue")).await;
    assert_eq!(
        e["authorization"]["summary"],
        "service; Statement[3] (NoDelete)"
    );
    let levels = e["authorization"]["levels"].as_array().unwrap();
    assert_eq!(levels[0]["level"], "network");
    assert_eq!(levels[1]["level"], "service");
    assert_eq!(levels[1]["statements"][3]["applies"], true);
    assert_eq!(levels[1]["statements"][0]["applies"], false);
    assert!(
        levels[1]["statements"][0]["why"]
            .as_str()
            .unwrap()
            .contains("trellis:RequestMethod"),
        "{e}"
    );
    assert_eq!(e["route"]["rule"], Value::Null);
    assert_eq!(e["route"]["serviceNetwork"], "net");
    assert_eq!(e["view"]["proxy"], "p1");

    // A workload of the account is let into /members by its account.
    let r = api
        .call(
            "POST",
            "/v1/explain",
            &json!({"from": "spiffe://trellis.local/account/000000000000/workload/p1",
                    "url": format!("http://{HOST}/members/1"), "method": "POST"}),
            &[],
        )
        .await;
    let e = r.json().unwrap();
    assert_eq!(e["status"], 200, "{e}");
    assert_eq!(e["view"]["registered"], true, "p1's own view");
    assert_eq!(
        e["authorization"]["levels"][1]["statements"][2]["applies"],
        true
    );
    // Bad input names the field.
    let r = api
        .call(
            "POST",
            "/v1/explain",
            &json!({"from": "bob", "url": "http://x/"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json().unwrap()["fieldErrors"][0]["field"], "from");

    // The CLI prints the same verdict as a tree, and the API's JSON with -o json.
    let url = m.cp.url();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "trellis",
            "--server",
            &url,
            "explain",
            "--from",
            "anonymous",
            "--proxy",
            "p1",
            "--to",
            &format!("http://{HOST}/x?force=1"),
            "-X",
            "DELETE",
            "-H",
            "x-team: blue",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (code, text) = run_cli(args(&[])).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("=> 403 access_denied"), "{text}");
    assert!(
        text.contains("Statement[3] (NoDelete)  Deny  applies"),
        "{text}"
    );
    assert!(
        text.contains("route: service api, listener http :80"),
        "{text}"
    );
    let (code, text) = run_cli(args(&["-o", "json"])).await;
    assert_eq!(code, 0, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], 403);
    m.stop().await;
}

#[tokio::test]
async fn the_inbound_refuses_requests_that_skip_or_forge_the_route() {
    let m = Mesh::start().await;
    let api = m.api();
    api.put(
        "services",
        service(json!({"authType": "IAM", "authPolicy": policy(json!([
            {"Effect": "Allow", "Principal": {"AWS": "000000000000"}, "Action": "trellis:Invoke",
             "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"}}}
        ]))})),
    )
    .await;
    m.wait(req("POST", "/fronted"), 403).await;
    let svc = api.get("/v1/services/api").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let net = api.get("/v1/service-networks/net").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = format!("127.0.0.1:{}", m.behind.port());
    let inbound = m.p2.inbound.unwrap();
    // A workload of the account with its own mesh certificate, talking to
    // p2's inbound directly (as a rogue or buggy proxy would).
    let (_, mesh) = crate::harness::join_mesh(api, "rogue").await;
    let tls = std::sync::Arc::clone(&mesh.peer_h1);
    let call = |method: &'static str, path: &'static str, extra: Vec<(&'static str, String)>| {
        let target = target.clone();
        let tls = std::sync::Arc::clone(&tls);
        async move {
            let mut h: Vec<(&str, String)> = vec![("x-trellis-target", target)];
            h.extend(extra);
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            trellis_tests::https1_request(inbound, tls, HOST, method, path, &h, Vec::new())
                .await
                .unwrap()
        }
    };
    let route = |svc: &str, net: &str, port: &str| {
        vec![
            ("x-trellis-service", svc.to_string()),
            ("x-trellis-network", net.to_string()),
            ("x-trellis-port", port.to_string()),
        ]
    };
    // The honest route: the policy decides.
    let r = call("GET", "/fronted/ok", route(&svc, &net, "80")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call("POST", "/fronted/no", route(&svc, &net, "80")).await;
    assert_eq!(r.header("x-trellis-error"), Some("access_denied"));
    // Leaving the route out, or forging it, does not get past the policy.
    for (what, extra) in [
        ("no route", vec![]),
        ("unknown service", route("svc-0000000000000000", &net, "80")),
        ("unknown network", route(&svc, "sn-0000000000000000", "80")),
        ("wrong port", route(&svc, &net, "81")),
    ] {
        let r = call("POST", "/fronted/forged", extra).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert_eq!(r.header("x-trellis-error"), Some("access_denied"), "{what}");
    }
    assert_eq!(m.behind.requests_to("/fronted/forged"), 0);
    assert_eq!(m.behind.requests_to("/fronted/no"), 0);
    // Health checks of the target still pass without a route.
    let r = call(
        "GET",
        "/",
        vec![("user-agent", "Trellis-HealthChecker/1.0".to_string())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(
        "GET",
        "/other",
        vec![("user-agent", "Trellis-HealthChecker/1.0".to_string())],
    )
    .await;
    assert_eq!(r.status, 403, "only the health-check path: {}", r.text());
    m.stop().await;
}
