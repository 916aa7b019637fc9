//! OpenTelemetry traces: a request through two proxies is one trace with
//! four linked spans, received by a real OTLP receiver over gRPC and HTTP;
//! no endpoint means no spans; an unreachable or refusing collector costs
//! requests nothing.

use crate::harness::{Control, Proxy, backend_of, forward, wait_for_backend};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use trellis_proxy::config::{OtlpProtocol, TraceConfig};
use trellis_tests::otlp::{OtlpReceiver, ReceivedSpan};
use trellis_tests::{BackendHandle, EchoBackend, WAIT_TIMEOUT, http1_request, refusing_addr};

const HOST: &str = "svc.net.trellis.internal";

/// Tracing to `endpoint`, with spans sent every 50 ms so tests wait little.
fn traces(endpoint: String, protocol: OtlpProtocol) -> TraceConfig {
    TraceConfig {
        endpoint: Some(endpoint),
        protocol,
        batch_delay: Duration::from_millis(50),
        export_timeout: Duration::from_secs(2),
        ..TraceConfig::default()
    }
}

/// Network `net`, service `svc` (listener `http`, rule `traced` for
/// `/traced/*`, both to group `fronted`), whose one target is fronted by
/// proxy `p2`.
async fn two_proxy_mesh(cp: &Control, backend: &BackendHandle) {
    let api = cp.api();
    api.put("service-networks", json!({"name": "net"})).await;
    api.put("target-groups", json!({"name": "fronted", "port": backend.port(), "targets": [{"address": "127.0.0.1", "proxy": "p2"}]})).await;
    api.put("services", json!({"name": "svc", "listeners": [{
        "name": "http",
        "defaultAction": forward("fronted"),
        "rules": [{"name": "traced", "priority": 10, "match": {"path": {"type": "prefix", "value": "/traced/"}}, "action": forward("fronted")}]
    }]}))
    .await;
    api.put(
        "service-associations",
        json!({"name": "svc-net", "serviceNetwork": "net", "service": "svc"}),
    )
    .await;
}

async fn start_pair(cp: &Control, dir: &Path, p1: TraceConfig, p2: TraceConfig) -> (Proxy, Proxy) {
    let mut c2 = Proxy::config("p2", &cp.url(), &dir.join("p2"), &[]);
    c2.traces = p2;
    let mut c1 = Proxy::config("p1", &cp.url(), &dir.join("p1"), &["net"]);
    c1.traces = p1;
    let p2 = Proxy::start(c2).await;
    let p1 = Proxy::start(c1).await;
    wait_for_backend(&p1, HOST, "/", "behind-p2").await;
    (p1, p2)
}

