//! Self tests of the test-support backends and clients: if these fail,
//! every other end-to-end test is suspect.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use trellis_tests::backend::{BACKEND_HEADER, pb_bytes_field, pb_fields};
use trellis_tests::{
    EchoBackend, GrpcBackend, Http1Connection, RawConnection, WAIT_TIMEOUT, WebSocketEchoBackend,
    free_addr, grpc_unary_call, grpc_unary_call_with, http1_request, http2_request, raw_request,
    refusing_addr, send_slowly, wait_until, websocket_connect, websocket_echo,
};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn echo_describes_an_http1_request() {
    let b = EchoBackend::new("alpha").start().await.unwrap();
    let r = http1_request(
        b.addr(),
        "svc.net.trellis.internal",
        "POST",
        "/items/1?x=1&y=2",
        &[("x-test", "one"), ("x-test", "two")],
        vec![7u8; 10_000],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header(BACKEND_HEADER), Some("alpha"));
    let j = r.json().unwrap();
    assert_eq!(j["backend"], "alpha");
    assert_eq!(j["method"], "POST");
    assert_eq!(j["path"], "/items/1");
    assert_eq!(j["query"], "x=1&y=2");
    assert_eq!(j["headers"]["host"], "svc.net.trellis.internal");
    assert_eq!(j["headers"]["x-test"], "one, two");
    assert_eq!(j["bodyBytes"], 10_000);
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(b.requests(), 1);
    assert_eq!(b.requests_to("/items/1"), 1);
    assert_eq!(b.requests_to("/"), 0);
}

#[tokio::test]
async fn echo_speaks_h2c_with_prior_knowledge() {
    let b = EchoBackend::new("beta").start().await.unwrap();
    let r = http2_request(b.addr(), "api.example:8080", "PUT", "/h2", &[], "abc")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_2);
    let j = r.json().unwrap();
    assert_eq!(j["version"], "HTTP/2.0");
    assert_eq!(j["authority"], "api.example:8080");
    assert_eq!(j["bodyBytes"], 3);
    assert_eq!(j["query"], serde_json::Value::Null);
}

#[tokio::test]
async fn echo_counts_a_large_streamed_request_body() {
    let b = EchoBackend::new("big").start().await.unwrap();
    let body = vec![1u8; 8 * 1024 * 1024 + 3];
    for r in [
        http1_request(b.addr(), "h", "POST", "/", &[], body.clone()).await,
        http2_request(b.addr(), "h", "POST", "/", &[], body).await,
    ] {
        assert_eq!(r.unwrap().json().unwrap()["bodyBytes"], 8 * 1024 * 1024 + 3);
    }
}

#[tokio::test]
async fn echo_options_status_body_size_and_failures() {
    let fixed = EchoBackend::new("s").status(503).start().await.unwrap();
    let r = http1_request(fixed.addr(), "h", "GET", "/", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json().unwrap()["backend"], "s");

    let big = EchoBackend::new("b")
        .body_bytes(3_000_001)
        .start()
        .await
        .unwrap();
    for r in [
        http1_request(big.addr(), "h", "GET", "/", &[], "").await,
        http2_request(big.addr(), "h", "GET", "/", &[], "").await,
    ] {
        let r = r.unwrap();
        assert_eq!(r.header("content-length"), Some("3000001"));
        assert_eq!(r.body.len(), 3_000_001);
        assert!(r.body.iter().all(|&c| c == b'x'));
    }

    let flaky = EchoBackend::new("f").fail_every(3).start().await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = http1_request(flaky.addr(), "h", "GET", "/", &[], "")
            .await
            .unwrap();
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500]);
}

#[tokio::test]
async fn echo_request_headers_override_the_options() {
    let b = EchoBackend::new("o").start().await.unwrap();
    let r = http1_request(
        b.addr(),
        "h",
        "GET",
        "/",
        &[("x-echo-status", "418"), ("x-echo-body-bytes", "5")],
        "",
    )
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), &r.body[..]), (418, &b"xxxxx"[..]));
}

