//! Active health checks: a backend killed under load is taken out within
//! two check intervals and comes back after the healthy threshold; when
//! every target fails its checks, traffic fails open; the REST API and the
//! proxy's admin listener show each target's health.

use super::{
    CHECK_PATH, Load, Mesh, Probe, admin_group, admin_target, admin_targets, describe_failures,
    fast_checks, forward, merge, no_checks, no_probe, no_retries, retries, sequential, service,
    target_group, wait_for_state,
};
use crate::harness::PUSH_WAIT;
use serde_json::json;
use std::sync::Arc;
use trellis_tests::backend::BackendStats;
use trellis_tests::{EchoBackend, refusing_addr, wait_until, wait_until_async};

/// Health checks a healthy target may receive between the kill of another
/// target and the last request the proxy sends to the dead one: the
/// unhealthy threshold (2 failed checks, one interval apart, the first at
/// most an interval after the kill), plus one because each target is
/// checked on its own jittered schedule, so the healthy target's checks
/// are not in step with the dead one's. In wall-clock terms: two
/// intervals, counted on the proxy's own clock.
const CHECKS_TO_TAKE_OUT: u64 = 3;

#[tokio::test]
async fn a_killed_backend_is_taken_out_within_two_check_intervals_and_comes_back() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let b = EchoBackend::start_named("b").await.unwrap();
    let c = EchoBackend::start_named("c").await.unwrap();
    let c_addr = c.addr();
    let c_counter = c.request_counter();
    // No retries: every request the proxy sends to the dead target is a
    // failure the client sees, so the failures show exactly when the
    // proxy stopped sending there.
    let mesh = Mesh::start(
        &[target_group(
            "pool",
            &[&a, &b, &c],
            json!({"healthCheck": fast_checks()}),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("pool"), "retryPolicy": no_retries()}),
        ),
    )
    .await;

    // The clock of this test: health checks the healthy target `a` got.
    let a_counter = a.request_counter();
    let checks_of_a: Probe = Arc::new(move || a_counter.requests_to(CHECK_PATH));
    let load = Load::start(mesh.out(), "/load", &[], 4, checks_of_a.clone());
    all_healthy_and_serving(&[&a, &b], &c_counter).await;

    let at_kill = checks_of_a();
    c.shutdown().await;
    // Six intervals later (by a's checks), and plenty of traffic after.
    wait_until("six more checks of a", PUSH_WAIT, || {
        checks_of_a() >= at_kill + 6
    })
    .await
    .unwrap();
    load.wait_for_more_ok(200).await;
    let outcomes = load.finish().await;

    let failures: Vec<_> = outcomes.iter().filter(|o| !o.ok()).collect();
    for f in &failures {
        assert!(
            f.probe <= at_kill + CHECKS_TO_TAKE_OUT,
            "a request failed {} checks of a healthy target after the kill (at most {CHECKS_TO_TAKE_OUT} allowed): {f:?}; {}",
            f.probe - at_kill,
            describe_failures(&outcomes)
        );
        assert!(
            matches!(
                f.reason.as_deref(),
                Some("upstream_connect_failed" | "upstream_reset")
            ),
            "only requests sent to the dead target may fail: {f:?}"
        );
    }
    let after: Vec<_> = outcomes
        .iter()
        .filter(|o| o.probe > at_kill + CHECKS_TO_TAKE_OUT)
        .collect();
    assert!(
        after.len() >= 100,
        "traffic after the dead target was taken out: {}",
        after.len()
    );
    for name in ["a", "b"] {
        assert!(
            after.iter().any(|o| o.backend == name),
            "{name} kept serving"
        );
    }

    // The backend comes back on its port: it gets traffic again, and only
    // after passing the healthy threshold (2 checks).
    let c = EchoBackend::new("c").listen(c_addr).start().await.unwrap();
    let load = Load::start(mesh.out(), "/load", &[], 4, no_probe());
    wait_until("the restarted target serves again", PUSH_WAIT, || {
        c.requests_to("/load") >= 20
    })
    .await
    .unwrap();
    let outcomes = load.finish().await;
    assert!(
        outcomes.iter().all(|o| o.ok()),
        "a target coming back fails no request: {}",
        describe_failures(&outcomes)
    );
    let log = c.paths_in_order();
    let first = log.iter().position(|p| p == "/load").unwrap();
    let checks_before = log[..first].iter().filter(|p| *p == CHECK_PATH).count();
    assert!(
        checks_before >= 2,
        "the restarted target got traffic after {checks_before} passed checks, before the healthy threshold (2): {:?}",
        &log[..=first]
    );
    mesh.stop().await;
}

