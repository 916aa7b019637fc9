//! Retries: a flaky backend is hidden from clients; the retry budget caps
//! the extra load a failing backend gets, counted at the backend.

use super::{Mesh, forward, no_checks, retries, sequential, service, target_group};
use serde_json::json;
use std::time::Instant;
use trellis_tests::{EchoBackend, Http1Connection, http1_request};

#[tokio::test]
async fn retries_hide_a_flaky_backend() {
    // Every other request the flaky target gets is a 500 (health checks are
    // off, so only the test's requests count).
    let flaky = EchoBackend::new("flaky")
        .fail_every(2)
        .start()
        .await
        .unwrap();
    let good = EchoBackend::start_named("good").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "pair",
            &[&flaky, &good],
            json!({"healthCheck": no_checks()}),
        )],
        service(json!({
            "name": "http",
            "defaultAction": forward("pair"),
            "retryPolicy": retries(3, &["500", "gateway-error"], json!({}))
        })),
    )
    .await;
    let rs = sequential(&mesh, "/x", &[], 100).await;
    for r in &rs {
        assert_eq!(
            r.status,
            200,
            "a retried 500 reached the client: {}",
            r.text()
        );
    }
    let failed_attempts = flaky.requests_to("/x") / 2;
    assert!(
        failed_attempts >= 10,
        "the flaky target did fail attempts that were retried: {failed_attempts}"
    );
    assert_eq!(
        flaky.requests_to("/x") + good.requests_to("/x"),
        100 + failed_attempts,
        "one extra attempt per failed one"
    );
    // POST is not idempotent: not retried unless the policy says so.
    let mut posts = Vec::new();
    for _ in 0..20 {
        posts.push(
            http1_request(mesh.out(), super::HOST, "POST", "/post", &[], "x")
                .await
                .unwrap(),
        );
    }
    assert!(
        posts.iter().any(|r| r.status == 500),
        "a failed POST reaches the client"
    );
    assert_eq!(
        flaky.requests_to("/post") + good.requests_to("/post"),
        20,
        "no POST was retried"
    );
    mesh.stop().await;
}

