//! The REST API through real HTTP: validation, conflicts, optimistic
//! concurrency, pagination, durability and the OpenAPI document.

use crate::harness::{Api, Control, workspace_bin};
use serde_json::{Value, json};
use std::time::Duration;
use trellis_tests::{free_addr, wait_until_async};

fn tg(name: &str, port: u16) -> Value {
    json!({"name": name, "port": port, "targets": [{"address": "127.0.0.1"}]})
}

#[tokio::test]
async fn invalid_resources_are_rejected_with_field_paths_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let api = cp.api();
    api.put("target-groups", tg("tg1", 8080)).await;

    let bad = json!({
        "name": "api",
        "listeners": [{
            "name": "http",
            "defaultAction": {"forward": {"targetGroups": [{"targetGroup": "tg1", "weight": 1000}]}},
            "rules": [
                {"name": "a", "priority": 1, "match": {"method": "GET"}, "action": {"fixedResponse": {"statusCode": 200}}},
                {"name": "b", "priority": 1, "match": {"path": {"type": "prefix", "value": "nope"}}, "action": {"forward": {"targetGroups": [{"targetGroup": "tg1"}]}}}
            ]
        }]
    });
    let r = api.call("POST", "/v1/services", &bad, &[]).await;
    assert_eq!(r.status, 400);
    let body = r.json().unwrap();
    assert_eq!(body["error"], "validation_failed");
    let fields: Vec<&str> = body["fieldErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"listeners[0].defaultAction.forward.targetGroups[0].weight"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"listeners[0].rules[1].priority"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"listeners[0].rules[1].match.path.value"),
        "{fields:?}"
    );
    assert_eq!(api.get("/v1/services").await.1["items"], json!([]));

    // A reference to a missing target group is a field error too.
    let dangling = json!({"name": "api", "listeners": [{"name": "http", "defaultAction": {"forward": {"targetGroups": [{"targetGroup": "ghost"}]}}}]});
    let r = api.call("PUT", "/v1/services/api", &dangling, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json().unwrap()["fieldErrors"][0]["field"],
        "listeners[0].defaultAction.forward.targetGroups[0].targetGroup"
    );

    // An invalid update leaves the stored version as it was.
    let r = api
        .call(
            "PUT",
            "/v1/target-groups/tg1",
            &json!({"name": "tg1", "port": 0}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json().unwrap()["fieldErrors"][0]["field"], "port");
    let (_, stored) = api.get("/v1/target-groups/tg1").await;
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["port"], 8080);

    // Type errors and unknown fields name the field as well.
    let r = api
        .call(
            "POST",
            "/v1/target-groups",
            &json!({"name": "x", "port": "eighty"}),
            &[],
        )
        .await;
    assert_eq!(r.json().unwrap()["fieldErrors"][0]["field"], "port");
    let r = api
        .call(
            "POST",
            "/v1/target-groups",
            &json!({"name": "x", "port": 80, "prot": "HTTP"}),
            &[],
        )
        .await;
    assert!(r.text().contains("unknown field `prot`"), "{}", r.text());
    let r = api
        .call("POST", "/v1/target-groups", &Value::Null, &[])
        .await;
    assert_eq!(r.status, 400);
    cp.stop().await;
}

#[tokio::test]
async fn two_concurrent_updates_with_the_same_if_match_one_wins_the_other_gets_412() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let api = cp.api();
    api.put("target-groups", tg("tg1", 8080)).await;
    for round in 0..5u64 {
        let version = (round + 1).to_string();
        let if_match = format!("\"{version}\"");
        let a = json!({"name": "tg1", "port": 9000 + round * 2});
        let b = json!({"name": "tg1", "port": 9001 + round * 2});
        let h = [("if-match", if_match.as_str())];
        let (ra, rb) = tokio::join!(
            api.call("PUT", "/v1/target-groups/tg1", &a, &h),
            api.call("PUT", "/v1/target-groups/tg1", &b, &h)
        );
        let mut codes = [ra.status.as_u16(), rb.status.as_u16()];
        codes.sort();
        assert_eq!(
            codes,
            [200, 412],
            "round {round}: {} / {}",
            ra.text(),
            rb.text()
        );
        let winner = if ra.status == 200 { &ra } else { &rb };
        let (_, stored) = api.get("/v1/target-groups/tg1").await;
        assert_eq!(stored["version"], round + 2);
        assert_eq!(stored["port"], winner.json().unwrap()["port"]);
        assert_eq!(
            winner.header("etag"),
            Some(format!("\"{}\"", round + 2).as_str())
        );
    }
    // A stale If-Match on delete changes nothing either.
    let r = api
        .call(
            "DELETE",
            "/v1/target-groups/tg1",
            &Value::Null,
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, 412);
    assert_eq!(api.get("/v1/target-groups/tg1").await.0, 200);
    cp.stop().await;
}

