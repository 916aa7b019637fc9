//! The control plane's side of deregistration draining and target health:
//! a removed target drains (in `GET .../targets` and in a real proxy's
//! snapshot) and then disappears on its own; health reports from proxies
//! are aggregated per target as documented in `trellis_control::target_health`.

use crate::harness::{Api, Control, PUSH_WAIT, Proxy, forward, proxy_call};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_tests::{eventually, http1_request, wait_until_async};

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Targets `127.0.0.1:port` for each port (nothing needs to listen: these
/// tests look at configuration, not traffic).
fn group(name: &str, ports: &[u16], delay: u32) -> Value {
    let targets: Vec<Value> = ports
        .iter()
        .map(|p| json!({"address": "127.0.0.1", "port": p}))
        .collect();
    json!({"name": name, "port": 80, "deregistrationDelaySeconds": delay, "targets": targets})
}

/// `GET /v1/target-groups/{tg}/targets` as `(port, state)` pairs.
async fn states(api: Api, tg: &str) -> Vec<(u64, String)> {
    let (code, v) = api.get(&format!("/v1/target-groups/{tg}/targets")).await;
    assert_eq!(code, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["port"].as_u64().unwrap(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The proxy's current snapshot targets of group `tg_id` as `(port, draining)`.
async fn snapshot_targets(proxy: &Proxy, tg_id: &str) -> Option<Vec<(u64, bool)>> {
    let r = http1_request(proxy.admin, "admin", "GET", "/config", &[], Vec::new())
        .await
        .ok()?;
    let snap = r.json().ok()?;
    let tg = snap["targetGroups"]
        .as_array()?
        .iter()
        .find(|g| g["id"] == tg_id)?
        .clone();
    Some(
        tg["targets"]
            .as_array()?
            .iter()
            .map(|t| (t["port"].as_u64().unwrap_or(0), t["draining"] == true))
            .collect(),
    )
}

async fn wait_snapshot(proxy: &Proxy, tg_id: &str, want: &[(u64, bool)], what: &str) {
    eventually(what, PUSH_WAIT, || async {
        (snapshot_targets(proxy, tg_id).await.as_deref() == Some(want)).then_some(())
    })
    .await
    .ok();
    let have = snapshot_targets(proxy, tg_id).await;
    assert_eq!(
        have.as_deref(),
        Some(want),
        "{what}: the proxy's /config differs"
    );
}

/// The `until` of the draining entry for `port` in a stored status.
fn until_of(res: &Value, port: u64) -> u64 {
    res["status"]["draining"]
        .as_array()
        .unwrap_or_else(|| panic!("no draining status in {res}"))
        .iter()
        .find(|d| d["port"] == port)
        .unwrap_or_else(|| panic!("port {port} is not draining in {res}"))["until"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_removed_target_drains_then_disappears_from_the_api_and_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("control")).await;
    let api = cp.api();
    api.put("service-networks", json!({"name": "net"})).await;
    let tg = api
        .put("target-groups", group("g", &[9001, 9002, 9003], 600))
        .await;
    let tg_id = tg["id"].as_str().unwrap().to_string();
    api.put(
        "services",
        json!({"name": "svc", "listeners": [{"name": "l", "defaultAction": forward("g")}]}),
    )
    .await;
    api.put(
        "service-associations",
        json!({"name": "a", "serviceNetwork": "net", "service": "svc"}),
    )
    .await;
    let mut proxy = Proxy::start(Proxy::config(
        "edge",
        &cp.url(),
        &dir.path().join("edge"),
        &["net"],
    ))
    .await;
    wait_snapshot(
        &proxy,
        &tg_id,
        &[(9001, false), (9002, false), (9003, false)],
        "all three targets pushed",
    )
    .await;

    // Deregister 9002 with a long delay: it drains, for the API and the proxy.
    let before = now_ms();
    let res = api
        .put("target-groups", group("g", &[9001, 9003], 600))
        .await;
    let after = now_ms();
    let until = until_of(&res, 9002);
    assert!(
        (before + 600_000..=after + 600_000).contains(&until),
        "deadline {until} is not 600 s after the update ({before}..{after})"
    );
    let s = states(api, "g").await;
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(s[2], (9002, "DRAINING".to_string()), "{s:?}");
    assert!(s[..2].iter().all(|(_, st)| st != "DRAINING"), "{s:?}");
    let (_, v) = api.get("/v1/target-groups/g/targets").await;
    assert!(
        v["items"][2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("DeregistrationInProgress"),
        "{v}"
    );
    assert!(v["items"][2]["drainingUntil"].is_string(), "{v}");
    wait_snapshot(
        &proxy,
        &tg_id,
        &[(9001, false), (9003, false), (9002, true)],
        "9002 pushed as draining",
    )
    .await;

    // Deregister 9003 with a delay of 1 s; lowering the delay also cuts
    // 9002's drain to 1 s. Both leave without any further write.
    let before = now_ms();
    let res = api.put("target-groups", group("g", &[9001], 1)).await;
    let after = now_ms();
    let mut first_deadline = u64::MAX;
    for port in [9002, 9003] {
        let until = until_of(&res, port);
        assert!(
            (before + 1000..=after + 1000).contains(&until),
            "deadline of {port}: {until} is not 1 s after the update ({before}..{after})"
        );
        first_deadline = first_deadline.min(until);
    }
    wait_snapshot(
        &proxy,
        &tg_id,
        &[(9001, false)],
        "drained targets gone from the proxy's snapshot",
    )
    .await;
    wait_until_async("drained targets gone from the API", PUSH_WAIT, || async {
        states(api, "g").await.len() == 1
    })
    .await
    .unwrap();
    assert!(
        now_ms() >= first_deadline,
        "gone before the deadline: the drain was not kept"
    );

    // Registering a draining target again ends its drain at once.
    api.put("target-groups", group("g", &[9001, 9002], 600))
        .await;
    api.put("target-groups", group("g", &[9001], 600)).await;
    api.put("target-groups", group("g", &[9001, 9002], 600))
        .await;
    let s = states(api, "g").await;
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(s.iter().all(|(_, st)| st != "DRAINING"), "{s:?}");

    // Deleting the group leaves nothing to drain.
    api.put(
        "services",
        json!({"name": "svc", "listeners": [{"name": "l", "defaultAction": {"fixedResponse": {"statusCode": 200}}}]}),
    )
    .await;
    let r = api
        .call("DELETE", "/v1/target-groups/g", &Value::Null, &[])
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(api.get("/v1/target-groups/g/targets").await.0, 404);

    proxy.stop().await;
    cp.stop().await;
}

/// The mesh identity of a hand-made proxy `name` (joined once per test run).
async fn identity(api: Api, name: &str) -> std::sync::Arc<trellis_proxy::identity::MeshState> {
    type Joined = std::collections::HashMap<
        (u16, String),
        std::sync::Arc<trellis_proxy::identity::MeshState>,
    >;
    static JOINED: std::sync::Mutex<Option<Joined>> = std::sync::Mutex::new(None);
    let key = (api.addr.port(), name.to_string());
    if let Some(m) = JOINED.lock().unwrap().get_or_insert_default().get(&key) {
        return std::sync::Arc::clone(m);
    }
    let (_, mesh) = crate::harness::join_mesh(api, name).await;
    let mesh = std::sync::Arc::new(mesh);
    JOINED
        .lock()
        .unwrap()
        .get_or_insert_default()
        .insert(key, std::sync::Arc::clone(&mesh));
    mesh
}

/// Register a proxy by hand, with its mesh certificate (no watch stream:
/// its reports count for a while after each contact).
async fn register(api: Api, name: &str) {
    let mesh = identity(api, name).await;
    let r = proxy_call(api, &mesh, "POST", "/v1/proxies", &json!({"name": name})).await;
    assert!(r.status.is_success(), "{} {}", r.status, r.text());
}

async fn report(api: Api, proxy: &str, targets: Value) -> u16 {
    report_raw(api, proxy, json!({"targets": targets}))
        .await
        .status
        .as_u16()
}

async fn report_raw(api: Api, proxy: &str, body: Value) -> trellis_tests::HttpResponse {
    let mesh = identity(api, proxy).await;
    proxy_call(
        api,
        &mesh,
        "POST",
        &format!("/v1/proxies/{proxy}/health"),
        &body,
    )
    .await
}

fn health(tg: &str, port: u16, state: &str, reason: Option<&str>) -> Value {
    let mut v = json!({"targetGroup": tg, "address": "127.0.0.1", "port": port, "state": state});
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v
}

#[tokio::test]
async fn health_reports_are_aggregated_per_target() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let api = cp.api();
    // Groups no service uses: no real proxy checks them, only our reports count.
    let h = api
        .put("target-groups", group("h", &[7001, 7002, 7003], 300))
        .await;
    let h = h["id"].as_str().unwrap().to_string();
    let mut off = group("off", &[7001], 300);
    off["healthCheck"] = json!({"enabled": false});
    let off = api.put("target-groups", off).await;
    let off = off["id"].as_str().unwrap().to_string();
    register(api, "r1").await;
    register(api, "r2").await;

    assert_eq!(
        report(
            api,
            "r1",
            json!([
                health(&h, 7001, "HEALTHY", None),
                health(&h, 7002, "HEALTHY", None),
                health(&off, 7001, "HEALTHY", None)
            ])
        )
        .await,
        204
    );
    assert_eq!(
        report(
            api,
            "r2",
            json!([
                health(&h, 7001, "HEALTHY", None),
                health(&h, 7002, "UNHEALTHY", Some("HealthCheckFailed: status 500"))
            ])
        )
        .await,
        204
    );
    let (code, v) = api.get("/v1/target-groups/h/targets").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["targetGroup"], h.as_str());
    assert_eq!(v["healthChecks"], true);
    let items = v["items"].as_array().unwrap();
    // Every reporting proxy says HEALTHY.
    assert_eq!(items[0]["state"], "HEALTHY", "{v}");
    assert_eq!(
        items[0]["reports"],
        json!([{"proxy": "r1", "state": "HEALTHY"}, {"proxy": "r2", "state": "HEALTHY"}])
    );
    // One proxy says UNHEALTHY: its reason, with its name.
    assert_eq!(items[1]["state"], "UNHEALTHY", "{v}");
    assert_eq!(items[1]["reason"], "r2: HealthCheckFailed: status 500");
    assert_eq!(
        items[1]["reports"][1],
        json!({"proxy": "r2", "state": "UNHEALTHY", "reason": "HealthCheckFailed: status 500"})
    );
    // Nobody reports it.
    assert_eq!(items[2]["state"], "UNAVAILABLE", "{v}");
    assert!(
        items[2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("NotReported"),
        "{v}"
    );
    assert_eq!(items[2]["reports"], json!([]));
    // Health checks disabled: UNAVAILABLE whatever proxies say.
    let (_, v) = api.get(&format!("/v1/target-groups/{off}/targets")).await;
    assert_eq!(v["items"][0]["state"], "UNAVAILABLE", "{v}");
    assert!(
        v["items"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("HealthCheckDisabled"),
        "{v}"
    );

    // A report replaces the proxy's previous one; INITIAL while one has not passed yet.
    assert_eq!(
        report(
            api,
            "r2",
            json!([
                health(&h, 7001, "INITIAL", None),
                health(&h, 7002, "HEALTHY", None)
            ])
        )
        .await,
        204
    );
    let s = states(api, "h").await;
    assert_eq!(
        s,
        vec![
            (7001, "INITIAL".to_string()),
            (7002, "HEALTHY".to_string()),
            (7003, "UNAVAILABLE".to_string())
        ]
    );

    // A deleted proxy's report no longer counts.
    let r = api
        .call("DELETE", "/v1/proxies/r2", &Value::Null, &[])
        .await;
    assert_eq!(r.status, 204);
    wait_until_async("r2's report dropped", PUSH_WAIT, || async {
        let (_, v) = api.get("/v1/target-groups/h/targets").await;
        v["items"][0]["state"] == "HEALTHY"
            && v["items"][0]["reports"].as_array().map(Vec::len) == Some(1)
    })
    .await
    .unwrap();

    // Errors: unknown proxy, malformed report, unknown group.
    assert_eq!(report(api, "nobody", json!([])).await, 404);
    let r = report_raw(
        api,
        "r1",
        json!({"targets": [{"targetGroup": h, "address": "127.0.0.1", "port": 7001, "state": "FINE"}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"], "validation_failed", "{e}");
    assert_eq!(e["fieldErrors"][0]["field"], "targets[0].state", "{e}");
    assert_eq!(api.get("/v1/target-groups/nope/targets").await.0, 404);

    cp.stop().await;
}
