//! Runtime state lives beside the snapshot: a config push (a rule added in
//! front, a target added) keeps an ejected target ejected and a drained
//! rate-limit bucket drained.

use super::{Mesh, forward, no_checks, no_retries, sequential, service, target_group};
use serde_json::{Value, json};
use std::time::Instant;
use trellis_tests::EchoBackend;

fn listener(extra_rules: &[Value]) -> Value {
    let mut rules = extra_rules.to_vec();
    rules.push(json!({"name": "limited", "priority": 50,
        "match": {"path": {"type": "prefix", "value": "/limited"}},
        "action": forward("pool"),
        "rateLimit": {"requestsPerSecond": 1, "burst": 20}}));
    json!({"name": "http", "defaultAction": forward("pool"), "retryPolicy": no_retries(), "rules": rules})
}

#[tokio::test]
async fn a_config_push_keeps_ejections_and_rate_limit_buckets() {
    let bad = EchoBackend::new("bad").status(500).start().await.unwrap();
    let a = EchoBackend::start_named("a").await.unwrap();
    let b = EchoBackend::start_named("b").await.unwrap();
    let c = EchoBackend::start_named("c").await.unwrap();
    let settings = json!({
        "healthCheck": no_checks(),
        "outlierDetection": {"consecutive5xx": 3, "baseEjectionMs": 60000, "maxEjectionPercent": 50}
    });
    let mesh = Mesh::start(
        &[target_group("pool", &[&bad, &a, &b], settings.clone())],
        service(listener(&[])),
    )
    .await;

    // Eject `bad`.
    sequential(&mesh, "/x", &[], 30).await;
    assert_eq!(bad.requests(), 3, "ejected after 3 consecutive 5xx");
    // Drain the bucket: the burst passes, then 429.
    let rs = sequential(&mesh, "/limited", &[], 25).await;
    let drained = Instant::now();
    assert_eq!(
        rs.last().map(|r| r.status.as_u16()),
        Some(429),
        "the bucket is drained"
    );

    // Unrelated changes: a rule in front of the limited one, and a new
    // target in the group.
    mesh.push(
        "services",
        service(listener(&[json!({"name": "teapot", "priority": 1,
            "match": {"path": {"type": "prefix", "value": "/teapot"}},
            "action": {"fixedResponse": {"statusCode": 418}}})])),
    )
    .await;
    mesh.push(
        "target-groups",
        target_group("pool", &[&bad, &a, &b, &c], settings),
    )
    .await;
    assert_eq!(
        mesh.get("/teapot", &[]).await.status,
        418,
        "the push applied"
    );

    // The bucket did not refill beyond its rate (1/s) since it was drained.
    let rs = sequential(&mesh, "/limited", &[], 20).await;
    let since = drained.elapsed().as_secs();
    let passed = rs.iter().filter(|r| r.status == 200).count() as u64;
    assert!(
        passed <= since + 1,
        "{passed} passed {since} s after the bucket was drained: the push refilled it"
    );

    // `bad` is still ejected; the new target serves.
    let rs = sequential(&mesh, "/y", &[], 60).await;
    assert!(
        rs.iter().all(|r| r.status == 200),
        "no 500: bad stays ejected"
    );
    assert_eq!(bad.requests(), 3, "an ejection survives a push");
    assert!(c.requests_to("/y") > 0, "the added target serves");
    mesh.stop().await;
}