#[tokio::test]
async fn conflicts_not_found_upsert_and_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let api = cp.api();
    let r = api
        .call("POST", "/v1/target-groups", &tg("tg1", 80), &[])
        .await;
    assert_eq!(r.status, 201);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/v1/target-groups/tg-")
    );
    let r = api
        .call("POST", "/v1/target-groups", &tg("tg1", 81), &[])
        .await;
    assert_eq!(r.status, 409);

    // Upsert: unchanged input writes nothing.
    let r = api
        .call("PUT", "/v1/target-groups/tg1", &tg("tg1", 80), &[])
        .await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-trellis-unchanged")),
        (200, Some("true"))
    );
    assert_eq!(r.json().unwrap()["version"], 1);
    // Names are immutable.
    let r = api
        .call("PUT", "/v1/target-groups/tg1", &tg("tg2", 80), &[])
        .await;
    assert_eq!(r.status, 400);

    // A target group used by a service cannot be deleted.
    api.put("services", json!({"name": "api", "listeners": [{"name": "http", "defaultAction": {"forward": {"targetGroups": [{"targetGroup": "tg1"}]}}}]})).await;
    let r = api
        .call("DELETE", "/v1/target-groups/tg1", &Value::Null, &[])
        .await;
    assert_eq!(r.status, 409);
    assert!(r.text().contains("service 'api'"), "{}", r.text());
    // Once the service lets go, it can.
    api.put("services", json!({"name": "api", "listeners": [{"name": "http", "defaultAction": {"fixedResponse": {"statusCode": 404}}}]})).await;
    assert_eq!(
        api.call("DELETE", "/v1/target-groups/tg1", &Value::Null, &[])
            .await
            .status,
        204
    );
    assert_eq!(api.get("/v1/target-groups/tg1").await.0, 404);
    assert_eq!(
        api.call("DELETE", "/v1/target-groups/tg1", &Value::Null, &[])
            .await
            .status,
        404
    );

    // Pagination walks every item once.
    for i in 0..5 {
        api.put("service-networks", json!({"name": format!("net{i}")}))
            .await;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/service-networks?limit=2&pageToken={t}"),
            None => "/v1/service-networks?limit=2".to_string(),
        };
        let (code, page) = api.get(&path).await;
        assert_eq!(code, 200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string()),
        );
        match page["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["net0", "net1", "net2", "net3", "net4"]);
    assert_eq!(api.get("/v1/service-networks?limit=0").await.0, 400);

    // A service can join a network only once; the association shows its DNS name.
    let a = api
        .put(
            "service-associations",
            json!({"name": "api-net0", "serviceNetwork": "net0", "service": "api"}),
        )
        .await;
    assert_eq!(a["status"]["dnsName"], "api.net0.trellis.internal");
    let r = api
        .call(
            "POST",
            "/v1/service-associations",
            &json!({"name": "again", "serviceNetwork": "net0", "service": "api"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 409);
    cp.stop().await;
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let api = cp.api();
    let (code, doc) = api.get("/v1/openapi.json").await;
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().unwrap();
    // Every route the server has is documented...
    for p in [
        "/v1/service-networks",
        "/v1/service-networks/{key}",
        "/v1/target-groups",
        "/v1/target-groups/{key}",
        "/v1/services",
        "/v1/services/{key}",
        "/v1/service-associations",
        "/v1/service-associations/{key}",
        "/v1/proxy-associations",
        "/v1/proxy-associations/{key}",
        "/v1/access-log-subscriptions",
        "/v1/access-log-subscriptions/{key}",
        "/v1/proxies",
        "/v1/proxies/{name}",
        "/v1/proxies/{name}/watch",
        "/v1/proxies/{name}/ack",
        "/v1/proxies/{name}/health",
        "/v1/target-groups/{key}/targets",
        "/v1/service-networks/{key}/auth-policy",
        "/v1/services/{key}/auth-policy",
        "/v1/explain",
        "/v1/openapi.json",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    // ...and every documented operation exists (no fallback 404, no 405).
    for (path, item) in paths {
        let concrete = path
            .replace("{key}", "does-not-exist")
            .replace("{name}", "does-not-exist");
        for method in item.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            if path.ends_with("/watch") {
                continue; // a stream; covered by the push tests
            }
            let r = api.call(&m, &concrete, &json!({}), &[]).await;
            assert_ne!(r.status, 405, "{m} {path}");
            if r.status == 404 {
                assert!(
                    !r.text().contains("no such endpoint"),
                    "{m} {path} is documented but not routed"
                );
            }
        }
    }
    // Schemas of every kind are there.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "ServiceSpec",
        "TargetGroupSpec",
        "ServiceNetworkSpec",
        "ServiceAssociationSpec",
        "ProxyAssociationSpec",
        "AccessLogSubscriptionSpec",
        "ErrorBody",
        "Snapshot",
        "ProxyStatus",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    assert_eq!(api.get("/v1/nope").await.0, 404);
    cp.stop().await;
}

#[tokio::test]
async fn resources_survive_a_restart_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    // Clean restart in process.
    let mut cp = Control::start_in(dir.path()).await;
    cp.api()
        .put("service-networks", json!({"name": "kept"}))
        .await;
    cp.stop().await;
    let mut cp = Control::start_in(dir.path()).await;
    assert_eq!(cp.api().get("/v1/service-networks/kept").await.0, 200);
    cp.stop().await;

    // SIGKILL of the real binary right after acknowledged writes.
    let addr = free_addr();
    let spawn = || {
        std::process::Command::new(workspace_bin("trellis-control"))
            .args(["--listen", &addr.to_string(), "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn trellis-control")
    };
    let api = Api { addr, ..cp.api() };
    let up = || async move { tokio::net::TcpStream::connect(addr).await.is_ok() };
    let mut child = spawn();
    wait_until_async("trellis-control is up", Duration::from_secs(20), up)
        .await
        .unwrap();
    for i in 0..20 {
        api.put("target-groups", tg(&format!("tg{i}"), 8000 + i))
            .await;
    }
    child.kill().unwrap(); // SIGKILL: no chance to flush anything
    child.wait().unwrap();
    let mut child = spawn();
    wait_until_async("trellis-control is up again", Duration::from_secs(20), up)
        .await
        .unwrap();
    let (_, page) = api.get("/v1/target-groups?limit=100").await;
    let mut names: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut want: Vec<_> = (0..20).map(|i| format!("tg{i}")).collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(api.get("/v1/service-networks/kept").await.0, 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