#[tokio::test]
async fn echo_delay_holds_the_answer_back() {
    // Only a lower bound is checked: the answer cannot arrive before the
    // delay, however fast the machine is.
    let b = EchoBackend::new("slow")
        .delay(Duration::from_millis(1500))
        .start()
        .await
        .unwrap();
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        http1_request(b.addr(), "h", "GET", "/", &[], ""),
    )
    .await;
    assert!(early.is_err(), "answered before its delay");
    let r = http1_request(b.addr(), "h", "GET", "/", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    let fast = EchoBackend::new("fast").start().await.unwrap();
    let held = tokio::time::timeout(
        Duration::from_millis(300),
        http2_request(
            fast.addr(),
            "h",
            "GET",
            "/",
            &[("x-echo-delay-ms", "1500")],
            "",
        ),
    )
    .await;
    assert!(held.is_err(), "x-echo-delay-ms was ignored");
}

#[tokio::test]
async fn keep_alive_requests_share_one_connection() {
    let b = EchoBackend::new("ka").start().await.unwrap();
    let mut conn = Http1Connection::connect(b.addr()).await.unwrap();
    for i in 0..3 {
        let r = conn
            .request("h", "GET", &format!("/{i}"), &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(b.requests(), 3);
    assert_eq!(b.connections(), 1);
}

#[tokio::test]
async fn shutdown_and_drop_refuse_new_connections() {
    let b = EchoBackend::new("x").start().await.unwrap();
    let addr = b.addr();
    let mut conn = Http1Connection::connect(addr).await.unwrap();
    conn.request("h", "GET", "/", &[], "").await.unwrap();
    b.shutdown().await;
    let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The open keep-alive connection was cut too.
    assert!(conn.request("h", "GET", "/", &[], "").await.is_err());

    let d = EchoBackend::new("y").start().await.unwrap();
    let addr = d.addr();
    drop(d);
    wait_until(
        "the dropped backend to stop listening",
        WAIT_TIMEOUT,
        || std::net::TcpStream::connect(addr).is_err(),
    )
    .await
    .unwrap();

    // A backend can come back on the same address.
    let again = EchoBackend::new("y2").listen(addr).start().await.unwrap();
    let r = http1_request(addr, "h", "GET", "/", &[], "").await.unwrap();
    assert_eq!(r.header(BACKEND_HEADER), Some("y2"));
    drop(again);
}

#[tokio::test]
async fn grpc_unary_call_returns_message_and_trailers() {
    let b = GrpcBackend::new("g1").start().await.unwrap();
    let req = pb_bytes_field(1, b"hello");
    let r = grpc_unary_call(
        b.addr(),
        "greeter.net.trellis.internal",
        "/pkg.Greeter/Hi",
        &req,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("content-type").unwrap(), "application/grpc");
    assert_eq!(r.grpc_status(), Some(0));
    assert_eq!(r.grpc_message(), Some("OK"));
    assert_eq!(r.trailer("x-backend-trailer"), Some("g1"));
    let fields = pb_fields(&r.message().unwrap()).unwrap();
    assert_eq!(&fields[0].1[..], b"g1");
    assert_eq!(&fields[1].1[..], &req[..]);
    assert_eq!(b.requests_to("/pkg.Greeter/Hi"), 1);

    let failing = GrpcBackend::new("g2")
        .grpc_status(14, "backend unavailable")
        .start()
        .await
        .unwrap();
    let r = grpc_unary_call(failing.addr(), "g", "/pkg.Greeter/Hi", b"")
        .await
        .unwrap();
    assert_eq!(r.grpc_status(), Some(14));
    assert_eq!(r.grpc_message(), Some("backend unavailable"));

    let r = grpc_unary_call_with(
        b.addr(),
        "g",
        "/pkg.Greeter/Hi",
        b"",
        &[("x-echo-grpc-status", "8")],
    )
    .await
    .unwrap();
    assert_eq!(r.grpc_status(), Some(8));

    // Health checks are plain HTTP/1.1 GETs.
    let h = http1_request(b.addr(), "g", "GET", "/", &[], "")
        .await
        .unwrap();
    assert_eq!(h.status, 200);
}

#[tokio::test]
async fn websocket_echoes_text_and_binary() {
    let b = WebSocketEchoBackend::new("ws").start().await.unwrap();
    let reply = websocket_echo(b.addr(), "chat.net.trellis.internal", "/socket", "hello")
        .await
        .unwrap();
    assert_eq!(reply, "hello");

    let (mut ws, resp) = websocket_connect(b.addr(), "chat.net.trellis.internal", "/socket")
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers().get(BACKEND_HEADER).unwrap(), "ws");
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got, Message::binary(vec![0u8, 1, 2]));
    assert_eq!(b.requests_to("/socket"), 2);

    // Stopping the backend cuts upgraded connections.
    b.shutdown().await;
    let end = tokio::time::timeout(T, ws.next()).await.unwrap();
    assert!(!matches!(
        end,
        Some(Ok(Message::Text(_) | Message::Binary(_)))
    ));

    // Plain requests (health checks) get a 200.
    let b = WebSocketEchoBackend::new("ws2").start().await.unwrap();
    let r = http1_request(b.addr(), "h", "GET", "/", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn refusing_and_free_addresses() {
    let r = refusing_addr();
    assert!(r.ip().is_loopback());
    let err = tokio::net::TcpStream::connect(r).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let f = free_addr();
    assert!(f.ip().is_loopback() && f.port() != 0);
    assert!(std::net::TcpListener::bind(f).is_ok());
}

#[tokio::test]
async fn raw_requests_pipelining_and_slow_heads() {
    let b = EchoBackend::new("raw").start().await.unwrap();
    let r = raw_request(
        b.addr(),
        b"GET /raw?a=b HTTP/1.1\r\nHost: raw.example\r\n\r\n",
        T,
    )
    .await
    .unwrap();
    assert_eq!((r.minor_version, r.status), (1, 200));
    assert_eq!(r.header("X-Backend"), Some("raw"));
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["query"], "a=b");

    let head = raw_request(b.addr(), b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", T)
        .await
        .unwrap();
    assert!(head.body.is_empty() && head.header("content-length").is_some());

    let mut c = RawConnection::connect(b.addr()).await.unwrap();
    c.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let one = c.read_response(T).await.unwrap();
    let two = c.read_response(T).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&one.body).unwrap()["path"],
        "/1"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&two.body).unwrap()["path"],
        "/2"
    );
    assert!(c.closed_within(T).await);

    // A malformed request: hyper answers 400 and closes.
    let mut c = RawConnection::connect(b.addr()).await.unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n")
        .await
        .unwrap();
    let rest = String::from_utf8_lossy(&c.read_to_close(T).await).into_owned();
    assert!(rest.starts_with("HTTP/1.1 400"), "{rest:?}");

    let head = b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n";
    let s = send_slowly(b.addr(), head, Duration::from_millis(5), T)
        .await
        .unwrap();
    assert_eq!(s.bytes_written, head.len());
    assert!(!s.write_failed);
    assert_eq!(s.response().unwrap().status, 200);
    assert_eq!(b.requests_to("/slow"), 1);
}

#[tokio::test]
async fn send_slowly_stops_when_the_server_gives_up() {
    // A server that answers 408 after the first bytes and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    });
    let head = b"GET /never-finished HTTP/1.1\r\nHost: h\r\n\r\n";
    let s = send_slowly(addr, head, Duration::from_millis(20), T)
        .await
        .unwrap();
    assert!(s.bytes_written < head.len(), "{s:?}");
    assert_eq!(s.response().unwrap().status, 408);
}

#[tokio::test]
async fn wait_until_returns_early_or_names_what_it_awaited() {
    let b = EchoBackend::new("w").start().await.unwrap();
    let addr = b.addr();
    tokio::spawn(async move {
        for _ in 0..3 {
            let _ = http1_request(addr, "h", "GET", "/", &[], "").await;
        }
    });
    wait_until("three requests", WAIT_TIMEOUT, || b.requests() >= 3)
        .await
        .unwrap();
    let err = wait_until("the impossible", Duration::from_millis(50), || false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the impossible"), "{err}");
}
