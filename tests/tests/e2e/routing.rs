//! Resources created over REST reach a proxy, and requests are routed by
//! host, path, method and header, split by weight, through real sockets.

use crate::harness::{
    Control, Proxy, backend_of, basic_mesh, forward, wait_for_backend, wait_in_sync,
};
use serde_json::json;
use trellis_tests::{EchoBackend, Http1Connection, http1_request, http2_request};

#[tokio::test]
async fn requests_are_routed_by_host_path_method_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let (a, b, c, d, e) = (
        EchoBackend::start_named("a").await.unwrap(),
        EchoBackend::start_named("b").await.unwrap(),
        EchoBackend::start_named("c").await.unwrap(),
        EchoBackend::start_named("d").await.unwrap(),
        EchoBackend::start_named("e").await.unwrap(),
    );
    let listener = json!({
        "name": "http",
        "defaultAction": forward("a"),
        "rules": [
            {"name": "exact", "priority": 10, "match": {"path": {"type": "exact", "value": "/exact"}}, "action": forward("b")},
            {"name": "prefix", "priority": 20, "match": {"path": {"type": "prefix", "value": "/API/", "caseSensitive": false}}, "action": forward("c")},
            {"name": "post", "priority": 30, "match": {"method": "POST"}, "action": forward("d")},
            {"name": "canary", "priority": 5, "match": {"headers": [{"name": "X-Canary", "type": "exact", "value": "TRUE"}]}, "action": forward("e")},
            {"name": "teapot", "priority": 40, "match": {"path": {"type": "prefix", "value": "/tea"}, "headers": [{"name": "accept", "type": "contains", "value": "pot"}]}, "action": {"fixedResponse": {"statusCode": 418}}}
        ]
    });
    let host = basic_mesh(api, &[&a, &b, &c, &d, &e], listener).await;
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_for_backend(&px, &host, "/", "a").await;
    wait_in_sync(api, "p1").await;

    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let (out, host) = (px.outbound, host.clone());
        async move {
            http1_request(out, &host, "GET", path, headers, Vec::new())
                .await
                .unwrap()
        }
    };
    assert_eq!(backend_of(&get("/", &[]).await), "a");
    assert_eq!(backend_of(&get("/exact", &[]).await), "b");
    assert_eq!(
        backend_of(&get("/exact/more", &[]).await),
        "a",
        "exact must not match a longer path"
    );
    assert_eq!(
        backend_of(&get("/Exact", &[]).await),
        "a",
        "exact is case-sensitive by default"
    );
    assert_eq!(
        backend_of(&get("/api/x?q=1", &[]).await),
        "c",
        "prefix, case-insensitive, query ignored"
    );
    assert_eq!(backend_of(&get("/Api/y", &[]).await), "c");
    assert_eq!(
        backend_of(&get("/exact", &[("x-canary", "true")]).await),
        "e",
        "priority 5 beats priority 10; value case-insensitive"
    );
    assert_eq!(
        get("/teapot", &[("accept", "a teapot please")])
            .await
            .status,
        418
    );
    assert_eq!(
        backend_of(&get("/teapot", &[("accept", "coffee")]).await),
        "a",
        "all conditions must hold"
    );
    let post = http1_request(px.outbound, &host, "POST", "/anything", &[], "body")
        .await
        .unwrap();
    assert_eq!(backend_of(&post), "d");
    assert_eq!(post.json().unwrap()["method"], "POST");

    // The custom domain and a Host with a port reach the same service.
    assert_eq!(backend_of(&px.get("svc.example.com", "/exact").await), "b");
    assert_eq!(
        backend_of(&px.get("SVC.NET.trellis.internal:80", "/").await),
        "a"
    );
    // HTTP/2 with prior knowledge routes the same way.
    let r = http2_request(px.outbound, &host, "GET", "/exact", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(backend_of(&r), "b");
    // An unknown host and an unknown port are 404s with reasons.
    let r = px.get("nope.net.trellis.internal", "/").await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-trellis-error")),
        (404, Some("no_service"))
    );
    let r = px.get(&format!("{host}:8081"), "/").await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-trellis-error")),
        (404, Some("no_listener"))
    );

    // The admin endpoint shows readiness and the applied snapshot.
    let ready = http1_request(px.admin, "admin", "GET", "/ready", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    let config = http1_request(px.admin, "admin", "GET", "/config", &[], Vec::new())
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["services"][0]["hosts"][0], host);
    px.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn a_70_30_split_lands_within_5_points_over_2000_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let (blue, green) = (
        EchoBackend::start_named("blue").await.unwrap(),
        EchoBackend::start_named("green").await.unwrap(),
    );
    let listener = json!({"name": "http", "defaultAction": {"forward": {"targetGroups": [
        {"targetGroup": "blue", "weight": 70}, {"targetGroup": "green", "weight": 30}
    ]}}});
    let host = basic_mesh(api, &[&blue, &green], listener).await;
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    crate::harness::wait_in_sync(api, "p1").await;
    let mut conn = Http1Connection::connect(px.outbound).await.unwrap();
    // Health checks also reach the backends (on "/"): count this test's path only.
    let (before_blue, before_green) = (blue.requests_to("/split"), green.requests_to("/split"));
    let mut counts = std::collections::HashMap::new();
    for _ in 0..2000 {
        let r = conn
            .request(&host, "GET", "/split", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        *counts.entry(backend_of(&r)).or_insert(0u32) += 1;
    }
    let blue_share = f64::from(counts["blue"]) / 20.0;
    assert!(
        (65.0..=75.0).contains(&blue_share),
        "blue got {blue_share}% ({counts:?})"
    );
    // The backends saw exactly what the client saw.
    assert_eq!(
        blue.requests_to("/split") - before_blue,
        u64::from(counts["blue"])
    );
    assert_eq!(
        green.requests_to("/split") - before_green,
        u64::from(counts["green"])
    );
    px.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn forwarded_headers_request_id_and_hop_by_hop_handling() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let a = EchoBackend::start_named("a").await.unwrap();
    let host = basic_mesh(
        api,
        &[&a],
        json!({"name": "http", "defaultAction": forward("a")}),
    )
    .await;
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_for_backend(&px, &host, "/", "a").await;

    let r = http1_request(
        px.outbound,
        &host,
        "GET",
        "/h",
        &[
            ("connection", "x-secret, keep-alive"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "x"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-kept", "yes"),
        ],
        Vec::new(),
    )
    .await
    .unwrap();
    let seen = r.json().unwrap();
    let h = &seen["headers"];
    assert!(
        h.get("x-secret").is_none(),
        "headers named by Connection are dropped: {h}"
    );
    assert!(
        h.get("keep-alive").is_none() && h.get("proxy-connection").is_none(),
        "{h}"
    );
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["host"], host, "the client's Host reaches the target");
    let generated = h["x-request-id"].as_str().unwrap().to_string();
    assert!(generated.len() >= 16);
    assert_eq!(
        r.header("x-request-id"),
        Some(generated.as_str()),
        "the response carries the id too"
    );

    let r = http1_request(
        px.outbound,
        &host,
        "GET",
        "/h",
        &[("x-request-id", "abc-123")],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.json().unwrap()["headers"]["x-request-id"], "abc-123");
    px.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn a_target_fronted_by_another_proxy_is_reached_through_its_inbound_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let local = EchoBackend::start_named("behind-p2").await.unwrap();
    api.put("service-networks", json!({"name": "net"})).await;
    api.put("target-groups", json!({"name": "fronted", "port": local.port(), "targets": [{"address": "127.0.0.1", "proxy": "p2"}]})).await;
    api.put("services", json!({"name": "svc", "listeners": [{"name": "http", "defaultAction": forward("fronted")}]})).await;
    api.put(
        "service-associations",
        json!({"name": "svc-net", "serviceNetwork": "net", "service": "svc"}),
    )
    .await;
    let mut p2 = Proxy::start(Proxy::config("p2", &cp.url(), &dir.path().join("p2"), &[])).await;
    let mut p1 = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_for_backend(&p1, "svc.net.trellis.internal", "/", "behind-p2").await;
    let r = p1.get("svc.net.trellis.internal", "/x").await;
    let seen = r.json().unwrap();
    assert!(
        seen["headers"].get("x-trellis-target").is_none(),
        "the hop header is stripped before the target"
    );
    assert_eq!(seen["headers"]["host"], "svc.net.trellis.internal");

    // p2's inbound listener forwards only to targets it fronts: no open
    // relay, even for a caller with a mesh certificate.
    let (_, mesh) = super::harness::join_mesh(api, "tester").await;
    let other = EchoBackend::start_named("other").await.unwrap();
    let target = other.addr().to_string();
    let r = trellis_tests::https1_request(
        p2.inbound.unwrap(),
        std::sync::Arc::clone(&mesh.peer_h1),
        "svc.net.trellis.internal",
        "GET",
        "/",
        &[("x-trellis-target", &target)],
        Vec::new(),
    )
    .await
    .unwrap();
    assert!(
        r.status.is_client_error(),
        "relay to an unfronted target: {}",
        r.status
    );
    assert!(r.header("x-trellis-error").is_some());
    assert_eq!(other.requests(), 0);
    let r = trellis_tests::https1_request(
        p2.inbound.unwrap(),
        std::sync::Arc::clone(&mesh.peer_h1),
        "svc.net.trellis.internal",
        "GET",
        "/",
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert!(r.status.is_client_error());
    p1.stop().await;
    p2.stop().await;
    cp.stop().await;
}
