//! Config push under load, static stability (a proxy restarted while the
//! control plane is down serves from its last good snapshot), and
//! `trellis apply` idempotency.

use crate::harness::{
    Control, Proxy, backend_of, basic_mesh, forward, wait_for_backend, wait_in_sync,
};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use trellis_tests::{EchoBackend, Http1Connection};

#[tokio::test]
async fn two_hundred_config_changes_under_load_fail_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let (blue, green) = (
        EchoBackend::start_named("blue").await.unwrap(),
        EchoBackend::start_named("green").await.unwrap(),
    );
    let green2 = EchoBackend::start_named("green").await.unwrap();
    let host = basic_mesh(
        api,
        &[&blue, &green],
        json!({"name": "http", "defaultAction": forward("blue")}),
    )
    .await;
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_for_backend(&px, &host, "/", "blue").await;
    let first = wait_in_sync(api, "p1").await["appliedVersion"]
        .as_u64()
        .unwrap();

    // Two clients loop: one on a kept-alive HTTP/1.1 connection, one with
    // fresh connections; every answer must come from a backend.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for keep_alive in [true, false] {
        let (stop, ok, failed, host, out) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            host.clone(),
            px.outbound,
        );
        clients.push(tokio::spawn(async move {
            let mut conn = Http1Connection::connect(out).await.unwrap();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = if keep_alive {
                    conn.request(&host, "GET", "/load", &[], Vec::new()).await
                } else {
                    trellis_tests::http1_request(out, &host, "GET", "/load", &[], Vec::new()).await
                };
                match r {
                    Ok(r)
                        if r.status == 200
                            && matches!(backend_of(&r).as_str(), "blue" | "green") =>
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{other:?}").chars().take(300).collect::<String>());
                    }
                }
            }
            failures
        }));
    }

    // 200 changes: weights, rules added and removed and reordered, targets
    // added and removed — each leaves every request a healthy place to go.
    for i in 0..200u32 {
        let (wb, wg) = (i % 10 + 1, 10 - i % 10);
        let mut rules = vec![
            json!({"name": "green-path", "priority": 10 + i % 50, "match": {"path": {"type": "prefix", "value": "/load"}, "headers": [{"name": "x-never", "type": "exact", "value": "1"}]}, "action": forward("green")}),
        ];
        if i % 3 == 0 {
            rules.push(json!({"name": "extra", "priority": 60 + i % 30, "match": {"method": "DELETE"}, "action": {"fixedResponse": {"statusCode": 405}}}));
        }
        let listener = json!({"name": "http", "defaultAction": {"forward": {"targetGroups": [
            {"targetGroup": "blue", "weight": wb}, {"targetGroup": "green", "weight": wg}
        ]}}, "rules": rules});
        api.put(
            "services",
            json!({"name": "svc", "customDomain": "svc.example.com", "listeners": [listener]}),
        )
        .await;
        if i % 20 == 10 {
            // Add and remove a second green target (another backend process).
            let targets = if i % 40 == 10 {
                json!([{"address": "127.0.0.1"}, {"address": "127.0.0.1", "port": green2.port()}])
            } else {
                json!([{"address": "127.0.0.1"}])
            };
            api.put(
                "target-groups",
                json!({"name": "green", "port": green.port(), "targets": targets}),
            )
            .await;
        }
    }
    let last = wait_in_sync(api, "p1").await["appliedVersion"]
        .as_u64()
        .unwrap();
    // Let the clients run a little on the final config too.
    let settled = ok.load(Ordering::Relaxed);
    trellis_tests::wait_until(
        "more requests on the final config",
        crate::harness::PUSH_WAIT,
        || ok.load(Ordering::Relaxed) > settled + 50,
    )
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(
        last > first,
        "the proxy applied new versions ({first} -> {last})"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {failures:?}"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "the clients did run: {}",
        ok.load(Ordering::Relaxed)
    );
    px.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn a_proxy_restarted_while_the_control_plane_is_down_serves_from_disk_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let cp_addr = cp.addr;
    let (a, b) = (
        EchoBackend::start_named("a").await.unwrap(),
        EchoBackend::start_named("b").await.unwrap(),
    );
    let listener = json!({"name": "http", "defaultAction": forward("a"), "rules": [
        {"name": "b", "priority": 1, "match": {"path": {"type": "prefix", "value": "/b"}}, "action": forward("b")}
    ]});
    let host = basic_mesh(api, &[&a, &b], listener).await;
    let cfg = Proxy::config("p1", &cp.url(), &dir.path().join("p1"), &["net"]);
    let mut px = Proxy::start(cfg.clone()).await;
    wait_for_backend(&px, &host, "/b", "b").await;
    let version = wait_in_sync(api, "p1").await["appliedVersion"]
        .as_u64()
        .unwrap();

    // The control plane stops while the proxy is connected: the watch
    // stream ends and the shutdown does not wait for the proxy (a hang
    // here once kept SIGTERM from stopping trellis-control).
    tokio::time::timeout(std::time::Duration::from_secs(15), cp.stop())
        .await
        .expect("control-plane shutdown does not hang on a connected proxy");
    px.stop().await;

    // Control plane gone: the proxy starts from its last good snapshot.
    let mut px = Proxy::start(cfg.clone()).await;
    let ready = trellis_tests::http1_request(px.admin, "admin", "GET", "/ready", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(ready.status, 200, "ready from the snapshot on disk");
    assert_eq!(backend_of(&px.get(&host, "/").await), "a");
    assert_eq!(backend_of(&px.get(&host, "/b/x").await), "b");
    let config = trellis_tests::http1_request(px.admin, "admin", "GET", "/config", &[], Vec::new())
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["version"].as_u64(), Some(version));

    // The control plane comes back on its address: the proxy reconnects,
    // resumes and picks up changes made since.
    let mut cp = Control::start_at(&dir.path().join("cp"), cp_addr).await;
    let api = cp.api();
    wait_in_sync(api, "p1").await;
    api.put("services", json!({"name": "svc", "customDomain": "svc.example.com", "listeners": [{"name": "http", "defaultAction": forward("b")}]})).await;
    wait_for_backend(&px, &host, "/", "b").await;
    px.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn trellis_apply_twice_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        r#"
