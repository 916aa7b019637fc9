//! Upstream connection settings of a target group, counted at the backend
//! (TCP connections it accepted): `connection.idleTimeoutSeconds` closes a
//! pooled connection that sat idle that long, and `maxLifetimeSeconds`
//! retires a connection that is older than that.
//!
//! Health checks are off, so the backend's connections are the proxy's
//! pool for client requests and nothing else. Each test has a control in
//! the same run (requests close together share one connection), so a
//! proxy that opened a connection per request would fail too.

use super::{Mesh, forward, no_checks, no_retries, sequential, service, target_group};
use serde_json::json;
use std::time::Duration;
use trellis_tests::EchoBackend;

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
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Past its lifetime. The pool retires a connection when an answer
    // arrives on it (documented in `forward::pool`): the next exchange may
    // still be carried by the old one, none after that.
    send(&mesh, "/b", 2).await;
    assert_eq!(
        b.connections(),
        2,
        "a connection older than maxLifetimeSeconds took at most one more request"
    );
    // The new connection is young: reused.
    send(&mesh, "/c", 3).await;
    assert_eq!(b.connections(), 2);
    mesh.stop().await;
}