/// Wait until every target passed the healthy threshold (2 checks; until
/// then a proxy fails open to targets it has not checked yet), then until
/// each serves 20 more requests.
async fn all_healthy_and_serving(handles: &[&trellis_tests::BackendHandle], other: &BackendStats) {
    wait_until("every target passed two checks", PUSH_WAIT, || {
        handles.iter().all(|h| h.requests_to(CHECK_PATH) >= 2) && other.requests_to(CHECK_PATH) >= 2
    })
    .await
    .unwrap();
    let before: Vec<u64> = handles.iter().map(|h| h.requests_to("/load")).collect();
    let other_before = other.requests_to("/load");
    wait_until("every target serves", PUSH_WAIT, || {
        handles
            .iter()
            .zip(&before)
            .all(|(h, n)| h.requests_to("/load") >= n + 20)
            && other.requests_to("/load") >= other_before + 20
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn with_retries_a_killed_backend_under_load_fails_no_request() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let b = EchoBackend::start_named("b").await.unwrap();
    let c = EchoBackend::start_named("c").await.unwrap();
    let c_counter = c.request_counter();
    // What a production policy would say: retry connect failures and
    // resets (the requests in flight on the killed target) elsewhere. The
    // circuit breaker keeps its defaults: a third of the load fails at
    // once here, more than a handful of retries at a time, and each retry
    // waits its backoff; the default `maxRetries` must not turn those
    // retries away (the budget is what bounds retries).
    let mesh = Mesh::start(
        &[target_group(
            "pool",
            &[&a, &b, &c],
            json!({"healthCheck": fast_checks()}),
        )],
        service(json!({"name": "http", "defaultAction": forward("pool"),
            "retryPolicy": retries(3, &["connect-failure", "reset"], json!({}))})),
    )
    .await;
    let load = Load::start(mesh.out(), "/load", &[], 24, no_probe());
    all_healthy_and_serving(&[&a, &b], &c_counter).await;
    let checks = a.requests_to(CHECK_PATH);
    c.shutdown().await;
    wait_until("six more checks", PUSH_WAIT, || {
        a.requests_to(CHECK_PATH) >= checks + 6
    })
    .await
    .unwrap();
    load.wait_for_more_ok(200).await;
    let outcomes = load.finish().await;
    // Idempotent GETs whose attempt on the dead target failed, before or
    // after it was taken out, all go elsewhere: none may fail.
    assert!(
        outcomes.iter().all(|o| o.ok()),
        "{}",
        describe_failures(&outcomes)
    );
    mesh.stop().await;
}

#[tokio::test]
async fn when_every_target_fails_its_health_checks_traffic_fails_open() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let b = EchoBackend::start_named("b").await.unwrap();
    // The backends answer 200, the checks want 204: every check fails while
    // the backends serve requests fine.
    let checks = merge(fast_checks(), json!({"matcher": "204"}));
    let mesh = Mesh::start(
        &[target_group(
            "pool",
            &[&a, &b],
            json!({"healthCheck": checks}),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("pool"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    // Past the unhealthy threshold on both.
    wait_until("both targets failed three checks", PUSH_WAIT, || {
        a.requests_to(super::CHECK_PATH) >= 3 && b.requests_to(super::CHECK_PATH) >= 3
    })
    .await
    .unwrap();
    let rs = sequential(&mesh, "/x", &[], 20).await;
    for r in &rs {
        assert_eq!(r.status, 200, "fail-open: {}", r.text());
    }
    let view = admin_targets(&mesh).await;
    let pool = admin_group(&view, "pool");
    assert_eq!(pool["failingOpen"], true, "{pool}");
    for port in [a.port(), b.port()] {
        let t = admin_target(&view, "pool", port);
        assert_eq!(t["state"], "UNHEALTHY", "{t}");
    }
    assert!(
        a.requests_to("/x") > 0 && b.requests_to("/x") > 0,
        "traffic reaches every target: a {} b {}",
        a.requests_to("/x"),
        b.requests_to("/x")
    );
    mesh.stop().await;
}

#[tokio::test]
async fn target_health_shows_in_the_rest_api_and_the_proxy_admin() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let b = EchoBackend::start_named("b").await.unwrap();
    let dead = refusing_addr();
    let mut pool = target_group("pool", &[&a], json!({"healthCheck": fast_checks()}));
    pool["targets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"address": "127.0.0.1", "port": dead.port()}));
    let unchecked = target_group("unchecked", &[&b], json!({"healthCheck": no_checks()}));
    let mesh = Mesh::start(
        &[pool, unchecked],
        service(json!({"name": "http", "defaultAction": forward("pool"), "rules": [
            {"name": "b", "priority": 1, "match": {"path": {"type": "prefix", "value": "/b"}}, "action": forward("unchecked")}
        ]})),
    )
    .await;
    let api = mesh.api;
    wait_for_state(api, "pool", &a.addr().to_string(), "HEALTHY").await;
    let down = wait_for_state(api, "pool", &dead.to_string(), "UNHEALTHY").await;
    assert!(
        down.reason.as_deref().is_some_and(|r| !r.is_empty()),
        "an unhealthy target says why: {down:?}"
    );
    wait_for_state(api, "unchecked", &b.addr().to_string(), "UNAVAILABLE").await;

    // The proxy's own view, on its admin listener.
    let view = admin_targets(&mesh).await;
    let up = admin_target(&view, "pool", a.port());
    assert_eq!(
        (&up["state"], &up["eligible"]),
        (&json!("HEALTHY"), &json!(true)),
        "{up}"
    );
    let down = admin_target(&view, "pool", dead.port());
    assert_eq!(
        (&down["state"], &down["eligible"]),
        (&json!("UNHEALTHY"), &json!(false)),
        "{down}"
    );
    assert!(
        down["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{down}"
    );
    let off = admin_target(&view, "unchecked", b.port());
    assert_eq!(off["state"], "UNAVAILABLE", "{off}");
    mesh.stop().await;
}

#[tokio::test]
async fn a_new_target_gets_no_traffic_and_shows_initial_until_its_first_check_passes() {
    let a = EchoBackend::start_named("a").await.unwrap();
    // Checks every second; ten failures before UNHEALTHY, so a new target
    // whose checks fail stays INITIAL for about ten seconds.
    let checks = json!({"healthCheck": {"path": CHECK_PATH, "fast": {"intervalMs": 1000, "timeoutMs": 500},
                                        "healthyThreshold": 2, "unhealthyThreshold": 10}});
    let mut pool = target_group("pool", &[&a], checks);
    let mesh = Mesh::start(
        std::slice::from_ref(&pool),
        service(
            json!({"name": "http", "defaultAction": forward("pool"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    wait_for_state(mesh.api, "pool", &a.addr().to_string(), "HEALTHY").await;

    // A target is added whose process is not up yet: its checks fail
    // (refused), fewer times than the unhealthy threshold.
    let new_addr = refusing_addr();
    pool["targets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"address": "127.0.0.1", "port": new_addr.port()}));
    mesh.push("target-groups", pool).await;
    let shown = wait_for_state(mesh.api, "pool", &new_addr.to_string(), "INITIAL").await;
    let view = admin_targets(&mesh).await;
    let t = admin_target(&view, "pool", new_addr.port());
    assert_eq!(
        (&t["state"], &t["eligible"]),
        (&json!("INITIAL"), &json!(false)),
        "the proxy's own view: {t}"
    );
    // No traffic: every request goes to the healthy target (a request
    // sent to the new one would be refused and answered 502).
    for r in sequential(&mesh, "/during", &[], 30).await {
        assert_eq!(
            (r.status.as_u16(), r.header("x-backend")),
            (200, Some("a")),
            "{}",
            r.text()
        );
    }
    assert_eq!(a.requests_to("/during"), 30);
    // Still INITIAL after all that (the requests did not make it anything
    // else), as the API said before.
    let view = admin_targets(&mesh).await;
    assert_eq!(
        admin_target(&view, "pool", new_addr.port())["state"],
        "INITIAL",
        "{view} (REST showed {shown:?})"
    );

    // The process comes up: one passing check makes it HEALTHY (a new
    // target needs one, not healthyThreshold), and it gets traffic.
    let new = EchoBackend::new("new")
        .listen(new_addr)
        .start()
        .await
        .unwrap();
    wait_for_state(mesh.api, "pool", &new_addr.to_string(), "HEALTHY").await;
    let (m, n) = (&mesh, &new);
    wait_until_async("the new target gets requests", PUSH_WAIT, || async move {
        sequential(m, "/after", &[], 10).await;
        n.requests_to("/after") > 0
    })
    .await
    .unwrap();
    assert_eq!(
        new.paths_in_order().first().map(String::as_str),
        Some(CHECK_PATH),
        "a health check came before the first request"
    );
    mesh.stop().await;
}