kind: Service
name: web
listeners:
  - name: http
    defaultAction:
      forward:
        targetGroups:
          - targetGroup: web-v1
            weight: 80
          - targetGroup: web-v2
            weight: 20
    rules:
      - name: canary
        priority: 1
        match:
          headers:
            - name: x-canary
              type: exact
              value: "true"
        action:
          forward:
            targetGroups:
              - targetGroup: web-v2
---
kind: ServiceNetwork
name: shop
---
kind: TargetGroup
name: web-v1
port: 8081
targets:
  - address: 127.0.0.1
---
kind: TargetGroup
name: web-v2
port: 8082
targets:
  - address: 127.0.0.1
---
kind: ServiceAssociation
name: web-shop
serviceNetwork: shop
service: web
"#,
    )
    .unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["trellis".to_string(), "--server".to_string(), cp.url()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let apply = args(&["apply", "-f", file.to_str().unwrap()]);
    let (code, first) = crate::harness::run_cli(apply.clone()).await;
    assert_eq!(code, 0, "{first}");
    assert!(first.contains("created"), "{first}");
    let versions = |api: crate::harness::Api| async move {
        let mut out = Vec::new();
        for c in [
            "service-networks",
            "target-groups",
            "services",
            "service-associations",
        ] {
            for item in api.get(&format!("/v1/{c}")).await.1["items"]
                .as_array()
                .unwrap()
            {
                out.push((
                    item["name"].as_str().unwrap().to_string(),
                    item["version"].as_u64().unwrap(),
                ));
            }
        }
        out.sort();
        out
    };
    let before = versions(cp.api()).await;
    assert_eq!(before.len(), 5);
    let (code, second) = crate::harness::run_cli(apply).await;
    assert_eq!(code, 0, "{second}");
    assert!(
        second.contains("unchanged")
            && !second.contains("created")
            && !second.contains("configured"),
        "{second}"
    );
    assert_eq!(versions(cp.api()).await, before, "no version moved");

    // An edit changes exactly one resource.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("port: 8082", "port: 8083");
    std::fs::write(&file, text).unwrap();
    let (code, third) =
        crate::harness::run_cli(args(&["apply", "-f", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{third}");
    let changed: Vec<_> = third
        .lines()
        .filter(|l| l.ends_with(" configured"))
        .collect();
    assert_eq!(changed, ["target-group/web-v2 configured"], "{third}");
    cp.stop().await;
}