/// GET `path` through `p1` with extra headers; returns the JSON the echo
/// backend saw.
async fn get(p1: &Proxy, path: &str, headers: &[(&str, &str)]) -> Value {
    let r = http1_request(p1.outbound, HOST, "GET", path, headers, Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

/// The `traceparent` the target received: (trace id, parent span id).
fn target_parent(seen: &Value) -> (String, String) {
    let tp = seen["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("the target got no traceparent: {seen}"));
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[3], "01", "sampled: {tp}");
    (parts[1].to_string(), parts[2].to_string())
}

/// Wait for the four spans of `trace_id` and return them as (p1 server,
/// p1 client, p2 server, p2 client), checking kinds and proxies.
async fn four_spans(rx: &OtlpReceiver, trace_id: &str) -> [ReceivedSpan; 4] {
    let spans = rx
        .wait_for(
            &format!("four spans of trace {trace_id}"),
            WAIT_TIMEOUT,
            |s| s.iter().filter(|s| s.trace_id == trace_id).count() >= 4,
        )
        .await
        .unwrap();
    let of: Vec<ReceivedSpan> = spans
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    assert_eq!(of.len(), 4, "exactly four spans: {of:#?}");
    let find = |proxy: &str, kind: &str| {
        let found: Vec<&ReceivedSpan> = of
            .iter()
            .filter(|s| {
                s.resource.get("service.instance.id").map(String::as_str) == Some(proxy)
                    && s.kind == kind
            })
            .collect();
        assert_eq!(found.len(), 1, "one {kind} span of {proxy}: {of:#?}");
        found[0].clone()
    };
    [
        find("p1", "server"),
        find("p1", "client"),
        find("p2", "server"),
        find("p2", "client"),
    ]
}

#[tokio::test]
async fn a_request_through_two_proxies_is_one_trace_of_four_linked_spans() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let backend = EchoBackend::start_named("behind-p2").await.unwrap();
    two_proxy_mesh(&cp, &backend).await;
    let rx = OtlpReceiver::start().await.unwrap();
    let (mut p1, mut p2) = start_pair(
        &cp,
        dir.path(),
        traces(rx.grpc_endpoint(), OtlpProtocol::Grpc),
        traces(rx.grpc_endpoint(), OtlpProtocol::Grpc),
    )
    .await;
    let (_, svc) = cp.api().get("/v1/services/svc").await;
    let owner = svc["account"].as_str().unwrap().to_string();

    // 1. No trace context: p1 starts a trace.
    let seen = get(
        &p1,
        "/traced/a?token=secret",
        &[("user-agent", "trace-test/1")],
    )
    .await;
    let (trace_id, target_parent_id) = target_parent(&seen);
    let [s1, c1, s2, c2] = four_spans(&rx, &trace_id).await;
    assert_eq!(s1.parent_span_id, "", "p1 starts the trace");
    assert_eq!(c1.parent_span_id, s1.span_id);
    assert_eq!(
        s2.parent_span_id, c1.span_id,
        "p2's server span is p1's client span's child"
    );
    assert_eq!(c2.parent_span_id, s2.span_id);
    assert_eq!(
        target_parent_id, c2.span_id,
        "the target's parent is p2's client span"
    );

    // p1's server span: the request as the application sent it, and its route.
    for (k, v) in [
        ("http.request.method", "GET"),
        ("url.path", "/traced/a"),
        ("http.response.status_code", "200"),
        ("server.address", HOST),
        ("server.port", "80"),
        ("network.peer.address", "127.0.0.1"),
        ("user_agent.original", "trace-test/1"),
        ("trellis.proxy", "p1"),
        ("trellis.direction", "outbound"),
        ("trellis.service", "svc"),
        ("trellis.listener", "http"),
        ("trellis.rule", "traced"),
        ("trellis.target_group", "fronted"),
        ("trellis.account", owner.as_str()),
    ] {
        assert_eq!(s1.attr(k), v, "p1 server span {k}: {s1:#?}");
    }
    assert!(!s1.attr("trellis.request_id").is_empty());
    assert!(
        !s1.attributes.values().any(|v| v.contains("secret")),
        "no query string in spans: {s1:#?}"
    );
    assert_eq!(s1.name, "GET svc");
    assert_eq!(s1.status, "unset");
    assert_eq!(s1.resource["service.name"], "trellis-proxy");

    // p1's client span: the hop to p2's inbound listener.
    let p2_inbound = p2.inbound.unwrap();
    for (k, v) in [
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("server.port", &p2_inbound.port().to_string()),
        ("trellis.target", &backend.addr().to_string()),
        ("trellis.target_group", "fronted"),
        ("trellis.service", "svc"),
        ("trellis.proxy", "p1"),
    ] {
        assert_eq!(c1.attr(k), v, "p1 client span {k}: {c1:#?}");
    }
    assert_eq!(c1.name, "GET fronted");
    assert_eq!(c1.attr("http.request.resend_count"), "");

    // p2: the inbound server span and the last hop.
    for (k, v) in [
        ("trellis.proxy", "p2"),
        ("trellis.direction", "inbound"),
        ("http.response.status_code", "200"),
        ("url.path", "/traced/a"),
        ("user_agent.original", "trace-test/1"),
    ] {
        assert_eq!(s2.attr(k), v, "p2 server span {k}: {s2:#?}");
    }
    assert_eq!(c2.attr("server.port"), backend.port().to_string());
    assert_eq!(c2.attr("http.response.status_code"), "200");

    // 2. With a W3C context: the trace continues it.
    let incoming_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming_span = "00f067aa0ba902b7";
    let seen = get(
        &p1,
        "/other",
        &[
            (
                "traceparent",
                &format!("00-{incoming_trace}-{incoming_span}-01"),
            ),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    let (trace_id, _) = target_parent(&seen);
    assert_eq!(trace_id, incoming_trace);
    assert_eq!(
        seen["headers"]["tracestate"], "vendor=opaque",
        "tracestate passes through"
    );
    let [s1, c1, s2, c2] = four_spans(&rx, incoming_trace).await;
    assert_eq!(
        s1.parent_span_id, incoming_span,
        "p1's server span continues the caller's span"
    );
    assert_eq!(c1.parent_span_id, s1.span_id);
    assert_eq!(s2.parent_span_id, c1.span_id);
    assert_eq!(c2.parent_span_id, s2.span_id);
    assert_eq!(
        s1.attr("trellis.rule"),
        "",
        "the default action has no rule"
    );
    assert_eq!(s1.attr("url.path"), "/other");

    // 3. With B3 (single header): accepted, and rewritten for the target.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let seen = get(
        &p1,
        "/b3",
        &[("b3", &format!("{b3_trace}-e457b5a2e4d86bd1-1"))],
    )
    .await;
    let [s1, ..] = four_spans(&rx, b3_trace).await;
    assert_eq!(s1.parent_span_id, "e457b5a2e4d86bd1");
    let (_, parent) = target_parent(&seen);
    assert_eq!(seen["headers"]["b3"], format!("{b3_trace}-{parent}-1"));

    // 4. A caller that decided not to sample: no spans, the decision passes on.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let seen = get(
        &p1,
        "/unsampled",
        &[(
            "traceparent",
            &format!("00-{unsampled}-b7ad6b7169203331-00"),
        )],
    )
    .await;
    let tp = seen["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with(&format!("00-{unsampled}-")) && tp.ends_with("-00"),
        "{tp}"
    );

    // 5. A proxy-made error is an error span with its reason.
    let r = http1_request(p1.outbound, "nothing.example", "GET", "/", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let spans = rx
        .wait_for("the no_service span", WAIT_TIMEOUT, |s| {
            s.iter().any(|s| s.attr("trellis.error") == "no_service")
        })
        .await
        .unwrap();
    let err = spans
        .iter()
        .find(|s| s.attr("trellis.error") == "no_service")
        .unwrap();
    assert_eq!(err.kind, "server");
    assert_eq!(err.status, "error");
    assert_eq!(err.attr("error.type"), "no_service");
    assert_eq!(err.attr("http.response.status_code"), "404");
    assert_eq!(err.attr("server.address"), "nothing.example");

    p1.stop().await;
    p2.stop().await;
    // Shutdown flushed everything: the unsampled trace left no span.
    assert!(
        !rx.spans().iter().any(|s| s.trace_id == unsampled),
        "an unsampled request made spans"
    );
    cp.stop().await;
}

#[tokio::test]
async fn spans_also_go_over_otlp_http_and_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let backend = EchoBackend::start_named("behind-p2").await.unwrap();
    two_proxy_mesh(&cp, &backend).await;
    let rx = OtlpReceiver::start().await.unwrap();
    // p1 over HTTP, p2 over gRPC, to the same receiver.
    let (mut p1, mut p2) = start_pair(
        &cp,
        dir.path(),
        traces(rx.http_endpoint(), OtlpProtocol::HttpProtobuf),
        traces(rx.grpc_endpoint(), OtlpProtocol::Grpc),
    )
    .await;
    let seen = get(&p1, "/traced/http", &[]).await;
    let (trace_id, _) = target_parent(&seen);
    let [s1, c1, s2, c2] = four_spans(&rx, &trace_id).await;
    assert_eq!((s1.protocol, c1.protocol), ("http", "http"));
    assert_eq!((s2.protocol, c2.protocol), ("grpc", "grpc"));
    assert_eq!(s2.parent_span_id, c1.span_id);
    let exported = p1.running.as_ref().unwrap().trace_stats().unwrap();
    assert!(exported.spans_exported >= 2, "{exported:?}");

    // The collector refuses: requests go on, the failures are counted.
    rx.refuse(true);
    let before = p1.running.as_ref().unwrap().trace_stats().unwrap();
    for i in 0..5 {
        get(&p1, &format!("/traced/refused-{i}"), &[]).await;
    }
    let running = p1.running.as_ref().unwrap();
    trellis_tests::wait_until("p1 counts spans whose export failed", WAIT_TIMEOUT, || {
        running.trace_stats().unwrap().spans_failed >= before.spans_failed + 10
    })
    .await
    .unwrap();
    let after = running.trace_stats().unwrap();
    assert!(after.failed_exports > before.failed_exports, "{after:?}");
    assert_eq!(after.spans_dropped, 0, "{after:?}");

    // The same counters on the admin listener: /metrics for Prometheus,
    // /stats for people.
    let admin = |path: &'static str| http1_request(p1.admin, "admin", "GET", path, &[], Vec::new());
    let metrics = admin("/metrics").await.unwrap().text();
    let e = trellis_tests::prom::parse(&metrics).unwrap();
    for (outcome, n) in [
        ("exported", after.spans_exported),
        ("failed", after.spans_failed),
        ("dropped", after.spans_dropped),
    ] {
        assert_eq!(
            e.get("trellis_trace_spans_total", &[("outcome", outcome)]),
            Some(n as f64),
            "{outcome}: {metrics}"
        );
    }
    assert_eq!(
        e.get("trellis_trace_export_failures_total", &[]),
        Some(after.failed_exports as f64)
    );
    let stats = admin("/stats").await.unwrap().json().unwrap();
    assert_eq!(
        (
            &stats["traces"]["spansExported"],
            &stats["traces"]["spansFailed"],
            &stats["traces"]["spansDropped"],
        ),
        (
            &json!(after.spans_exported),
            &json!(after.spans_failed),
            &json!(after.spans_dropped)
        ),
        "{stats}"
    );

    p1.stop().await;
    p2.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn without_an_endpoint_there_are_no_spans_and_trace_headers_pass_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let backend = EchoBackend::start_named("behind-p2").await.unwrap();
    two_proxy_mesh(&cp, &backend).await;
    let rx = OtlpReceiver::start().await.unwrap();
    let (mut p1, mut p2) = start_pair(
        &cp,
        dir.path(),
        TraceConfig::default(),
        TraceConfig::default(),
    )
    .await;
    assert!(p1.running.as_ref().unwrap().trace_stats().is_none());
    assert!(p2.running.as_ref().unwrap().trace_stats().is_none());

    let seen = get(&p1, "/traced/off", &[]).await;
    assert!(
        seen["headers"].get("traceparent").is_none(),
        "no trace context is made up: {seen}"
    );
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen = get(&p1, "/traced/off", &[("traceparent", tp)]).await;
    assert_eq!(seen["headers"]["traceparent"], tp, "passed on as sent");

    p1.stop().await;
    p2.stop().await;
    assert!(rx.spans().is_empty(), "{:#?}", rx.spans());
    assert_eq!(rx.exports(), 0);
    cp.stop().await;
}

#[tokio::test]
async fn an_unreachable_collector_costs_requests_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let backend = EchoBackend::start_named("behind-p2").await.unwrap();
    two_proxy_mesh(&cp, &backend).await;
    let nowhere = format!("http://{}", refusing_addr());
    let (mut p1, mut p2) = start_pair(
        &cp,
        dir.path(),
        traces(nowhere.clone(), OtlpProtocol::Grpc),
        traces(format!("{nowhere}/v1/traces"), OtlpProtocol::HttpProtobuf),
    )
    .await;
    for i in 0..20 {
        let seen = get(&p1, &format!("/traced/{i}"), &[]).await;
        target_parent(&seen);
    }
    for (name, p) in [("p1", &p1), ("p2", &p2)] {
        let running = p.running.as_ref().unwrap();
        trellis_tests::wait_until(
            &format!("{name} counts spans it could not export"),
            WAIT_TIMEOUT,
            || running.trace_stats().unwrap().spans_failed > 0,
        )
        .await
        .unwrap();
    }
    // Shutdown is bounded even though the queued spans cannot go anywhere.
    p1.stop().await;
    p2.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn every_retry_is_a_client_span_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let a = EchoBackend::new("down-a")
        .status(503)
        .start()
        .await
        .unwrap();
    let b = EchoBackend::new("down-b")
        .status(503)
        .start()
        .await
        .unwrap();
    api.put("service-networks", json!({"name": "net"})).await;
    api.put("target-groups", json!({
        "name": "down",
        "port": a.port(),
        "targets": [{"address": "127.0.0.1", "port": a.port()}, {"address": "127.0.0.1", "port": b.port()}],
        "healthCheck": {"enabled": false}
    }))
    .await;
    api.put(
        "services",
        json!({"name": "svc", "listeners": [{
            "name": "http",
            "defaultAction": forward("down"),
            "retryPolicy": {"maxAttempts": 3, "retryOn": ["gateway-error"], "budgetPercent": 100,
                            "minRetriesPerSecond": 10_000, "backoffBaseMs": 1, "backoffMaxMs": 5}
        }]}),
    )
    .await;
    api.put(
        "service-associations",
        json!({"name": "svc-net", "serviceNetwork": "net", "service": "svc"}),
    )
    .await;
    let rx = OtlpReceiver::start().await.unwrap();
    let mut cfg = Proxy::config("p1", &cp.url(), &dir.path().join("p1"), &["net"]);
    cfg.traces = traces(rx.grpc_endpoint(), OtlpProtocol::Grpc);
    let mut p1 = Proxy::start(cfg).await;
    let out = p1.outbound;
    let seen = trellis_tests::eventually("a 503 from a target", WAIT_TIMEOUT, || async move {
        let r = http1_request(out, HOST, "GET", "/retried", &[], Vec::new())
            .await
            .ok()?;
        (r.status == 503 && backend_of(&r).starts_with("down-")).then(|| r.json().unwrap())
    })
    .await
    .unwrap();
    let (trace_id, last_parent) = target_parent(&seen);
    let spans = rx
        .wait_for("a server span and three client spans", WAIT_TIMEOUT, |s| {
            s.iter().filter(|s| s.trace_id == trace_id).count() >= 4
        })
        .await
        .unwrap();
    let of: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let server: Vec<_> = of.iter().filter(|s| s.kind == "server").collect();
    let mut clients: Vec<_> = of.iter().filter(|s| s.kind == "client").collect();
    assert_eq!((server.len(), clients.len()), (1, 3), "{of:#?}");
    let server = server[0];
    assert_eq!(server.attr("http.response.status_code"), "503");
    assert_eq!(server.status, "error");
    clients.sort_by_key(|s| s.attr("http.request.resend_count").to_string());
    let resends: Vec<&str> = clients
        .iter()
        .map(|s| s.attr("http.request.resend_count"))
        .collect();
    assert_eq!(resends, ["", "1", "2"], "{clients:#?}");
    for c in &clients {
        assert_eq!(
            c.parent_span_id, server.span_id,
            "every attempt is the server span's child"
        );
        assert_eq!(c.attr("http.response.status_code"), "503");
        assert_eq!(c.status, "error");
        assert_eq!(c.attr("trellis.target_group"), "down");
    }
    assert_eq!(
        last_parent, clients[2].span_id,
        "the answering target saw the last attempt"
    );
    p1.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn the_access_log_names_the_trace_the_proxy_started() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let backend = EchoBackend::start_named("behind-p2").await.unwrap();
    two_proxy_mesh(&cp, &backend).await;
    cp.api()
        .put(
            "access-log-subscriptions",
            json!({"name": "net-log", "resource": {"serviceNetwork": "net"},
                   "destination": {"file": {"path": log.to_str().unwrap()}}}),
        )
        .await;
    let rx = OtlpReceiver::start().await.unwrap();
    let (mut p1, mut p2) = start_pair(
        &cp,
        dir.path(),
        traces(rx.grpc_endpoint(), OtlpProtocol::Grpc),
        TraceConfig::default(),
    )
    .await;
    // No traceparent: p1 starts the trace, and logs its id.
    let seen = get(
        &p1,
        "/traced/logged",
        &[("x-request-id", "traced-and-logged")],
    )
    .await;
    let (trace_id, _) = target_parent(&seen);
    let line = trellis_tests::eventually("the access log line", WAIT_TIMEOUT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move {
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["requestId"] == "traced-and-logged")
        }
    })
    .await
    .unwrap();
    assert_eq!(line["traceId"], trace_id.as_str(), "{line}");
    let spans = rx
        .wait_for("p1's server span", WAIT_TIMEOUT, |s| {
            s.iter()
                .any(|s| s.trace_id == trace_id && s.kind == "server")
        })
        .await
        .unwrap();
    let server = spans
        .iter()
        .find(|s| s.trace_id == trace_id && s.kind == "server")
        .unwrap();
    assert_eq!(server.attr("trellis.request_id"), "traced-and-logged");
    p1.stop().await;
    p2.stop().await;
    cp.stop().await;
}
