//! Circuit breakers: over a limit the proxy answers 503 `overflow` at
//! once, without queueing beyond the pending limit; permits come back when
//! requests finish.

use super::{
    HOST, Mesh, assert_proxy_error, forward, no_checks, no_retries, service, target_group,
};
use crate::harness::PUSH_WAIT;
use serde_json::json;
use trellis_tests::backend::ECHO_DELAY_MS_HEADER;
use trellis_tests::{EchoBackend, HttpResponse, http1_request, wait_until};

/// A request on its own connection, in a task.
fn spawn_get(mesh: &Mesh, path: &str, delay_ms: u64) -> tokio::task::JoinHandle<HttpResponse> {
    let (out, path) = (mesh.out(), path.to_string());
    tokio::spawn(async move {
        let delay = delay_ms.to_string();
        http1_request(
            out,
            HOST,
            "GET",
            &path,
            &[(ECHO_DELAY_MS_HEADER, &delay)],
            Vec::new(),
        )
        .await
        .unwrap()
    })
}

#[tokio::test]
async fn over_max_requests_the_next_request_gets_503_overflow_at_once() {
    let hang = EchoBackend::start_named("hang").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "hang",
            &[&hang],
            json!({"healthCheck": no_checks(), "circuitBreaker": {"maxRequests": 3}}),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("hang"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    let held: Vec<_> = (0..3).map(|_| spawn_get(&mesh, "/hang", 2500)).collect();
    wait_until("three requests hang at the backend", PUSH_WAIT, || {
        hang.requests_to("/hang") == 3
    })
    .await
    .unwrap();

    let r = mesh.get("/now", &[]).await;
    assert_proxy_error(&r, 503, "overflow");
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "answered at once, not after a held request finished"
    );
    assert_eq!(
        hang.requests_to("/now"),
        0,
        "an overflow never reaches the target"
    );

    for h in held {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The permits came back.
    let r = mesh.get("/now", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    mesh.stop().await;
}

#[tokio::test]
async fn over_max_connections_and_pending_requests_the_next_request_gets_503_overflow() {
    let hang = EchoBackend::start_named("hang").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "hang",
            &[&hang],
            json!({
                "healthCheck": no_checks(),
                "circuitBreaker": {"maxConnections": 1, "maxPendingRequests": 1, "maxRequests": 100}
            }),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("hang"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    // The only connection is busy with a hanging request...
    let first = spawn_get(&mesh, "/hang", 2000);
    wait_until("one request hangs at the backend", PUSH_WAIT, || {
        hang.requests_to("/hang") == 1
    })
    .await
    .unwrap();
    // ...one more may wait for it, the next one overflows. Which of the two
    // came first is up to the scheduler: exactly one of them overflows.
    let second = spawn_get(&mesh, "/second", 0);
    let third = spawn_get(&mesh, "/third", 0);
    wait_until("one of the two is answered", PUSH_WAIT, || {
        second.is_finished() || third.is_finished()
    })
    .await
    .unwrap();
    assert!(
        !first.is_finished(),
        "the overflow came at once, while the connection was still busy"
    );
    let (overflowed, waited) = if second.is_finished() {
        (second, third)
    } else {
        (third, second)
    };
    assert_proxy_error(&overflowed.await.unwrap(), 503, "overflow");
    assert_eq!(first.await.unwrap().status, 200);
    let r = waited.await.unwrap();
    assert_eq!(
        r.status,
        200,
        "the pending request was served: {}",
        r.text()
    );
    assert_eq!(
        hang.connections(),
        1,
        "the pending request waited for the one connection allowed"
    );
    mesh.stop().await;
}