/// `clients` clients, `each` requests each, all at once; returns the
/// statuses.
async fn burst_of_requests(mesh: &Mesh, path: &str, clients: usize, each: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (out, path) = (mesh.out(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Http1Connection::connect(out).await.unwrap();
            let mut statuses = Vec::new();
            for _ in 0..each {
                if conn.is_closed() {
                    conn = Http1Connection::connect(out).await.unwrap();
                }
                let r = conn
                    .request(super::HOST, "GET", &path, &[], Vec::new())
                    .await
                    .unwrap();
                statuses.push(r.status.as_u16());
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test]
async fn the_retry_budget_caps_the_extra_load_on_a_failing_backend() {
    let down = EchoBackend::new("down").status(503).start().await.unwrap();
    let budget = json!({
        "maxAttempts": 3,
        "retryOn": ["gateway-error"],
        "budgetPercent": 10,
        "minRetriesPerSecond": 1,
        "backoffBaseMs": 1,
        "backoffMaxMs": 5
    });
    let mesh = Mesh::start(
        &[target_group(
            "down",
            &[&down],
            // Enough concurrent retries that only the budget limits them.
            json!({"healthCheck": no_checks(), "circuitBreaker": {"maxRetries": 1000}}),
        )],
        service(json!({
            "name": "http",
            "defaultAction": forward("down"),
            "retryPolicy": budget,
            "rules": [{"name": "unbudgeted", "priority": 1,
                       "match": {"path": {"type": "prefix", "value": "/unbudgeted"}},
                       "action": forward("down"),
                       "retryPolicy": retries(3, &["gateway-error"], json!({"backoffBaseMs": 1, "backoffMaxMs": 5}))}]
        })),
    )
    .await;
    let (clients, each) = (4, 50);
    let n = (clients * each) as u64;

    // Without a budget in the way every request costs the backend three
    // attempts: the policy does retry 503s.
    let statuses = burst_of_requests(&mesh, "/unbudgeted", clients, each).await;
    assert!(statuses.iter().all(|s| *s == 503));
    assert_eq!(
        down.requests_to("/unbudgeted"),
        3 * n,
        "maxAttempts 3 with a budget that does not bind"
    );

    // With a budget of 10 % and a floor of 1 retry/s the backend sees
    // little more than the clients' own requests.
    let start = Instant::now();
    let statuses = burst_of_requests(&mesh, "/budgeted", clients, each).await;
    let secs = start.elapsed().as_secs() + 1;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    let hits = down.requests_to("/budgeted");
    // The budget: 10 % of the requests (however it counts them, no more
    // than a quarter), the floor's 1 per started second, and one per
    // client for retries already granted when the budget ran out.
    let allowed = n + n / 4 + secs + clients as u64;
    assert!(
        hits >= n,
        "every request reached the backend at least once: {hits}"
    );
    assert!(
        hits <= allowed,
        "the backend got {hits} attempts for {n} requests (budget allows {allowed}; without it {})",
        3 * n
    );
    mesh.stop().await;
}

#[tokio::test]
async fn a_request_body_under_the_buffer_limit_is_replayed_on_a_retry() {
    // The failing target answers every request 503 (a retryable gateway
    // error); the good one echoes how many body bytes it read.
    let bad = EchoBackend::new("bad").status(503).start().await.unwrap();
    let good = EchoBackend::start_named("good").await.unwrap();
    let limit = 4096;
    let policy = |extra: serde_json::Value| {
        retries(
            2,
            &["gateway-error"],
            super::merge(json!({"maxBufferedBodyBytes": limit}), extra),
        )
    };
    let mesh = Mesh::start(
        &[target_group(
            "pair",
            &[&bad, &good],
            json!({"healthCheck": no_checks()}),
        )],
        service(json!({
            "name": "http",
            "defaultAction": forward("pair"),
            // PUT is idempotent: retried under the default rule.
            "retryPolicy": policy(json!({})),
            "rules": [{"name": "posts", "priority": 1,
                       "match": {"path": {"type": "prefix", "value": "/post"}},
                       "action": forward("pair"),
                       "retryPolicy": policy(json!({"retryNonIdempotent": true}))}]
        })),
    )
    .await;
    let small = vec![b'x'; 3000];
    let large = vec![b'y'; 3 * limit as usize];
    let n: u64 = 20;

    // Under the limit: every POST and PUT that met the bad target first is
    // sent again, body and all, to the good one.
    for (method, path) in [("POST", "/post/small"), ("PUT", "/put/small")] {
        for _ in 0..n {
            let r = http1_request(mesh.out(), super::HOST, method, path, &[], small.clone())
                .await
                .unwrap();
            assert_eq!(
                (r.status.as_u16(), r.header("x-backend")),
                (200, Some("good")),
                "{method} {path}: {}",
                r.text()
            );
            let seen = r.json().unwrap();
            assert_eq!(
                seen["bodyBytes"],
                small.len(),
                "{method}: the target that answered got the whole body: {seen}"
            );
        }
        assert!(
            bad.requests_to(path) >= 1,
            "{method}: some first attempts failed and were retried"
        );
        assert_eq!(
            good.requests_to(path),
            n,
            "{method}: every request ended at the good target"
        );
    }

    // Over the limit: not buffered, so not retried. The bad target's 503
    // reaches the client, and each request reached one target only.
    let mut failed = 0;
    for _ in 0..n {
        let r = http1_request(
            mesh.out(),
            super::HOST,
            "POST",
            "/post/large",
            &[],
            large.clone(),
        )
        .await
        .unwrap();
        match r.status.as_u16() {
            200 => assert_eq!(r.json().unwrap()["bodyBytes"], large.len()),
            503 => {
                assert_eq!(r.header("x-backend"), Some("bad"), "{}", r.text());
                failed += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert!(failed >= 1, "a failed large POST reaches the client");
    assert_eq!(
        bad.requests_to("/post/large") + good.requests_to("/post/large"),
        n,
        "no request with a body over maxBufferedBodyBytes was retried"
    );
    assert_eq!(bad.requests_to("/post/large"), failed);
    mesh.stop().await;
}
