//! Auth policies across accounts (issue 3, section 7, first test),
//! through real proxies with mTLS: account A owns service network `net`
//! and service `api` (whose target A's proxy `pa` fronts, so `pa`'s
//! inbound checks, with the certificate of the caller's proxy) and shares
//! `net` with account B; B's proxy `pb` calls `api`. Also the network
//! membership check of the inbound (an account the network is not shared
//! with gets nowhere through it, whatever the policies say), and an
//! anonymous client of an HTTPS listener against policies and `explain`.

use crate::harness::{Api, Control, PUSH_WAIT, Proxy, backend_of, forward, wait_in_sync};
use serde_json::{Value, json};
use std::sync::Arc;
use trellis_config::limits::DEFAULT_ACCOUNT;
use trellis_tests::{EchoBackend, Http1Connection, HttpResponse, http1_request};

const B: &str = "222222222222";
const HOST: &str = "api.net.trellis.internal";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The admin token the control plane made in its data dir.
fn admin_token(cp_dir: &std::path::Path) -> &'static str {
    leak(
        std::fs::read_to_string(cp_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_string(),
    )
}

/// A new account `id` and an API token of it.
async fn account(api: Api, admin: &'static str, id: &str) -> Api {
    let admin = api.with_token(Some(admin));
    let r = admin
        .call("POST", "/v1/accounts", &json!({"id": id, "name": id}), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t = admin
        .call("POST", "/v1/tokens", &json!({"account": id}), &[])
        .await
        .json()
        .unwrap();
    api.with_token(Some(leak(t["token"].as_str().unwrap().to_string())))
}

fn policy(statements: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn workload(account: &str, name: &str) -> String {
    format!("spiffe://trellis.local/account/{account}/workload/{name}")
}

/// Send `method /path` to `HOST` through `proxy` until it is answered
/// with `status` (a push in between).
async fn wait_status(proxy: &Proxy, method: &str, path: &str, status: u16) -> HttpResponse {
    let out = proxy.outbound;
    let what = format!("{method} {HOST}{path} answered {status}");
    trellis_tests::eventually(&what, PUSH_WAIT, || async move {
        let r = http1_request(out, HOST, method, path, &[], Vec::new())
            .await
            .ok()?;
        (r.status.as_u16() == status).then_some(r)
    })
    .await
    .unwrap()
}

/// Replace the policy of A's service `api` (Lattice's PutAuthPolicy).
async fn put_policy(a: Api, statements: Value) {
    let r = a
        .call(
            "PUT",
            "/v1/services/api/auth-policy",
            &policy(statements),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_sharee_is_allowed_by_account_and_workload_then_refused_once_the_share_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let a = cp.api();
    let b = account(a, admin_token(&dir.path().join("cp")), B).await;
    let backend = EchoBackend::start_named("a-api").await.unwrap();

    // A: network `net` (no check at that level), service `api` (IAM),
    // its target fronted by A's proxy `pa`.
    let net_id = a.put("service-networks", json!({"name": "net"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.put(
        "target-groups",
        json!({"name": "atg", "port": backend.port(),
               "targets": [{"address": "127.0.0.1", "proxy": "pa"}]}),
    )
    .await;
    let svc_id = a
        .put(
            "services",
            json!({"name": "api", "authType": "IAM",
               "authPolicy": policy(json!([
                   {"Sid": "ReadsFromB", "Effect": "Allow", "Principal": {"AWS": B},
                    "Action": "trellis:Invoke", "Resource": "*",
                    "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"}}},
                   {"Sid": "NoWritesFromB", "Effect": "Deny", "Principal": {"AWS": B},
                    "Action": "trellis:Invoke", "Resource": "*",
                    "Condition": {"StringEquals": {"trellis:RequestMethod": "POST"}}}
               ])),
               "listeners": [{"name": "http", "defaultAction": forward("atg")}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.put(
        "service-associations",
        json!({"name": "api-net", "serviceNetwork": "net", "service": "api"}),
    )
    .await;
    let shares = "/v1/service-networks/net/shares";
    let r = a.call("POST", shares, &json!({"account": B}), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());

    let url = cp.url();
    let mut pa = Proxy::start(Proxy::config("pa", &url, &dir.path().join("pa"), &[])).await;
    let mut cfg = Proxy::config("pb", &url, &dir.path().join("pb"), &[&net_id]);
    cfg.join_token = Some(crate::harness::join_token(b).await.into());
    let mut pb = Proxy::start(cfg).await;

    // GET: allowed by the statement naming B's account, checked by pa's
    // inbound with pb's certificate; the target learns who called.
    let r = wait_status(&pb, "GET", "/read", 200).await;
    assert_eq!(backend_of(&r), "a-api");
    let seen = r.json().unwrap();
    assert_eq!(
        seen["headers"]["x-trellis-caller-identity"],
        workload(B, "pb"),
        "{seen}"
    );
    assert_eq!(seen["headers"]["x-trellis-caller-account"], B, "{seen}");
    // POST: denied by the statement, named in the answer (not its text).
    let r = wait_status(&pb, "POST", "/write", 403).await;
    assert_eq!(r.header("x-trellis-error"), Some("access_denied"));
    assert_eq!(
        r.header("x-trellis-auth-denied"),
        Some("service; Statement[1] (NoWritesFromB)"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("trellis:RequestMethod"), "{}", r.text());
    assert_eq!(backend.requests_to("/write"), 0);

    // B can neither read nor change A's policies.
    let svc_policy = format!("/v1/services/{svc_id}/auth-policy");
    assert_eq!(b.get(&svc_policy).await.0, 404);
    assert_eq!(b.get("/v1/services/api/auth-policy").await.0, 404);
    let open = policy(json!([{"Effect": "Allow", "Principal": "*",
        "Action": "trellis:Invoke", "Resource": "*"}]));
    let r = b.call("PUT", &svc_policy, &open, &[]).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let net_policy = format!("/v1/service-networks/{net_id}/auth-policy");
    let r = b.call("PUT", &net_policy, &open, &[]).await;
    assert_eq!(
        r.status,
        403,
        "a sharee may not change the network: {}",
        r.text()
    );
    let r = b.call("DELETE", &net_policy, &Value::Null, &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(a.get("/v1/services/api").await.1["version"], 1);
    assert_eq!(a.get("/v1/service-networks/net").await.1["version"], 1);

    // A allows writes: POST passes after the push.
    put_policy(
        a,
        json!([{"Sid": "AllFromB", "Effect": "Allow", "Principal": {"AWS": B},
                "Action": "trellis:Invoke", "Resource": "*"}]),
    )
    .await;
    wait_status(&pb, "POST", "/write", 200).await;

    // A statement naming a workload: another of B's workloads does not
    // let pb in; pb's own does.
    let only = |who: String| {
        json!([{"Sid": "OneWorkload", "Effect": "Allow", "Principal": {"AWS": who},
                "Action": "trellis:Invoke", "Resource": "*"}])
    };
    put_policy(a, only(workload(B, "other"))).await;
    let r = wait_status(&pb, "POST", "/write", 403).await;
    assert_eq!(r.header("x-trellis-error"), Some("access_denied"));
    put_policy(a, only(workload(B, "pb"))).await;
    wait_status(&pb, "POST", "/write", 200).await;
    assert_eq!(pb.get(HOST, "/read").await.status, 200);

    // A workload of B talking mTLS to pa's inbound directly, naming the
    // route as pb's outbound does: admitted while the network is shared.
    let inbound = pa.inbound.unwrap();
    let target = format!("127.0.0.1:{}", backend.port());
    let (_, rogue) = crate::harness::join_mesh(b, "pb").await;
    let (_, own) = crate::harness::join_mesh(a, "a-tester").await;
    let direct = |mesh: &trellis_proxy::identity::MeshState, path: &'static str, routed: bool| {
        let tls = Arc::clone(&mesh.peer_h1);
        let mut h: Vec<(&'static str, String)> = vec![("x-trellis-target", target.clone())];
        if routed {
            h.push(("x-trellis-service", svc_id.clone()));
            h.push(("x-trellis-network", net_id.clone()));
            h.push(("x-trellis-port", "80".to_string()));
        }
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            trellis_tests::https1_request(inbound, tls, HOST, "GET", path, &h, Vec::new())
                .await
                .unwrap()
        }
    };
    let r = direct(&rogue, "/direct-shared", true).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Until pa has a push: the same request again and again.
    let direct_until = |mesh, path, routed, status: u16| {
        let direct = &direct;
        async move {
            let what = format!("{path} straight at pa's inbound answered {status}");
            trellis_tests::eventually(&what, PUSH_WAIT, || async move {
                let r = direct(mesh, path, routed).await;
                (r.status.as_u16() == status).then_some(r)
            })
            .await
            .unwrap()
        }
    };

    // Revoked: pb loses the network at the next push (404 no_service:
    // the host is in no network of its scope)...
    let r = a
        .call("DELETE", &format!("{shares}/{B}"), &Value::Null, &[])
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = wait_status(&pb, "GET", "/read", 404).await;
    assert_eq!(r.header("x-trellis-error"), Some("no_service"));
    // ... and a proxy of B that still claims the route is refused by pa's
    // inbound: B's account may not use `net` any more, though the policy
    // still names pb.
    direct_until(&rogue, "/direct-wait", true, 403).await;
    let r = direct(&rogue, "/direct-revoked", true).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("x-trellis-error"), Some("access_denied"));
    let body = r.json().unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(B) && message.contains(&net_id),
        "names the account and the network: {message}"
    );
    assert!(!message.contains("OneWorkload"), "{message}");
    assert_eq!(backend.requests_to("/direct-revoked"), 0);

    // The same holds for a service without any check (authType NONE):
    // the network membership is checked for every route claim, and a
    // request that names no route gets no further.
    a.put(
        "services",
        json!({"name": "api", "listeners": [{"name": "http", "defaultAction": forward("atg")}]}),
    )
    .await;
    // (A's own workload is let in once pa has the push.)
    direct_until(&own, "/open-a", true, 200).await;
    let r = direct(&own, "/open-a-unrouted", false).await;
    assert_eq!(r.status, 200, "A's own workload: {}", r.text());
    for (path, routed) in [("/open-b", true), ("/open-b-unrouted", false)] {
        let r = direct(&rogue, path, routed).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(r.header("x-trellis-error"), Some("access_denied"));
        assert!(r.text().contains(B), "{}", r.text());
        assert_eq!(backend.requests_to(path), 0);
    }
    // Shared again: B's proxy gets through once more, no policy needed.
    let r = a.call("POST", shares, &json!({"account": B}), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    wait_status(&pb, "POST", "/again", 200).await;

    pa.stop().await;
    pb.stop().await;
    cp.stop().await;
}

/// A TLS client outside the mesh: trusts the mesh CA, no certificate.
fn https_client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn an_anonymous_client_is_let_in_only_where_a_policy_names_anonymous_and_explain_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let backend = EchoBackend::start_named("secure").await.unwrap();
    api.put("service-networks", json!({"name": "net"})).await;
    // The target is fronted by `front`: p1's outbound forwards the
    // anonymous client's request there, and front's inbound checks it.
    api.put(
        "target-groups",
        json!({"name": "tg", "port": backend.port(),
               "targets": [{"address": "127.0.0.1", "proxy": "front"}]}),
    )
    .await;
    let service = |statements: Value| {
        json!({"name": "secure", "customDomain": "secure.example.com", "authType": "IAM",
               "authPolicy": policy(statements),
               "listeners": [{"name": "https", "protocol": "HTTPS", "defaultAction": forward("tg")}]})
    };
    // Only accounts named: A's, and another one.
    api.put(
        "services",
        service(json!([{"Sid": "Accounts", "Effect": "Allow",
            "Principal": {"AWS": [DEFAULT_ACCOUNT, B]},
            "Action": "trellis:Invoke", "Resource": "*"}])),
    )
    .await;
    api.put(
        "service-associations",
        json!({"name": "secure-net", "serviceNetwork": "net", "service": "secure"}),
    )
    .await;
    let log = dir.path().join("access.log");
    api.put(
        "access-log-subscriptions",
        json!({"name": "log", "resource": {"serviceNetwork": "net"},
               "destination": {"file": {"path": log.to_str().unwrap()}}}),
    )
    .await;
    let url = cp.url();
    let mut front =
        Proxy::start(Proxy::config("front", &url, &dir.path().join("front"), &[])).await;
    let mut p1 = Proxy::start(Proxy::config("p1", &url, &dir.path().join("p1"), &["net"])).await;
    wait_in_sync(api, "p1").await;
    let r = api.call("GET", "/v1/ca", &Value::Null, &[]).await;
    assert_eq!(r.status, 200);
    let client = https_client(&r.text());

    let outbound = p1.outbound;
    let send = |path: &'static str| {
        let client = Arc::clone(&client);
        async move {
            let mut c = Http1Connection::connect_tls_to(outbound, client, "secure.example.com")
                .await
                .ok()?;
            c.request("secure.example.com", "GET", path, &[], Vec::new())
                .await
                .ok()
        }
    };
    let explain = |path: &str| {
        let body = json!({"from": "anonymous", "proxy": "p1", "method": "GET",
                          "url": format!("https://secure.example.com{path}")});
        async move {
            let r = api.call("POST", "/v1/explain", &body, &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json().unwrap()
        }
    };
    let wait = |path: &'static str, status: u16| {
        let send = &send;
        async move {
            trellis_tests::eventually(
                &format!("GET {path} over HTTPS answered {status}"),
                PUSH_WAIT,
                || async move { send(path).await.filter(|r| r.status.as_u16() == status) },
            )
            .await
            .unwrap()
        }
    };

    // The policy names only accounts: the anonymous client is told to
    // authenticate (401), not forbidden.
    let r = wait("/accounts-only", 401).await;
    assert_eq!(r.header("x-trellis-error"), Some("unauthenticated"));
    let why = r.header("x-trellis-auth-denied").unwrap().to_string();
    assert!(why.starts_with("service"), "{why}");
    assert_eq!(backend.requests_to("/accounts-only"), 0);
    let e = explain("/accounts-only").await;
    assert_eq!(e["status"], 401, "{e}");
    assert_eq!(e["outcome"], "unauthenticated", "{e}");
    assert_eq!(e["authorization"]["summary"], why.as_str(), "{e}");

    // Naming `anonymous` lets it in.
    api.put(
        "services",
        service(json!([{"Sid": "Anyone", "Effect": "Allow",
            "Principal": {"AWS": ["anonymous"]},
            "Action": "trellis:Invoke", "Resource": "*"}])),
    )
    .await;
    let r = wait("/anonymous", 200).await;
    assert_eq!(backend_of(&r), "secure");
    let seen = r.json().unwrap();
    // The client spoke TLS to p1; front keeps the scheme p1 reported.
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");
    assert!(
        seen["headers"].get("x-trellis-caller-identity").is_none(),
        "an anonymous caller has no identity: {seen}"
    );
    let e = explain("/anonymous").await;
    assert_eq!(e["status"], 200, "{e}");
    assert_eq!(e["outcome"], "forward", "{e}");

    // p1's access log: the caller is anonymous (no account), allowed or not.
    let line_of = |path: &'static str, status: u16| {
        let log = log.clone();
        async move {
            trellis_tests::eventually(&format!("{path} logged"), PUSH_WAIT, || {
                let log = log.clone();
                async move {
                    std::fs::read_to_string(&log)
                        .ok()?
                        .lines()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .find(|l| l["requestPath"] == path && l["responseCode"] == status)
                }
            })
            .await
            .unwrap()
        }
    };
    for (path, status) in [("/accounts-only", 401), ("/anonymous", 200)] {
        let line = line_of(path, status).await;
        assert_eq!(line["callerPrincipal"], "anonymous", "{line}");
        assert_eq!(line["callerAccount"], Value::Null, "{line}");
    }

    p1.stop().await;
    front.stop().await;
    cp.stop().await;
}
