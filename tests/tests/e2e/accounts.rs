//! Accounts and API tokens: every REST route refuses callers without a
//! valid token and hides other accounts' data; tokens are shown once,
//! listed by id, revoked at once, and never logged.

use crate::harness::{Api, Control, run_cli};
use serde_json::{Value, json};
use std::path::Path;
use trellis_config::limits::DEFAULT_ACCOUNT;

/// The second account of these tests.
const B: &str = "222222222222";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn admin_token(data_dir: &Path) -> &'static str {
    let t = std::fs::read_to_string(data_dir.join("admin-token")).expect("admin-token file");
    leak(t.trim().to_string())
}

/// Create account `id` with the admin token and return a token of it.
async fn account_with_token(api: Api, admin: &'static str, id: &str) -> &'static str {
    let admin = api.with_token(Some(admin));
    let r = admin
        .call(
            "POST",
            "/v1/accounts",
            &json!({"id": id, "name": format!("acct-{id}")}),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin
        .call(
            "POST",
            "/v1/tokens",
            &json!({"account": id, "description": "e2e"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    leak(r.json().unwrap()["token"].as_str().unwrap().to_string())
}

/// Everything account A (the default account) owns, one of each kind.
struct Owned {
    /// `{key}` of each collection: the resource's id.
    ids: Vec<(String, String)>,
    /// The spec A wrote in each collection (a valid PUT body).
    specs: Vec<(String, Value)>,
    /// A's live second token's id (for `/v1/tokens/{id}`).
    token_id: String,
    /// A's revoked token.
    revoked: &'static str,
}

async fn populate(a: Api) -> Owned {
    let (mut ids, mut specs) = (Vec::new(), Vec::new());
    for (collection, spec) in [
        ("service-networks", json!({"name": "net"})),
        (
            "target-groups",
            json!({"name": "tg", "port": 8080, "targets": [{"address": "127.0.0.1"}]}),
        ),
        (
            "services",
            json!({"name": "svc", "listeners": [{"name": "http", "defaultAction": crate::harness::forward("tg")}]}),
        ),
        (
            "service-associations",
            json!({"name": "svc-net", "serviceNetwork": "net", "service": "svc"}),
        ),
        (
            "proxy-associations",
            json!({"name": "px-net", "serviceNetwork": "net", "proxyGroup": "nodes"}),
        ),
        (
            "access-log-subscriptions",
            json!({"name": "net-log", "resource": {"serviceNetwork": "net"}, "destination": {"file": {"path": "/dev/null"}}}),
        ),
    ] {
        specs.push((collection.to_string(), spec.clone()));
        let r = a.put(collection, spec).await;
        ids.push((
            collection.to_string(),
            r["id"].as_str().unwrap().to_string(),
        ));
    }
    // A's proxy, joined and registered over TLS with its certificate.
    let r =
        crate::harness::register_proxy(a, json!({"name": "pa", "serviceNetworks": ["net"]})).await;
    assert!(r.status.is_success(), "{}", r.text());
    let live = a
        .call("POST", "/v1/tokens", &json!({"description": "live"}), &[])
        .await;
    assert_eq!(live.status, 201, "{}", live.text());
    let token_id = live.json().unwrap()["id"].as_str().unwrap().to_string();
    let gone = a
        .call("POST", "/v1/tokens", &json!({}), &[])
        .await
        .json()
        .unwrap();
    let revoked = leak(gone["token"].as_str().unwrap().to_string());
    let r = a
        .call(
            "DELETE",
            &format!("/v1/tokens/{}", gone["id"].as_str().unwrap()),
            &Value::Null,
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    Owned {
        ids,
        specs,
        token_id,
        revoked,
    }
}

/// The documented path with A's ids in place of its parameters.
fn concrete(path: &str, owned: &Owned) -> String {
    let collection = path
        .trim_start_matches("/v1/")
        .split('/')
        .next()
        .unwrap_or_default();
    let key = owned
        .ids
        .iter()
        .find(|(c, _)| c == collection)
        .map(|(_, id)| id.as_str())
        .unwrap_or("none");
    let id = if collection == "tokens" {
        owned.token_id.as_str()
    } else {
        DEFAULT_ACCOUNT
    };
    path.replace("{key}", key)
        .replace("{name}", "pa")
        .replace("{id}", id)
        .replace("{account}", B)
}

/// A body that is valid for the route, so that a 401/404 is about the
/// caller and not about the input.
fn body_for(method: &str, path: &str, owned: &Owned) -> Value {
    if method == "PUT"
        && let Some((_, spec)) = owned
            .specs
            .iter()
            .find(|(c, _)| path.starts_with(&format!("/v1/{c}/")))
    {
        return spec.clone();
    }
    match (method, path) {
        ("POST", "/v1/accounts") => json!({"id": "333333333333", "name": "three"}),
        ("POST", "/v1/tokens") => json!({"description": "probe"}),
        ("POST", "/v1/service-networks/{key}/shares") => json!({"account": B}),
        ("PUT", p) if p.starts_with("/v1/service-networks/") => {
            json!({"name": "net", "description": "taken over"})
        }
        ("POST", "/v1/service-networks") => json!({"name": "b-net"}),
        ("PUT", p) if p.starts_with("/v1/target-groups/") => {
            json!({"name": "tg", "port": 9999, "targets": []})
        }
        ("POST", "/v1/target-groups") => json!({"name": "b-tg", "port": 9999, "targets": []}),
        ("PUT", p) if p.starts_with("/v1/services/") => json!({"name": "svc", "listeners": []}),
        ("POST", "/v1/services") => json!({"name": "b-svc", "listeners": []}),
        _ => json!({}),
    }
}

fn documented_operations(doc: &Value) -> Vec<(String, String, bool)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let open = op["security"] == json!([{}]);
            ops.push((method.to_uppercase(), path.clone(), open));
        }
    }
    ops
}

#[tokio::test]
async fn every_route_refuses_missing_bad_and_revoked_tokens_and_hides_other_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let a = cp.api();
    let admin = admin_token(dir.path());
    let b = a.with_token(Some(account_with_token(a, admin, B).await));
    let owned = populate(a).await;
    let a_ids: Vec<&str> = owned.ids.iter().map(|(_, id)| id.as_str()).collect();

    let (code, doc) = a.with_token(None).get("/v1/openapi.json").await;
    assert_eq!(code, 200, "the OpenAPI document needs no token");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let ops = documented_operations(&doc);
    let open: Vec<_> = ops
        .iter()
        .filter(|o| o.2)
        .map(|o| format!("{} {}", o.0, o.1))
        .collect();
    assert_eq!(
        open,
        [
            "GET /metrics",
            "GET /v1/ca",
            "POST /v1/join",
            "GET /v1/openapi.json",
            "POST /v1/proxies",
            "POST /v1/proxies/{name}/ack",
            "POST /v1/proxies/{name}/health",
            "POST /v1/proxies/{name}/host-certificates",
            "POST /v1/proxies/{name}/renew",
            "GET /v1/proxies/{name}/watch",
        ],
        "only the proxy-facing routes (a mesh certificate), the join (a join token), the CA, metrics and this document take no API token"
    );
    let guarded: Vec<_> = ops.iter().filter(|o| !o.2).collect();
    assert!(guarded.len() >= 30, "{} guarded operations", guarded.len());

    for (method, path, _) in guarded {
        let url = concrete(path, &owned);
        let body = body_for(method, path, &owned);
        let what = format!("{method} {url}");
        for (label, caller) in [
            ("no token", a.with_token(None)),
            (
                "a bad token",
                a.with_token(Some("trellis_tok-0000000000000000_deadbeef")),
            ),
            ("a revoked token", a.with_token(Some(owned.revoked))),
        ] {
            let r = caller.call(method, &url, &body, &[]).await;
            assert_eq!(r.status, 401, "{what} with {label}: {}", r.text());
            assert_eq!(
                r.headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{what} with {label}"
            );
            assert_eq!(r.json().unwrap()["error"], "unauthorized", "{what}");
        }
        // A malformed header is 401 too.
        let r = a
            .with_token(None)
            .call(
                method,
                &url,
                &body,
                &[("authorization", "Basic dXNlcjpwYXNz")],
            )
            .await;
        assert_eq!(r.status, 401, "{what} with Basic auth");

        // Another account: A's things do not exist for B.
        let r = b.call(method, &url, &body, &[]).await;
        let has_param = path.contains('{');
        let expected: &[u16] = match (method.as_str(), path.as_str()) {
            ("POST", "/v1/accounts") => &[403],
            _ if has_param => &[404],
            ("GET", _) => &[200],
            // B may create its own things or ask questions (POST routes
            // without a parameter); whatever it gets, it is not about A.
            _ => &[200, 201, 400],
        };
        assert!(
            expected.contains(&r.status.as_u16()),
            "{what} with B's token: {} {}",
            r.status,
            r.text()
        );
        if r.status.is_success() {
            let text = r.text();
            for id in &a_ids {
                assert!(!text.contains(id), "{what} shows B A's {id}: {text}");
            }
            assert!(
                !text.contains(DEFAULT_ACCOUNT),
                "{what} shows B account A: {text}"
            );
            assert!(
                !text.contains(&owned.token_id),
                "{what} shows B A's token: {text}"
            );
            assert!(!text.contains("\"pa\""), "{what} shows B A's proxy: {text}");
        }

        // The admin token manages accounts and tokens, nothing else.
        if !path.starts_with("/v1/accounts") && !path.starts_with("/v1/tokens") {
            let r = a
                .with_token(Some(admin))
                .call(method, &url, &body, &[])
                .await;
            assert_eq!(r.status, 403, "{what} with the admin token: {}", r.text());
            assert!(r.text().contains("account"), "{}", r.text());
        }
    }

    // Nothing of A's was changed or removed by B's attempts.
    for (collection, id) in &owned.ids {
        let (code, v) = a.get(&format!("/v1/{collection}/{id}")).await;
        assert_eq!(code, 200, "{collection}/{id}: {v}");
        assert_eq!(v["version"], 1, "{collection}/{id} was not changed: {v}");
    }
    let (code, v) = a.get("/v1/proxies/pa").await;
    assert_eq!(code, 200, "{v}");
    let (_, mine) = a.get("/v1/proxies").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    // B's lists hold only B's resources (it created some above).
    let (_, nets) = b.get("/v1/service-networks").await;
    let names: Vec<_> = nets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b-net"], "{nets}");
    assert!(
        nets["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["account"] == B)
    );
    cp.stop().await;
}

#[tokio::test]
async fn tokens_are_shown_once_listed_by_id_and_revoked_for_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let a = cp.api();
    let admin = a.with_token(Some(admin_token(dir.path())));

    // Accounts: the admin creates them (12 digits), accounts cannot.
    let r = admin
        .call(
            "POST",
            "/v1/accounts",
            &json!({"id": "12", "name": ""}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let fields: Vec<_> = r.json().unwrap()["fieldErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["id", "name"]);
    let r = admin
        .call(
            "POST",
            "/v1/accounts",
            &json!({"id": B, "name": "bee"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        admin
            .call(
                "POST",
                "/v1/accounts",
                &json!({"id": B, "name": "again"}),
                &[]
            )
            .await
            .status,
        409
    );
    assert_eq!(
        a.call(
            "POST",
            "/v1/accounts",
            &json!({"id": "444444444444", "name": "x"}),
            &[]
        )
        .await
        .status,
        403
    );
    let (_, all) = admin.get("/v1/accounts").await;
    let ids: Vec<_> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [DEFAULT_ACCOUNT, B]);
    let (_, own) = a.get("/v1/accounts").await;
    assert_eq!(own["items"].as_array().unwrap().len(), 1);
    assert_eq!(own["items"][0]["id"], DEFAULT_ACCOUNT);
    assert_eq!(a.get(&format!("/v1/accounts/{B}")).await.0, 404);
    assert_eq!(
        admin.get(&format!("/v1/accounts/{B}")).await.1["name"],
        "bee"
    );

    // The admin must name the account of a token; an account token
    // cannot make one for another account.
    assert_eq!(
        admin
            .call("POST", "/v1/tokens", &json!({}), &[])
            .await
            .status,
        400
    );
    assert_eq!(
        a.call("POST", "/v1/tokens", &json!({"account": B}), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        admin
            .call(
                "POST",
                "/v1/tokens",
                &json!({"account": "555555555555"}),
                &[]
            )
            .await
            .status,
        404
    );

    let r = admin
        .call(
            "POST",
            "/v1/tokens",
            &json!({"account": B, "description": "ci deploys"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json().unwrap();
    let token = leak(made["token"].as_str().unwrap().to_string());
    let id = made["id"].as_str().unwrap().to_string();
    assert!(token.starts_with(&format!("trellis_{id}_")), "{token}");
    assert_eq!(made["account"], B);
    let b = a.with_token(Some(token));

    // Listed by id and description, never by value or hash.
    let r = b.call("GET", "/v1/tokens", &Value::Null, &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        !text.contains(token) && !text.contains(&token[token.len() - 16..]),
        "{text}"
    );
    let list = r.json().unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["description"], "ci deploys");
    assert!(list["items"][0]["createdAt"].is_string());
    let keys: Vec<_> = list["items"][0]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["account", "createdAt", "description", "id"]);
    // A cannot see or revoke B's token.
    let (_, a_tokens) = a.get("/v1/tokens").await;
    assert!(!a_tokens.to_string().contains(&id), "{a_tokens}");
    assert_eq!(
        a.call("DELETE", &format!("/v1/tokens/{id}"), &Value::Null, &[])
            .await
            .status,
        404
    );
    assert_eq!(
        admin.get(&format!("/v1/tokens?account={B}")).await.1["items"][0]["id"],
        id.as_str()
    );

    // The token works, then is revoked: the very next request is 401.
    assert_eq!(
        b.put("service-networks", json!({"name": "bnet"})).await["account"],
        B
    );
    let r = b
        .call("DELETE", &format!("/v1/tokens/{id}"), &Value::Null, &[])
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = b
        .call("GET", "/v1/service-networks", &Value::Null, &[])
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        b.call("DELETE", &format!("/v1/tokens/{id}"), &Value::Null, &[])
            .await
            .status,
        401
    );
    assert_eq!(
        admin.get(&format!("/v1/tokens?account={B}")).await.1["items"],
        json!([])
    );
    cp.stop().await;
}

#[tokio::test]
async fn the_cli_sends_its_token_and_without_one_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let server = cp.url();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["trellis".to_string(), "--server".into(), server.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // run_cli passes the harness's token for this control plane.
    let (code, out) = run_cli(args(&["get", "service-networks"])).await;
    assert_eq!(code, 0, "{out}");
    // A bad token is refused with the reason.
    let (code, out) = run_cli(args(&["--token", "nope", "get", "service-networks"])).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("unknown or was revoked"), "{out}");

    // Accounts and tokens through the CLI: the admin makes an account and
    // its token; the value is printed once; listing shows the id only.
    let admin = admin_token(dir.path());
    let as_admin = |extra: &[&str]| {
        let mut v = args(&["--token", admin]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (code, out) = run_cli(as_admin(&["accounts", "create", B, "--name", "bee"])).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("account/{B} created\n"));
    let (code, out) = run_cli(as_admin(&[
        "tokens",
        "create",
        "--account",
        B,
        "--description",
        "cli",
    ]))
    .await;
    assert_eq!(code, 0, "{out}");
    let token = out.lines().nth(1).unwrap().to_string();
    assert!(token.starts_with("trellis_tok-"), "{out}");
    let id = token.split('_').nth(1).unwrap().to_string();
    let as_b = |extra: &[&str]| {
        let mut v = args(&["--token", &token]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (code, out) = run_cli(as_b(&["accounts", "get"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(B) && out.contains("bee") && !out.contains(DEFAULT_ACCOUNT),
        "{out}"
    );
    let (code, out) = run_cli(as_b(&["tokens", "get"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&id) && out.contains("cli") && !out.contains(&token),
        "{out}"
    );
    let (code, out) = run_cli(as_b(&["accounts", "create", "444444444444", "--name", "x"])).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("only the admin token creates accounts"),
        "{out}"
    );
    // Shares through the CLI: the default account shares a network with B.
    cp.api()
        .put("service-networks", json!({"name": "net"}))
        .await;
    let (code, out) = run_cli(args(&["shares", "create", "net", "--account", B])).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!(
            "service-network/net shared with {B}; it names the network sn-"
        )),
        "{out}"
    );
    let (code, out) = run_cli(args(&["shares", "get", "net"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with(B), "{out}");
    let (code, out) = run_cli(as_b(&["get", "service-networks"])).await;
    assert_eq!(code, 0, "{out}");
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("net ") && row.contains(DEFAULT_ACCOUNT),
        "B sees the shared network and its owner: {out}"
    );
    assert!(
        out.starts_with("NAME") && out.contains("SHARED BY"),
        "{out}"
    );
    let (code, out) = run_cli(args(&["shares", "revoke", "net", B])).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_cli(args(&["shares", "get", "net"])).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");

    let (code, out) = run_cli(as_b(&["tokens", "revoke", &id])).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_cli(as_b(&["tokens", "get"])).await;
    assert_ne!(code, 0, "a revoked token is refused: {out}");
    cp.stop().await;
}

/// Everything logged on this thread, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

// One thread: the control plane's handlers run where the capture is installed.
#[tokio::test(flavor = "current_thread")]
async fn no_token_value_appears_in_the_control_planes_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let api = cp.api().with_token(None);
    let admin = admin_token(dir.path());
    let b = api.with_token(Some(account_with_token(api, admin, B).await));
    let other = b
        .call("POST", "/v1/tokens", &json!({"description": "second"}), &[])
        .await
        .json()
        .unwrap();
    let second = leak(other["token"].as_str().unwrap().to_string());
    b.put("service-networks", json!({"name": "n"})).await;
    assert_eq!(
        api.with_token(Some(second))
            .get("/v1/service-networks")
            .await
            .0,
        200
    );
    b.call(
        "DELETE",
        &format!("/v1/tokens/{}", other["id"].as_str().unwrap()),
        &Value::Null,
        &[],
    )
    .await;
    assert_eq!(
        api.with_token(Some(second))
            .get("/v1/service-networks")
            .await
            .0,
        401
    );
    assert_eq!(
        api.with_token(Some("trellis_tok-1_guess"))
            .get("/v1/tokens")
            .await
            .0,
        401
    );
    assert_eq!(
        api.with_token(Some(admin))
            .get("/v1/service-networks")
            .await
            .0,
        403
    );
    cp.stop().await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("admin-token"),
        "the admin token's path is logged: {log}"
    );
    assert!(log.contains("API token created"), "{log}");
    assert!(log.contains("API token revoked"), "{log}");
    for secret in [admin, b.token.unwrap(), second, cp.token] {
        assert!(!log.contains(secret), "a token is in the log");
        let tail = &secret[secret.len() - 24..];
        assert!(!log.contains(tail), "part of a token is in the log");
    }
}
