//! Upstream connection settings of a target group, counted at the backend
//! (TCP connections it accepted): `connection.idleTimeoutSeconds` closes a
//! pooled connection that sat idle that long, and `maxLifetimeSeconds`
//! retires a connection that is older than that, busy or idle.
//!
//! Health checks are off, so the backend's connections are the proxy's
//! pool for client requests and nothing else. Each test has a control in
//! the same run (requests close together share one connection), so a
//! proxy that opened a connection per request would fail too.

use super::{Mesh, forward, no_checks, no_retries, sequential, service, target_group};
use serde_json::json;
use std::time::Duration;
use trellis_tests::EchoBackend;
use trellis_tests::backend::ECHO_DELAY_MS_HEADER;

/// Requests sent back to back on one client connection: answered 200.
async fn send(mesh: &Mesh, path: &str, n: usize) {
    for r in sequential(mesh, path, &[], n).await {
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test]
async fn an_idle_pooled_upstream_connection_is_closed_after_the_idle_timeout() {
    let b = EchoBackend::start_named("b").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "tg",
            &[&b],
            json!({"healthCheck": no_checks(), "connection": {"idleTimeoutSeconds": 1}}),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("tg"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    // Requests well inside the idle time share one pooled connection.
    send(&mesh, "/a", 5).await;
    assert_eq!(b.connections(), 1, "back-to-back requests reuse it");
    // Idle past the timeout (1 s; the default is 60 s): the pool closed it,
    // the next request opens a new one.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    send(&mesh, "/b", 1).await;
    assert_eq!(
        b.connections(),
        2,
        "a request after the idle timeout opens a new connection"
    );
    // And that one is reused again while it is fresh.
    send(&mesh, "/c", 3).await;
    assert_eq!(b.connections(), 2);
    assert_eq!(b.requests(), 9);
    mesh.stop().await;
}

#[tokio::test]
async fn an_upstream_connection_older_than_its_max_lifetime_is_not_reused() {
    let b = EchoBackend::start_named("b").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "tg",
            &[&b],
            // The idle timeout is far away: only the lifetime retires it.
            json!({"healthCheck": no_checks(),
                   "connection": {"idleTimeoutSeconds": 600, "maxLifetimeSeconds": 1}}),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("tg"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    send(&mesh, "/a", 5).await;
    assert_eq!(b.connections(), 1, "a young connection is reused");
    // It comes of age while resting in the pool: the next request is not
    // sent on it but on a new connection.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    send(&mesh, "/b", 1).await;
    assert_eq!(
        b.connections(),
        2,
        "a connection older than maxLifetimeSeconds took a new request"
    );
    // The new connection is young: reused.
    send(&mesh, "/c", 3).await;
    assert_eq!(b.connections(), 2);
    // It comes of age during an exchange: that one finishes, and the next
    // request goes to a new connection.
    let r = mesh.get("/slow", &[(ECHO_DELAY_MS_HEADER, "1500")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        b.connections(),
        2,
        "the slow request went over the pooled connection"
    );
    send(&mesh, "/d", 1).await;
    assert_eq!(
        b.connections(),
        3,
        "a connection that aged while busy took a new request"
    );
    mesh.stop().await;
}
