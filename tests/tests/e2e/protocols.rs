//! HTTP/2 prior knowledge, gRPC with trailers, and WebSocket upgrades
//! through the proxy, end to end.

use crate::harness::{Control, Proxy, forward, wait_in_sync};
use serde_json::json;
use trellis_tests::{
    EchoBackend, GrpcBackend, WebSocketEchoBackend, grpc_unary_call, http2_request, websocket_echo,
};

#[tokio::test]
async fn http2_grpc_and_websocket_pass_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let h2 = EchoBackend::start_named("h2-echo").await.unwrap();
    let grpc = GrpcBackend::new("grpc").start().await.unwrap();
    let ws = WebSocketEchoBackend::new("ws").start().await.unwrap();
    api.put("service-networks", json!({"name": "net"})).await;
    api.put("target-groups", json!({"name": "h2", "protocolVersion": "HTTP2", "port": h2.port(), "targets": [{"address": "127.0.0.1"}]})).await;
    api.put("target-groups", json!({"name": "grpc", "protocolVersion": "GRPC", "port": grpc.port(), "targets": [{"address": "127.0.0.1"}]})).await;
    api.put(
        "target-groups",
        json!({"name": "ws", "port": ws.port(), "targets": [{"address": "127.0.0.1"}]}),
    )
    .await;
    for (svc, tg) in [("h2", "h2"), ("grpc", "grpc"), ("ws", "ws")] {
        api.put(
            "services",
            json!({"name": svc, "listeners": [{"name": "http", "defaultAction": forward(tg)}]}),
        )
        .await;
        api.put(
            "service-associations",
            json!({"name": format!("{svc}-net"), "serviceNetwork": "net", "service": svc}),
        )
        .await;
    }
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_in_sync(api, "p1").await;

    // h2c from the client, h2c to the target.
    let r = http2_request(
        px.outbound,
        "h2.net.trellis.internal",
        "POST",
        "/h2",
        &[],
        vec![1u8; 100_000],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = r.json().unwrap();
    assert_eq!(
        seen["version"], "HTTP/2.0",
        "the target group's protocol version is used upstream"
    );
    assert_eq!(seen["bodyBytes"], 100_000);
    // An HTTP/1.1 client to an HTTP/2 target group works too.
    let r = px.get("h2.net.trellis.internal", "/h1").await;
    assert_eq!(r.json().unwrap()["version"], "HTTP/2.0");

    // A gRPC unary call: message and trailers arrive intact.
    let payload = trellis_tests::backend::pb_bytes_field(1, b"hello trellis");
    let reply = grpc_unary_call(
        px.outbound,
        "grpc.net.trellis.internal",
        "/echo.Echo/Say",
        &payload,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.grpc_status(),
        Some(0),
        "grpc-status trailer: {:?}",
        reply.trailers
    );
    assert!(reply.message().is_some(), "a response message came back");
    assert_eq!(
        reply.trailer("x-backend-trailer"),
        Some("grpc"),
        "custom trailers pass: {:?}",
        reply.trailers
    );
    assert_eq!(grpc.requests_to("/echo.Echo/Say"), 1);

    // A WebSocket echo over an upgraded HTTP/1.1 connection.
    for msg in ["hello", "second message on the same socket?"] {
        let echoed = websocket_echo(px.outbound, "ws.net.trellis.internal", "/chat", msg)
            .await
            .unwrap();
        assert_eq!(echoed, msg);
    }
    px.stop().await;
    cp.stop().await;
}
