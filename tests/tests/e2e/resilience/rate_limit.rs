//! Rate limits: exactly the burst passes, then 429 `rate_limited` with
//! `Retry-After`; limits per rule, per service, and per caller.

use super::{HOST, Mesh, assert_proxy_error, forward, no_checks, service, target_group};
use crate::harness::{Proxy, wait_in_sync};
use serde_json::json;
use std::net::IpAddr;
use std::time::Instant;
use trellis_tests::{EchoBackend, HttpResponse, http1_request, http1_request_from};

/// Check a run of answers to a limited path: the first `passed` are 200,
/// all the rest are 429 `rate_limited` with a `Retry-After` of whole
/// seconds. Returns `passed`.
fn passed_then_limited(rs: &[HttpResponse]) -> u64 {
    let passed = rs.iter().take_while(|r| r.status == 200).count();
    for r in &rs[passed..] {
        assert_proxy_error(r, 429, "rate_limited");
        let after = r
            .header("retry-after")
            .unwrap_or_else(|| panic!("a 429 has Retry-After: {:?}", r.headers));
        let secs: u64 = after
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After in seconds, got {after:?}"));
        assert!(secs >= 1, "Retry-After {secs}");
    }
    passed as u64
}

/// `burst` requests pass at once, and at most one more per second elapsed
/// (the bucket refills at 1 request/s in these tests).
fn assert_burst(passed: u64, burst: u64, start: Instant, what: &str) {
    let refilled = start.elapsed().as_secs();
    assert!(
        passed >= burst && passed <= burst + refilled,
        "{what}: {passed} passed; the burst is {burst} (+{refilled} refilled)"
    );
}

#[tokio::test]
async fn a_rule_rate_limit_passes_exactly_the_burst_then_429_with_retry_after() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "a",
            &[&a],
            json!({"healthCheck": no_checks()}),
        )],
        service(json!({
            "name": "http",
            "defaultAction": forward("a"),
            "rules": [{"name": "limited", "priority": 1,
                       "match": {"path": {"type": "prefix", "value": "/limited"}},
                       "action": forward("a"),
                       "rateLimit": {"requestsPerSecond": 1, "burst": 5}}]
        })),
    )
    .await;
    let start = Instant::now();
    let rs = super::sequential(&mesh, "/limited", &[], 8).await;
    let passed = passed_then_limited(&rs);
    assert_burst(passed, 5, start, "rule limit");
    assert!(passed < 8, "some requests were limited");
    assert_eq!(
        a.requests_to("/limited"),
        passed,
        "limited requests never reach the target"
    );
    // The rule's limit is the rule's: the rest of the service is free.
    let rs = super::sequential(&mesh, "/other", &[], 20).await;
    assert!(rs.iter().all(|r| r.status == 200));
    mesh.stop().await;
}

#[tokio::test]
async fn a_service_rate_limit_covers_all_its_rules() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let mut svc = service(json!({
        "name": "http",
        "defaultAction": forward("a"),
        "rules": [{"name": "r", "priority": 1,
                   "match": {"path": {"type": "prefix", "value": "/rule"}},
                   "action": forward("a")}]
    }));
    svc["rateLimit"] = json!({"requestsPerSecond": 1, "burst": 4});
    let mesh = Mesh::start(
        &[target_group(
            "a",
            &[&a],
            json!({"healthCheck": no_checks()}),
        )],
        svc,
    )
    .await;
    let start = Instant::now();
    let mut rs = Vec::new();
    for i in 0..8 {
        let path = if i % 2 == 0 { "/rule" } else { "/default" };
        rs.push(mesh.get(path, &[]).await);
    }
    let passed = passed_then_limited(&rs);
    assert_burst(passed, 4, start, "service limit over both paths");
    mesh.stop().await;
}

#[tokio::test]
async fn a_per_caller_rate_limit_keeps_one_bucket_per_client_address() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "a",
            &[&a],
            json!({"healthCheck": no_checks()}),
        )],
        service(json!({
            "name": "http",
            "defaultAction": forward("a"),
            "rules": [{"name": "limited", "priority": 1,
                       "match": {"path": {"type": "prefix", "value": "/limited"}},
                       "action": forward("a"),
                       "rateLimit": {"requestsPerSecond": 1, "burst": 3, "key": "caller"}}]
        })),
    )
    .await;
    // Two callers on loopback: 127.0.0.1 and 127.0.0.2 (Linux routes all of
    // 127/8 to the loopback interface), each on fresh connections.
    let start = Instant::now();
    for caller in ["127.0.0.1", "127.0.0.2"] {
        let ip: IpAddr = caller.parse().unwrap();
        let mut rs = Vec::new();
        for _ in 0..5 {
            rs.push(
                http1_request_from(ip, mesh.out(), HOST, "GET", "/limited", &[], Vec::new())
                    .await
                    .unwrap(),
            );
        }
        let passed = passed_then_limited(&rs);
        assert_burst(passed, 3, start, &format!("caller {caller}"));
    }
    mesh.stop().await;
}

#[tokio::test]
async fn a_rate_limit_is_per_proxy() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "a",
            &[&a],
            json!({"healthCheck": no_checks()}),
        )],
        service(json!({
            "name": "http",
            "defaultAction": forward("a"),
            "rules": [{"name": "limited", "priority": 1,
                       "match": {"path": {"type": "prefix", "value": "/limited"}},
                       "action": forward("a"),
                       "rateLimit": {"requestsPerSecond": 1, "burst": 3}}]
        })),
    )
    .await;
    // A second proxy with the same configuration keeps its own buckets.
    let p2_dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::config("p2", &mesh.cp.url(), p2_dir.path(), &["net"]);
    let mut p2 = Proxy::start(cfg).await;
    wait_in_sync(mesh.api, "p2").await;
    let start = Instant::now();
    for out in [mesh.out(), p2.outbound] {
        let mut rs = Vec::new();
        for _ in 0..5 {
            rs.push(
                http1_request(out, HOST, "GET", "/limited", &[], Vec::new())
                    .await
                    .unwrap(),
            );
        }
        let passed = passed_then_limited(&rs);
        assert_burst(passed, 3, start, &format!("proxy on {out}"));
    }
    p2.stop().await;
    mesh.stop().await;
}
