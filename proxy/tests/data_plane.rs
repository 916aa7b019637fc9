//! Component tests of the proxy through its public entry point: a fake
//! control plane (the watch protocol over real HTTP), real backends on
//! loopback, requests over real sockets. The full system (real control
//! plane, several proxies, TLS) is tested in the workspace's `tests/`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use http::StatusCode;
use serde_json::json;
use std::time::Duration;
use support::*;
use trellis_proxy::{ProxyConfig, start};

const READY: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_and_sets_proxy_headers() {
    let backend = Backend::start().await;
    let control = FakeControl::start().await;
    let dir = TempDir::new("fwd");
    control.set(
        "p1",
        snapshot(
            "p1",
            1,
            vec![service("svc.example", forward("tg-1"))],
            vec![group(
                "tg-1",
                "HTTP1",
                vec![target(backend.addr, None, None)],
            )],
        ),
    );
    let proxy = start(ProxyConfig::loopback("p1", control.url(), dir.path()))
        .await
        .unwrap();
    assert_eq!(proxy.wait_ready(READY).await.unwrap(), 1);

    let resp = raw(
        proxy.outbound_addr,
        b"GET /hello?x=1 HTTP/1.1\r\nHost: svc.example\r\nConnection: keep-alive, x-drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 192.0.2.1\r\nx-request-id: abc\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-request-id"), Some("abc"));
    let seen: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(seen["path"], "/hello?x=1");
    assert_eq!(seen["headers"]["host"], "svc.example");
    assert_eq!(seen["headers"]["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-request-id"], "abc");
    for gone in ["x-drop", "keep-alive", "connection"] {
        assert!(seen["headers"].get(gone).is_none(), "{gone} was forwarded");
    }

    // A generated request id reaches the backend and comes back.
    let resp = raw(
        proxy.outbound_addr,
        b"GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n",
    )
    .await;
    let id = resp.header("x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 36);
    let seen: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(seen["headers"]["x-request-id"], id.as_str());

    wait_for("ack of version 1", || {
        control.acks().contains(&(String::from("p1"), 1, None))
    })
    .await;
    let regs = control.registrations();
    assert_eq!(regs[0]["name"], "p1");
    assert_eq!(
        regs[0]["inboundAddress"],
        proxy.inbound_addr.unwrap().to_string()
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_errors_in_its_own_shape() {
    let backend = Backend::start().await;
    let control = FakeControl::start().await;
    let dir = TempDir::new("err");
    let closed = closed_port_addr();
    control.set(
        "p1",
        snapshot(
            "p1",
            7,
            vec![
                service("svc.example", forward("tg-1")),
                service(
                    "teapot.example",
                    json!({"fixedResponse": {"statusCode": 418}}),
                ),
                service("ok.example", json!({"fixedResponse": {"statusCode": 200}})),
                service("refused.example", forward("tg-closed")),
                service("empty.example", forward("tg-empty")),
            ],
            vec![
                group("tg-1", "HTTP1", vec![target(backend.addr, None, None)]),
                group("tg-closed", "HTTP1", vec![target(closed, None, None)]),
                group("tg-empty", "HTTP1", vec![]),
            ],
        ),
    );
    let mut cfg = ProxyConfig::loopback("p1", control.url(), dir.path());
    cfg.upstream_timeout = Duration::from_millis(500);
    cfg.header_read_timeout = Duration::from_millis(500);
    cfg.max_request_body_bytes = 1000;
    cfg.max_request_header_bytes = 2048;
    cfg.max_request_headers = 20;
    let proxy = start(cfg).await.unwrap();
    proxy.wait_ready(READY).await.unwrap();
    let out = proxy.outbound_addr;

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GET / HTTP/1.1\r\nHost: nope.example\r\n\r\n".to_vec(), 404, "no_service"),
        (b"GET / HTTP/1.1\r\nHost: svc.example:8080\r\n\r\n".to_vec(), 404, "no_listener"),
        (b"GET / HTTP/1.1\r\nHost: teapot.example\r\n\r\n".to_vec(), 418, "fixed_response"),
        (b"GET / HTTP/1.1\r\nHost: refused.example\r\n\r\n".to_vec(), 502, "upstream_connect_failed"),
        (b"GET / HTTP/1.1\r\nHost: empty.example\r\n\r\n".to_vec(), 503, "no_healthy_target"),
        (b"GET /slow HTTP/1.1\r\nHost: svc.example\r\n\r\n".to_vec(), 504, "upstream_timeout"),
        (b"POST / HTTP/1.1\r\nHost: svc.example\r\nContent-Length: 1001\r\n\r\n".to_vec(), 413, "body_too_large"),
        (b"GET / HTTP/2.0\r\nHost: svc.example\r\n\r\n".to_vec(), 505, "http_version_not_supported"),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400, "bad_request"),
        (b"POST / HTTP/1.1\r\nHost: svc.example\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400, "bad_request"),
        (format!("GET / HTTP/1.1\r\nHost: svc.example\r\nX-Big: {}\r\n\r\n", "x".repeat(3000)).into_bytes(), 431, "headers_too_large"),
        ((0..30).fold(b"GET / HTTP/1.1\r\nHost: svc.example\r\n".to_vec(), |mut v, i| { v.extend_from_slice(format!("X-{i}: v\r\n").as_bytes()); v }), 431, "headers_too_large"),
        (b"GET / HTTP/1.1\r\nHost: svc.exa".to_vec(), 408, "request_timeout"),
    ];
    for (request, status, reason) in cases {
        let resp = raw(out, &request).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        assert_eq!(resp.status, status, "{shown}: {}", resp.text());
        assert_eq!(resp.header("x-trellis-error"), Some(reason), "{shown}");
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["error"], reason, "{shown}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(body["requestId"].as_str(), resp.header("x-request-id"));
    }

    let ok = raw(out, b"GET / HTTP/1.1\r\nHost: ok.example\r\n\r\n").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-trellis-error"), None);

    // A chunked body over the limit, to a backend that reads it all first.
    let mut big =
        b"POST /consume HTTP/1.1\r\nHost: svc.example\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        big.extend_from_slice(b"1f4\r\n");
        big.extend_from_slice(&[b'a'; 500]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(out, &big).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(resp.header("x-trellis-error"), Some("body_too_large"));

    // Under the limit it goes through.
    let resp = raw(
        out,
        b"POST /consume HTTP/1.1\r\nHost: svc.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "5");

    // On a reused connection: exactly at the count limit passes (the
    // request id the proxy adds does not count), and a head over our size
    // limit but under hyper's hard stop gets our 431.
    let mut conn = Conn::open(out).await;
    let mut twenty = b"GET / HTTP/1.1\r\nHost: svc.example\r\n".to_vec();
    for i in 0..19 {
        twenty.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    twenty.extend_from_slice(b"\r\n");
    let first = conn.request(&twenty).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let big = format!(
        "GET / HTTP/1.1\r\nHost: svc.example\r\nX-Big: {}\r\n\r\n",
        "x".repeat(2100)
    );
    let second = conn.request(big.as_bytes()).await;
    assert_eq!(second.status, 431);
    assert_eq!(second.header("x-trellis-error"), Some("headers_too_large"));

    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_forwards_only_to_fronted_targets() {
    let backend = Backend::start().await;
    let control = FakeControl::start().await;
    let (dir_a, dir_b) = (TempDir::new("in-a"), TempDir::new("in-b"));
    let limited = |name: &str, dir: &TempDir| {
        let mut cfg = ProxyConfig::loopback(name, control.url(), dir.path());
        cfg.max_request_headers = 20;
        cfg
    };
    let b = start(limited("edge-b", &dir_b)).await.unwrap();
    let b_in = b.inbound_addr.unwrap();
    let other = closed_port_addr();
    control.set(
        "edge-b",
        snapshot(
            "edge-b",
            3,
            vec![],
            vec![group(
                "tg-1",
                "HTTP1",
                vec![
                    target(backend.addr, Some("edge-b"), None),
                    target(other, Some("edge-c"), Some(closed_port_addr())),
                ],
            )],
        ),
    );
    control.set(
        "edge-a",
        snapshot(
            "edge-a",
            4,
            vec![service("svc.example", forward("tg-1"))],
            vec![group(
                "tg-1",
                "HTTP1",
                vec![target(backend.addr, Some("edge-b"), Some(b_in))],
            )],
        ),
    );
    let a = start(limited("edge-a", &dir_a)).await.unwrap();
    a.wait_ready(READY).await.unwrap();
    b.wait_ready(READY).await.unwrap();

    // Through a -> b's inbound -> backend.
    let resp = raw(
        a.outbound_addr,
        b"GET /via HTTP/1.1\r\nHost: svc.example\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(seen["path"], "/via");
    assert!(
        seen["headers"].get("x-trellis-target").is_none(),
        "stripped"
    );
    assert_eq!(seen["headers"]["host"], "svc.example");

    // At the header limit at a, still within it at b despite what a adds.
    let mut full = b"GET /full HTTP/1.1\r\nHost: svc.example\r\n".to_vec();
    for i in 0..19 {
        full.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    full.extend_from_slice(b"\r\n");
    let resp = raw(a.outbound_addr, &full).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // Straight at b's inbound.
    let no_header = raw(b_in, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(no_header.status, 400);
    assert_eq!(no_header.header("x-trellis-error"), Some("bad_request"));
    let relay = raw(
        b_in,
        b"GET / HTTP/1.1\r\nHost: x\r\nx-trellis-target: 192.0.2.1:80\r\n\r\n",
    )
    .await;
    assert_eq!(relay.status, 403);
    assert_eq!(relay.header("x-trellis-error"), Some("target_not_fronted"));
    let not_mine = format!("GET / HTTP/1.1\r\nHost: x\r\nx-trellis-target: {other}\r\n\r\n");
    assert_eq!(raw(b_in, not_mine.as_bytes()).await.status, 403);
    let mine = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-trellis-target: {}\r\n\r\n",
        backend.addr
    );
    assert_eq!(raw(b_in, mine.as_bytes()).await.status, 200);

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_grpc_trailers_and_websocket() {
    let backend = Backend::start().await;
    let control = FakeControl::start().await;
    let dir = TempDir::new("h2");
    control.set(
        "p1",
        snapshot(
            "p1",
            1,
            vec![
                service("h1.example", forward("tg-h1")),
                service("grpc.example", forward("tg-grpc")),
            ],
            vec![
                group("tg-h1", "HTTP1", vec![target(backend.addr, None, None)]),
                group("tg-grpc", "GRPC", vec![target(backend.addr, None, None)]),
            ],
        ),
    );
    let proxy = start(ProxyConfig::loopback("p1", control.url(), dir.path()))
        .await
        .unwrap();
    proxy.wait_ready(READY).await.unwrap();

    // h2c client -> HTTP/1.1 target: Host is made from :authority.
    let (status, _, body, _) = h2_get(proxy.outbound_addr, "http://h1.example/h2", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["host"], "h1.example");
    assert_eq!(seen["version"], "HTTP/1.1");

    // h2c client -> HTTP/2 target with trailers both ways kept.
    let (status, _, body, trailers) = h2_get(
        proxy.outbound_addr,
        "http://grpc.example/trailers",
        &[("te", "trailers"), ("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"data");
    assert_eq!(trailers.unwrap()["grpc-status"], "0");

    // HTTP/1.1 client -> HTTP/2 target.
    let resp = raw(
        proxy.outbound_addr,
        b"GET /x HTTP/1.1\r\nHost: grpc.example\r\n\r\n",
    )
    .await;
    let seen: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0");

    // WebSocket-style upgrade, tunnelled.
    let mut conn = Conn::open(proxy.outbound_addr).await;
    let head = conn
        .request_head(
            b"GET /ws HTTP/1.1\r\nHost: h1.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await;
    assert_eq!(head.status, 101, "{}", head.text());
    assert_eq!(head.header("upgrade"), Some("echo"));
    assert_eq!(
        conn.echo(b"ping over the tunnel").await,
        b"ping over the tunnel"
    );

    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_control_plane_and_restarts_from_disk() {
    let backend = Backend::start().await;
    let control = FakeControl::start().await;
    let dir = TempDir::new("disk");
    let snap = snapshot(
        "p1",
        5,
        vec![service("svc.example", forward("tg-1"))],
        vec![group(
            "tg-1",
            "HTTP1",
            vec![target(backend.addr, None, None)],
        )],
    );
    control.set("p1", snap.clone());
    let cfg = ProxyConfig::loopback("p1", control.url(), dir.path());
    let proxy = start(cfg.clone()).await.unwrap();
    proxy.wait_ready(READY).await.unwrap();
    let admin = proxy.admin_addr;
    let ready = raw(admin, b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(ready.status, 200);
    let config = raw(admin, b"GET /config HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let shown: trellis_config::Snapshot = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(shown, snap);

    // A snapshot that does not prepare is refused and acknowledged with
    // the reason; the old one stays.
    control.set(
        "p1",
        snapshot(
            "p1",
            6,
            vec![service("svc.example", forward("tg-missing"))],
            vec![],
        ),
    );
    let control_acks = control.clone();
    wait_for("rejection ack", || {
        control_acks
            .acks()
            .iter()
            .any(|(_, v, e)| *v == 5 && e.as_deref().is_some_and(|e| e.contains("version 6")))
    })
    .await;
    assert_eq!(proxy.snapshot_version(), Some(5));
    let port = proxy.outbound_addr;
    proxy.shutdown().await;
    // Every port is released.
    std::net::TcpListener::bind(port).unwrap();

    // Restart with the control plane gone: the saved snapshot serves.
    control.stop().await;
    let mut cfg = cfg;
    cfg.outbound_listen = port;
    let proxy = start(cfg).await.unwrap();
    assert_eq!(
        proxy.snapshot_version(),
        Some(5),
        "loaded before start returns"
    );
    let resp = raw(port, b"GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n").await;
    assert_eq!(resp.status, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_without_any_snapshot() {
    let dir = TempDir::new("none");
    let proxy = start(ProxyConfig::loopback(
        "p1",
        format!("http://{}", closed_port_addr()),
        dir.path(),
    ))
    .await
    .unwrap();
    let resp = raw(
        proxy.outbound_addr,
        b"GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("x-trellis-error"), Some("not_ready"));
    let ready = raw(proxy.admin_addr, b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(ready.status, 503);
    let live = raw(proxy.admin_addr, b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(live.status, 200);
    assert!(proxy.wait_ready(Duration::from_millis(200)).await.is_err());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_restart_and_after_silence() {
    let backend = Backend::start().await;
    let snap = |v| {
        snapshot(
            "p1",
            v,
            vec![service("svc.example", forward("tg-1"))],
            vec![group(
                "tg-1",
                "HTTP1",
                vec![target(backend.addr, None, None)],
            )],
        )
    };
    let first = FakeControl::start().await;
    first.set("p1", snap(1));
    let dir = TempDir::new("reconnect");
    let mut cfg = ProxyConfig::loopback("p1", first.url(), dir.path());
    cfg.watch_idle_timeout = Duration::from_millis(400);
    let proxy = start(cfg).await.unwrap();
    proxy.wait_for_version(1, READY).await.unwrap();

    // The control plane restarts (same address, new state, newer version);
    // the proxy registers again and resumes.
    first.stop().await;
    let second = FakeControl::start_with(first.addr, false).await;
    second.set("p1", snap(2));
    proxy.wait_for_version(2, READY).await.unwrap();
    let regs = second.registrations();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["name"], "p1");

    // This one sends no heartbeats: after the idle timeout the proxy
    // treats the stream as dead and reconnects, resuming from version 2.
    let second_c = second.clone();
    wait_for("a reconnect after silence", || {
        second_c.registrations().len() >= 2
    })
    .await;
    let resp = raw(
        proxy.outbound_addr,
        b"GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200);
    proxy.shutdown().await;
    second.stop().await;
}

/// A service's `idleTimeoutSeconds` ends a WebSocket-style tunnel that
/// carried nothing for that long, and leaves one in use open. (The model
/// accepts 60–600 s, as Lattice does; the proxy takes what the snapshot
/// says, so this test hands it 1 s directly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_idle_timeout_ends_an_idle_tunnel_and_keeps_an_active_one() {
    let backend = Backend::start().await;
    let control = FakeControl::start().await;
    let dir = TempDir::new("tunnel-idle");
    let mut svc = service("ws.example", forward("tg-ws"));
    svc["idleTimeoutSeconds"] = json!(1);
    control.set(
        "p1",
        snapshot(
            "p1",
            1,
            vec![svc],
            vec![group(
                "tg-ws",
                "HTTP1",
                vec![target(backend.addr, None, None)],
            )],
        ),
    );
    let proxy = start(ProxyConfig::loopback("p1", control.url(), dir.path()))
        .await
        .unwrap();
    proxy.wait_ready(READY).await.unwrap();

    let upgrade =
        b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
    let mut idle = Conn::open(proxy.outbound_addr).await;
    let mut active = Conn::open(proxy.outbound_addr).await;
    for conn in [&mut idle, &mut active] {
        let head = conn.request_head(upgrade).await;
        assert_eq!(head.status, 101, "{}", head.text());
        assert_eq!(conn.echo(b"hello").await, b"hello");
    }
    // Three times the idle timeout: the active tunnel carries a message
    // every 300 ms and stays open throughout.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let msg = format!("message {i}");
        assert_eq!(active.echo(msg.as_bytes()).await, msg.as_bytes());
    }
    // The idle one was closed by the proxy (its target side never closes
    // on its own: the backend echoes until its peer goes away).
    assert!(
        idle.closed_within(Duration::from_secs(5)).await,
        "a tunnel idle for three times the service's idle timeout is still open"
    );
    assert_eq!(active.echo(b"still here").await, b"still here");
    proxy.shutdown().await;
}
