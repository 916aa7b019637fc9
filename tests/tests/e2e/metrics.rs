//! `/metrics` of a real proxy and a real control plane: a known sequence
//! of requests moves exactly the expected counters, and every scrape
//! parses with a strict OpenMetrics parser.

use crate::harness::{Api, Control, Proxy, basic_mesh, forward, wait_for_backend, wait_in_sync};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_tests::prom::{self, Exposition, Labels};
use trellis_tests::{EchoBackend, http1_request, refusing_addr};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// GET `/metrics` from `addr`, check its type, parse it strictly.
async fn scrape(addr: SocketAddr) -> Exposition {
    let r = http1_request(addr, "metrics", "GET", "/metrics", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(OPENMETRICS));
    prom::parse(&r.text()).unwrap_or_else(|e| panic!("malformed exposition: {e}\n{}", r.text()))
}

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Labels) {
    (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn requests(service: &str, group: &str, class: &str, reason: &str) -> (String, Labels) {
    key(
        "trellis_requests_total",
        &[
            ("service", service),
            ("target_group", group),
            ("code_class", class),
            ("reason", reason),
        ],
    )
}

#[tokio::test]
async fn proxy_counters_move_exactly_with_a_known_sequence_of_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let ok = EchoBackend::start_named("ok").await.unwrap();
    let refused = refusing_addr();
    api.put(
        "target-groups",
        json!({"name": "refused", "port": refused.port(), "targets": [{"address": "127.0.0.1"}]}),
    )
    .await;
    let listener = json!({
        "name": "http",
        "defaultAction": forward("ok"),
        "rules": [{"name": "refused", "priority": 1,
                   "match": {"path": {"type": "prefix", "value": "/refused"}},
                   "action": forward("refused")}]
    });
    let host = basic_mesh(api, &[&ok], listener).await;
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_for_backend(&px, &host, "/", "ok").await;

    let before = scrape(px.admin).await;

    // 5 answered by the target (one with a 13-byte body), 2 for no
    // service, 1 refused connection.
    let mut svc_bytes = 0;
    for _ in 0..4 {
        let r = px.get(&host, "/").await;
        assert_eq!(r.status, 200);
        svc_bytes += r.body.len();
    }
    let r = http1_request(
        px.outbound,
        &host,
        "POST",
        "/",
        &[],
        b"hello metrics".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    svc_bytes += r.body.len();
    let mut unrouted_bytes = 0;
    for _ in 0..2 {
        let r = px.get("nobody.example.com", "/").await;
        assert_eq!(r.header("x-trellis-error"), Some("no_service"));
        unrouted_bytes += r.body.len();
    }
    let r = px.get(&host, "/refused").await;
    assert_eq!(r.header("x-trellis-error"), Some("upstream_connect_failed"));
    svc_bytes += r.body.len();

    let after = scrape(px.admin).await;
    let svc = |name: &str| key(name, &[("service", "svc")]);
    let expected: BTreeMap<(String, Labels), f64> = [
        (requests("svc", "ok", "2xx", ""), 5.0),
        (requests("", "", "4xx", "no_service"), 2.0),
        (
            requests("svc", "refused", "5xx", "upstream_connect_failed"),
            1.0,
        ),
        (svc("trellis_request_bytes_total"), 13.0),
        (svc("trellis_response_bytes_total"), svc_bytes as f64),
        (
            key("trellis_response_bytes_total", &[("service", "")]),
            unrouted_bytes as f64,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        after.counter_increments(&before),
        expected,
        "every counter that moved, and by how much"
    );

    // Latency histograms saw the same requests.
    let count_delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let d = "trellis_request_duration_seconds_count";
    assert_eq!(
        count_delta(d, &[("service", "svc"), ("code_class", "2xx")]),
        5.0
    );
    assert_eq!(
        count_delta(d, &[("service", "svc"), ("code_class", "5xx")]),
        1.0
    );
    assert_eq!(
        count_delta(d, &[("service", ""), ("code_class", "4xx")]),
        2.0
    );
    let u = "trellis_upstream_duration_seconds_count";
    assert_eq!(count_delta(u, &[("target_group", "ok")]), 5.0);
    assert_eq!(count_delta(u, &[("target_group", "refused")]), 1.0);

    // The snapshot in use, the families that exist before anything
    // happens to them, and the targets' health as /targets shows it.
    let version = px.running.as_ref().unwrap().snapshot_version().unwrap();
    assert_eq!(
        after.get("trellis_snapshot_version", &[]),
        Some(version as f64)
    );
    assert!(after.value("trellis_snapshot_applied_timestamp_seconds", &[]) > 1.6e9);
    for zero in [
        "trellis_tls_handshake_failures_total",
        "trellis_access_log_dropped_total",
        "trellis_trace_export_failures_total",
    ] {
        assert_eq!(after.get(zero, &[]), Some(0.0), "{zero}");
    }
    for outcome in ["exported", "failed", "dropped"] {
        assert_eq!(
            after.get("trellis_trace_spans_total", &[("outcome", outcome)]),
            Some(0.0),
            "{outcome}"
        );
    }
    for group in ["ok", "refused"] {
        for limit in ["max_requests", "max_retries"] {
            assert_eq!(
                after.get(
                    "trellis_breaker_overflows_total",
                    &[("target_group", group), ("limit", limit)]
                ),
                Some(0.0)
            );
        }
        assert_eq!(
            after.get("trellis_retries_total", &[("target_group", group)]),
            Some(0.0)
        );
    }
    // The proxy joined the mesh: its certificate's end of validity.
    let expiry = after
        .get("trellis_certificate_expiry_timestamp_seconds", &[])
        .expect("the certificate expiry gauge");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 3600.0 && expiry <= now + 24.0 * 3600.0 + 5.0,
        "a fresh 24 h certificate: {expiry} vs now {now}"
    );
    let health = |e: &Exposition, group: &str, target: &str| -> Vec<(String, f64)> {
        e.samples()
            .filter(|s| {
                s.name == "trellis_target_health"
                    && s.labels["target_group"] == group
                    && s.labels["target"] == target
            })
            .map(|s| (s.labels["state"].clone(), s.value))
            .collect()
    };
    let target = format!("127.0.0.1:{}", ok.port());
    let states = health(&after, "ok", &target);
    assert_eq!(states.len(), 5, "{states:?}");
    let current: Vec<_> = states.iter().filter(|(_, v)| *v == 1.0).collect();
    assert_eq!(current.len(), 1, "one current state: {states:?}");
    let admin = http1_request(px.admin, "admin", "GET", "/targets", &[], Vec::new())
        .await
        .unwrap()
        .json()
        .unwrap();
    let known: Vec<String> = admin["targetGroups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"] == "ok")
        .flat_map(|g| g["targets"].as_array().unwrap().iter())
        .map(|t| t["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(known.len(), 1);
    assert!(
        ["INITIAL", "HEALTHY", "UNHEALTHY", "UNAVAILABLE", "DRAINING"].contains(&known[0].as_str())
    );

    // Nothing left in flight once the responses are read (the gauge goes
    // down when the server is done with the body, just after the client
    // has it).
    trellis_tests::eventually(
        "no request in flight",
        crate::harness::PUSH_WAIT,
        || async {
            let e = scrape(px.admin).await;
            (e.get("trellis_active_requests", &[("listener", "outbound")]) == Some(0.0))
                .then_some(())
        },
    )
    .await
    .unwrap();

    px.stop().await;
    cp.stop().await;
}

fn api_requests(route: &str, method: &str, code: &str) -> (String, Labels) {
    key(
        "trellis_api_requests_total",
        &[("route", route), ("method", method), ("code", code)],
    )
}

#[tokio::test]
async fn control_plane_counts_api_calls_by_route_and_sees_its_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api: Api = cp.api();
    let ok = EchoBackend::start_named("ok").await.unwrap();
    let host = basic_mesh(
        api,
        &[&ok],
        json!({"name": "http", "defaultAction": forward("ok")}),
    )
    .await;
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_for_backend(&px, &host, "/", "ok").await;
    wait_in_sync(api, "p1").await;

    let before = scrape(cp.addr).await;
    assert_eq!(api.get("/v1/services").await.0, 200);
    assert_eq!(api.get("/v1/services/svc").await.0, 200);
    assert_eq!(api.get("/v1/services/nope").await.0, 404);
    assert_eq!(api.get("/v1/no-such-thing/at/all").await.0, 404);
    let r = api
        .call("BREW", "/v1/services", &serde_json::Value::Null, &[])
        .await;
    assert_eq!(r.status, 405);
    let after = scrape(cp.addr).await;

    // The proxy's own calls (watch, acks, health reports) run beside the
    // test: leave out /v1/proxies routes; everything else is exact. The
    // first scrape is counted once it is answered, so it is in `after`.
    let moved: BTreeMap<_, _> = after
        .counter_increments(&before)
        .into_iter()
        .filter(|((_, labels), _)| {
            !labels
                .get("route")
                .is_some_and(|r| r.starts_with("/v1/proxies"))
        })
        .collect();
    let expected: BTreeMap<(String, Labels), f64> = [
        (api_requests("/v1/services", "GET", "200"), 1.0),
        (api_requests("/v1/services/{key}", "GET", "200"), 1.0),
        (api_requests("/v1/services/{key}", "GET", "404"), 1.0),
        (api_requests("unmatched", "GET", "404"), 1.0),
        (api_requests("/v1/services", "other", "405"), 1.0),
        (api_requests("/metrics", "GET", "200"), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(moved, expected);
    let store_reads = after.value(
        "trellis_store_operation_duration_seconds_count",
        &[("op", "get")],
    ) + after.value(
        "trellis_store_operation_duration_seconds_count",
        &[("op", "range")],
    );
    assert!(store_reads > 0.0, "the API read the store");
    assert!(
        after.value(
            "trellis_store_operation_duration_seconds_count",
            &[("op", "txn")]
        ) > 0.0
    );

    // One proxy, connected and in sync; its first snapshot was pushed and
    // acknowledged.
    assert_eq!(after.get("trellis_connected_proxies", &[]), Some(1.0));
    assert_eq!(after.get("trellis_registered_proxies", &[]), Some(1.0));
    // In sync was waited for above; a push since would make it 1 for a
    // moment, so read it until it says 0.
    trellis_tests::eventually(
        "the proxy counted in sync",
        crate::harness::PUSH_WAIT,
        || async {
            let e = scrape(cp.addr).await;
            (e.get("trellis_proxies_out_of_sync", &[]) == Some(0.0)).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(after.value("trellis_push_latency_seconds_count", &[]) >= 1.0);
    assert!(after.value("trellis_ack_latency_seconds_count", &[]) >= 1.0);

    // A stopped proxy is no longer connected, and so out of sync.
    px.stop().await;
    trellis_tests::eventually(
        "the proxy counted as gone",
        crate::harness::PUSH_WAIT,
        || async {
            let e = scrape(cp.addr).await;
            (e.get("trellis_connected_proxies", &[]) == Some(0.0)
                && e.get("trellis_proxies_out_of_sync", &[]) == Some(1.0))
            .then_some(())
        },
    )
    .await
    .unwrap();
    cp.stop().await;
}
