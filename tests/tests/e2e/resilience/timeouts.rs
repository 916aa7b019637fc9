//! Timeouts: a slow backend is answered 504 `upstream_timeout` at the
//! rule's (or the listener's) timeout; a per-try timeout is followed by a
//! successful retry on another target.

use super::{
    Mesh, assert_proxy_error, forward, no_checks, no_retries, retries, service, target_group,
};
use serde_json::json;
use std::time::{Duration, Instant};
use trellis_tests::EchoBackend;
use trellis_tests::backend::ECHO_DELAY_MS_HEADER;

#[tokio::test]
async fn a_slow_backend_gets_504_upstream_timeout_at_the_configured_timeout() {
    let slow = EchoBackend::new("slow")
        .delay(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let mesh = Mesh::start(
        &[target_group("slow", &[&slow], json!({"healthCheck": no_checks()}))],
        service(json!({
            "name": "http",
            "defaultAction": forward("slow"),
            "timeoutMs": 700,
            "retryPolicy": no_retries(),
            "rules": [{"name": "quick", "priority": 1, "match": {"path": {"type": "prefix", "value": "/rule"}},
                       "action": forward("slow"), "timeoutMs": 300}]
        })),
    )
    .await;
    // The proxy's own upstream timeout is 15 s: these answers come from the
    // configured ones. The rule's timeout wins over the listener's.
    for (path, timeout_ms) in [("/rule", 300u64), ("/", 700)] {
        let start = Instant::now();
        let r = mesh.get(path, &[]).await;
        let took = start.elapsed();
        assert_proxy_error(&r, 504, "upstream_timeout");
        let timeout = Duration::from_millis(timeout_ms);
        assert!(
            took >= timeout,
            "{path}: answered after {took:?}, before its timeout {timeout:?}"
        );
        assert!(
            took < timeout * 10,
            "{path}: answered after {took:?}, long after its timeout {timeout:?}"
        );
    }
    assert_eq!(
        slow.requests_to("/rule"),
        1,
        "the target did get the request"
    );
    // Within the timeout a request is fine.
    let r = mesh.get("/rule", &[(ECHO_DELAY_MS_HEADER, "0")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    mesh.stop().await;
}

#[tokio::test]
async fn a_per_try_timeout_is_retried_on_another_target() {
    let slow = EchoBackend::new("slow")
        .delay(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    let fast = EchoBackend::start_named("fast").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "pair",
            &[&slow, &fast],
            json!({"healthCheck": no_checks()}),
        )],
        service(json!({
            "name": "http",
            "defaultAction": forward("pair"),
            "timeoutMs": 5000,
            "retryPolicy": retries(2, &["per-try-timeout"], json!({"perTryTimeoutMs": 200}))
        })),
    )
    .await;
    for i in 0..6 {
        let start = Instant::now();
        let r = mesh.get("/x", &[]).await;
        let took = start.elapsed();
        assert_eq!(
            (r.status.as_u16(), r.header("x-backend")),
            (200, Some("fast")),
            "request {i}: {}",
            r.text()
        );
        assert!(
            took < Duration::from_secs(3),
            "request {i} took {took:?}: the slow target's answer, not the per-try timeout, ended its attempt"
        );
    }
    assert!(
        slow.requests_to("/x") >= 1,
        "some first attempts went to the slow target and were retried"
    );
    mesh.stop().await;
}

/// A listener that completes no more handshakes: its accept queue (backlog
/// 0, so one connection) is full and never accepted, so the kernel drops
/// further SYNs and a connect to it hangs, as to a host that is gone.
/// Returns the address and what keeps it so.
async fn black_hole() -> (
    std::net::SocketAddr,
    tokio::net::TcpListener,
    Vec<tokio::net::TcpStream>,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Fill the queue: connects succeed until it is full, then hang.
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => return (addr, listener, fillers),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled");
}

#[tokio::test]
async fn a_connect_timeout_answers_502_upstream_connect_failed() {
    let (hole, _listener, _fillers) = black_hole().await;
    let mesh = Mesh::start(
        &[json!({"name": "hole", "port": hole.port(),
            "targets": [{"address": "127.0.0.1"}],
            "healthCheck": no_checks(),
            "connection": {"connectTimeoutMs": 300}})],
        service(json!({
            "name": "http",
            "defaultAction": forward("hole"),
            "timeoutMs": 20000,
            "retryPolicy": no_retries()
        })),
    )
    .await;
    let start = Instant::now();
    let r = mesh.get("/x", &[]).await;
    let took = start.elapsed();
    assert_proxy_error(&r, 502, "upstream_connect_failed");
    let timeout = Duration::from_millis(300);
    assert!(
        took >= timeout && took < timeout * 10,
        "answered after {took:?}; connect timeout {timeout:?}"
    );
    mesh.stop().await;
}
