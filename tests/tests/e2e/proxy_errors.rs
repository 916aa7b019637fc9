//! Every error the proxy makes in the core issue, each produced by a real
//! condition: a status, an `x-trellis-error` reason and a JSON body.

use crate::harness::{Control, Proxy, basic_mesh, forward, wait_for_backend};
use serde_json::json;
use std::time::Duration;
use trellis_tests::{
    EchoBackend, RawResponse, http1_request, raw_request, refusing_addr, send_slowly,
};

const RAW_WAIT: Duration = Duration::from_secs(20);

fn assert_error(status: u16, reason: &str, got_status: u16, got_reason: Option<&str>, body: &[u8]) {
    assert_eq!(
        (got_status, got_reason),
        (status, Some(reason)),
        "body: {}",
        String::from_utf8_lossy(body)
    );
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(v["error"], reason);
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
}

fn assert_raw(r: &RawResponse, status: u16, reason: &str) {
    assert_error(
        status,
        reason,
        r.status,
        r.header("x-trellis-error"),
        &r.body,
    );
}

#[tokio::test]
async fn each_proxy_error_comes_from_a_real_condition() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let ok = EchoBackend::start_named("ok").await.unwrap();
    let slow = EchoBackend::new("slow")
        .delay(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let refused = refusing_addr();
    let listener = json!({
        "name": "http",
        "defaultAction": forward("ok"),
        "rules": [
            {"name": "slow", "priority": 1, "match": {"path": {"type": "prefix", "value": "/slow"}}, "action": forward("slow")},
            {"name": "refused", "priority": 2, "match": {"path": {"type": "prefix", "value": "/refused"}}, "action": forward("refused")},
            {"name": "empty", "priority": 3, "match": {"path": {"type": "prefix", "value": "/empty"}}, "action": forward("empty")},
            {"name": "fixed", "priority": 4, "match": {"path": {"type": "prefix", "value": "/gone"}}, "action": {"fixedResponse": {"statusCode": 410}}}
        ]
    });
    api.put(
        "target-groups",
        json!({"name": "refused", "port": refused.port(), "targets": [{"address": "127.0.0.1"}]}),
    )
    .await;
    api.put(
        "target-groups",
        json!({"name": "empty", "port": 80, "targets": []}),
    )
    .await;
    let host = basic_mesh(api, &[&ok, &slow], listener).await;
    let mut cfg = Proxy::config("p1", &cp.url(), &dir.path().join("p1"), &["net"]);
    cfg.upstream_timeout = Duration::from_millis(500);
    cfg.header_read_timeout = Duration::from_millis(500);
    cfg.max_request_body_bytes = 1024;
    let mut px = Proxy::start(cfg).await;
    wait_for_backend(&px, &host, "/", "ok").await;
    let out = px.outbound;

    // 404: no service for the host.
    let r = px.get("unknown.example.com", "/").await;
    assert_error(
        404,
        "no_service",
        r.status.as_u16(),
        r.header("x-trellis-error"),
        &r.body,
    );
    // A fixed response is the configured status, not an error of the proxy.
    assert_eq!(px.get(&host, "/gone").await.status, 410);
    // 502: the target refuses connections.
    let r = px.get(&host, "/refused").await;
    assert_error(
        502,
        "upstream_connect_failed",
        r.status.as_u16(),
        r.header("x-trellis-error"),
        &r.body,
    );
    // 503: no target to send to.
    let r = px.get(&host, "/empty").await;
    assert_error(
        503,
        "no_healthy_target",
        r.status.as_u16(),
        r.header("x-trellis-error"),
        &r.body,
    );
    // 504: the target is too slow.
    let r = px.get(&host, "/slow").await;
    assert_error(
        504,
        "upstream_timeout",
        r.status.as_u16(),
        r.header("x-trellis-error"),
        &r.body,
    );
    assert_eq!(
        slow.requests_to("/slow"),
        1,
        "the slow target did receive the request"
    );

    // 413: a declared body over the limit, and a chunked one that grows past it.
    let big = vec![b'x'; 4096];
    let r = http1_request(out, &host, "POST", "/upload", &[], big.clone())
        .await
        .unwrap();
    assert_error(
        413,
        "body_too_large",
        r.status.as_u16(),
        r.header("x-trellis-error"),
        &r.body,
    );
    let mut chunked =
        format!("POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for _ in 0..4 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'y'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_raw(
        &raw_request(out, &chunked, RAW_WAIT).await.unwrap(),
        413,
        "body_too_large",
    );
    // Within the limit is fine.
    let r = http1_request(out, &host, "POST", "/upload", &[], vec![b'z'; 1000])
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["bodyBytes"], 1000);

    // 431: a header block over 60 KiB, and more than 100 header fields.
    let huge = "h".repeat(61 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nx-big: {huge}\r\n\r\n");
    assert_raw(
        &raw_request(out, req.as_bytes(), RAW_WAIT).await.unwrap(),
        431,
        "headers_too_large",
    );
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{many}\r\n");
    assert_raw(
        &raw_request(out, req.as_bytes(), RAW_WAIT).await.unwrap(),
        431,
        "headers_too_large",
    );
    // Under the limit is fine. (The proxy adds x-forwarded-for,
    // x-forwarded-proto and x-request-id, and the hyper backend allows
    // 100 fields, so 97 here.)
    let hundred: String = (0..96).map(|i| format!("x-h{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{hundred}\r\n");
    let r = raw_request(out, req.as_bytes(), RAW_WAIT).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());

    // 408: a client sending its head too slowly.
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nx-slow: {}\r\n\r\n",
        "s".repeat(64)
    );
    let slow_client = send_slowly(out, req.as_bytes(), Duration::from_millis(50), RAW_WAIT)
        .await
        .unwrap();
    let resp = slow_client
        .response()
        .expect("the proxy answers a slow client");
    assert_raw(&resp, 408, "request_timeout");
    assert!(
        slow_client.bytes_written < req.len(),
        "answered before the head was complete"
    );

    // 400: malformed heads.
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nbad header line\r\n\r\n");
    assert_raw(
        &raw_request(out, req.as_bytes(), RAW_WAIT).await.unwrap(),
        400,
        "bad_request",
    );
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    assert_raw(
        &raw_request(out, req.as_bytes(), RAW_WAIT).await.unwrap(),
        400,
        "bad_request",
    );
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
    );
    assert_raw(
        &raw_request(out, req.as_bytes(), RAW_WAIT).await.unwrap(),
        400,
        "bad_request",
    );
    assert_raw(
        &raw_request(out, b"GET / HTTP/1.1\r\n\r\n", RAW_WAIT)
            .await
            .unwrap(),
        400,
        "bad_request",
    );

    // 505: an HTTP version the listener does not speak.
    let req = format!("GET / HTTP/3.0\r\nHost: {host}\r\n\r\n");
    assert_raw(
        &raw_request(out, req.as_bytes(), RAW_WAIT).await.unwrap(),
        505,
        "http_version_not_supported",
    );

    // None of that touched the healthy backend, and it still works.
    let before = ok.requests_to("/final");
    assert_eq!(px.get(&host, "/final").await.status, 200);
    assert_eq!(ok.requests_to("/final"), before + 1);
    px.stop().await;
    cp.stop().await;
}
