//! Access logs (issue 5, section 1) end to end: an access-log subscription
//! written through the REST API, a real proxy writing JSON lines to a real
//! file, one line per request with the right `responseCode`,
//! `failureReason` and `trellisError` for each error the proxy can make to
//! a service's request today, no credential anywhere in the file, a
//! blocked destination that costs requests nothing but a drop counter, and
//! retries counted with the target that finally answered.
//!
//! Requests the proxy refuses before it knows their service (no service
//! for the host, a first request head it cannot parse) are not logged, as
//! in Lattice; the first test checks that too.

use crate::harness::{Control, PUSH_WAIT, Proxy, basic_mesh, forward, wait_for_backend};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trellis_tests::{
    EchoBackend, Http1Connection, RawConnection, http1_request, raw_request, refusing_addr,
};

const RAW_WAIT: Duration = Duration::from_secs(20);

/// Values that must never reach the log.
const SECRETS: [&str; 4] = [
    "SECRET-BEARER-TOKEN",
    "SECRET-COOKIE",
    "SECRET-QUERY-TOKEN",
    "SECRET-PROXY-AUTH",
];

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The line of the request with `x-request-id: id`, once written.
async fn line_for(path: &Path, id: &str) -> Value {
    let (path, id) = (path.to_path_buf(), id.to_string());
    trellis_tests::eventually(&format!("the access log line of {id}"), PUSH_WAIT, || {
        let (path, id) = (path.clone(), id.clone());
        async move {
            lines(&path)
                .into_iter()
                .find(|l| l["requestId"] == id.as_str())
        }
    })
    .await
    .unwrap()
}

fn check(line: &Value, status: Option<u16>, failure: Option<&str>, trellis: Option<&str>) {
    let id = &line["requestId"];
    assert_eq!(
        line["responseCode"].as_u64(),
        status.map(u64::from),
        "{id}: {line}"
    );
    assert_eq!(line["failureReason"].as_str(), failure, "{id}: {line}");
    assert_eq!(line["trellisError"].as_str(), trellis, "{id}: {line}");
    assert_eq!(line["service"], "svc", "{id}");
    assert_eq!(line["listener"], "http", "{id}");
    assert_eq!(line["serviceNetwork"], "net", "{id}");
}

async fn get_with_id(px: &Proxy, host: &str, path: &str, id: &str) -> u16 {
    http1_request(
        px.outbound,
        host,
        "GET",
        path,
        &[("x-request-id", id)],
        Vec::new(),
    )
    .await
    .unwrap()
    .status
    .as_u16()
}

async fn stats(px: &Proxy) -> Value {
    let r = http1_request(px.admin, "admin", "GET", "/stats", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    r.json().unwrap()["accessLog"].clone()
}

#[tokio::test]
async fn one_line_per_request_with_lattice_failure_reasons_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/net/access.log");
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let ok = EchoBackend::start_named("ok").await.unwrap();
    let slow = EchoBackend::new("slow")
        .delay(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let refused = refusing_addr();
    let no_checks = json!({"enabled": false});
    for (name, port, targets) in [
        ("refused", refused.port(), json!([{"address": "127.0.0.1"}])),
        ("empty", 80, json!([])),
    ] {
        api.put(
            "target-groups",
            json!({"name": name, "port": port, "targets": targets, "healthCheck": no_checks}),
        )
        .await;
    }
    let listener = json!({
        "name": "http",
        "defaultAction": forward("ok"),
        "rules": [
            {"name": "slow", "priority": 1, "match": {"path": {"type": "prefix", "value": "/slow"}}, "action": forward("slow")},
            {"name": "refused", "priority": 2, "match": {"path": {"type": "prefix", "value": "/refused"}}, "action": forward("refused")},
            {"name": "empty", "priority": 3, "match": {"path": {"type": "prefix", "value": "/empty"}}, "action": forward("empty")},
            {"name": "fixed", "priority": 4, "match": {"path": {"type": "prefix", "value": "/gone"}}, "action": {"fixedResponse": {"statusCode": 410}}},
            {"name": "limited", "priority": 5, "match": {"path": {"type": "prefix", "value": "/limited"}}, "action": forward("ok"),
             "rateLimit": {"requestsPerSecond": 1, "burst": 1}}
        ]
    });
    let host = basic_mesh(api, &[&ok, &slow], listener).await;
    // On the network: the service inherits it.
    let sub = api
        .put(
            "access-log-subscriptions",
            json!({"name": "net-log", "resource": {"serviceNetwork": "net"},
                   "destination": {"file": {"path": log.to_str().unwrap()}}}),
        )
        .await;
    assert!(sub["id"].as_str().unwrap().starts_with("als-"), "{sub}");
    assert_eq!(sub["destination"]["file"]["maxBytes"], 100 * 1024 * 1024);
    assert_eq!(sub["destination"]["file"]["maxFiles"], 5);

    let mut cfg = Proxy::config("p1", &cp.url(), &dir.path().join("p1"), &["net"]);
    cfg.upstream_timeout = Duration::from_millis(500);
    cfg.max_request_body_bytes = 1024;
    let mut px = Proxy::start(cfg).await;
    wait_for_backend(&px, &host, "/", "ok").await;
    let out = px.outbound;

    // 200, with credentials in every place a client puts them.
    let r = http1_request(
        out,
        &host,
        "GET",
        "/hello/world?token=SECRET-QUERY-TOKEN&x=1",
        &[
            ("x-request-id", "als-ok"),
            ("authorization", "Bearer SECRET-BEARER-TOKEN"),
            ("cookie", "session=SECRET-COOKIE"),
            ("proxy-authorization", "Basic SECRET-PROXY-AUTH"),
            ("user-agent", "access-log-test/1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let l = line_for(&log, "als-ok").await;
    check(&l, Some(200), None, None);
    assert_eq!(l["requestPath"], "/hello/world", "no query string");
    assert_eq!(l["requestMethod"], "GET");
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["hostHeader"], host.as_str());
    assert_eq!(l["userAgent"], "access-log-test/1");
    assert_eq!(l["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(l["targetGroup"], "ok");
    assert_eq!(l["targetIpPort"], format!("127.0.0.1:{}", ok.port()));
    assert!(l["rule"].is_null(), "the default action: {l}");
    assert_eq!(l["bytesSent"].as_u64(), Some(r.body.len() as u64));
    assert!(
        l["sourceIpPort"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(l["requestToTargetDuration"].is_u64());
    assert!(l["responseFromTargetDuration"].is_u64());
    assert_eq!(l["retries"], 0);
    assert!(l["startTime"].as_str().unwrap().ends_with('Z'));

    // A fixed response: no failure, but its reason when not a success.
    assert_eq!(get_with_id(&px, &host, "/gone", "als-fixed").await, 410);
    let l = line_for(&log, "als-fixed").await;
    check(&l, Some(410), None, Some("fixed_response"));
    assert_eq!(l["rule"], "fixed");
    assert!(l["targetGroup"].is_null() && l["requestToTargetDuration"].is_null());

    // 502: the target refuses connections.
    assert_eq!(
        get_with_id(&px, &host, "/refused", "als-refused").await,
        502
    );
    let l = line_for(&log, "als-refused").await;
    check(
        &l,
        Some(502),
        Some("TargetConnectionError"),
        Some("upstream_connect_failed"),
    );
    assert_eq!(l["targetGroup"], "refused");
    assert_eq!(l["targetIpPort"], format!("127.0.0.1:{}", refused.port()));
    assert!(l["responseFromTargetDuration"].is_null());

    // 503: no target to send to.
    assert_eq!(get_with_id(&px, &host, "/empty", "als-empty").await, 503);
    let l = line_for(&log, "als-empty").await;
    check(
        &l,
        Some(503),
        Some("TargetConnectionError"),
        Some("no_healthy_target"),
    );
    assert_eq!(l["targetGroup"], "empty");
    assert!(l["targetIpPort"].is_null());

    // 504: the target is too slow.
    assert_eq!(get_with_id(&px, &host, "/slow", "als-slow").await, 504);
    let l = line_for(&log, "als-slow").await;
    check(
        &l,
        Some(504),
        Some("TargetDataTimeout"),
        Some("upstream_timeout"),
    );
    assert!(l["requestToTargetDuration"].as_u64().unwrap() >= 500, "{l}");
    assert!(l["duration"].as_u64().unwrap() >= 500, "{l}");

    // 429: the rule's rate limit (burst 1) is used up.
    let mut limited = Vec::new();
    for i in 0..3 {
        let id = format!("als-limited-{i}");
        limited.push((get_with_id(&px, &host, "/limited", &id).await, id));
    }
    let (_, id) = limited
        .iter()
        .find(|(s, _)| *s == 429)
        .expect("one of three requests within a second is rate limited");
    let l = line_for(&log, id).await;
    check(
        &l,
        Some(429),
        Some("ClientRateLimited"),
        Some("rate_limited"),
    );
    assert_eq!(l["rule"], "limited");

    // 413: a declared body over the limit (refused before routing, yet
    // logged to the service it names) ...
    let r = http1_request(
        out,
        &host,
        "POST",
        "/upload",
        &[("x-request-id", "als-413")],
        vec![b'x'; 4096],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413);
    let l = line_for(&log, "als-413").await;
    check(
        &l,
        Some(413),
        Some("ClientProtocolError"),
        Some("body_too_large"),
    );
    assert_eq!(l["requestMethod"], "POST");

    // ... and a chunked one that grows past it on its way to the target.
    let mut chunked = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nx-request-id: als-413-chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'y'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        raw_request(out, &chunked, RAW_WAIT).await.unwrap().status,
        413
    );
    let l = line_for(&log, "als-413-chunked").await;
    check(
        &l,
        Some(413),
        Some("ClientProtocolError"),
        Some("body_too_large"),
    );

    // 400 and 431 on a kept-alive connection, where hyper parsed the head
    // and the proxy's checks refuse it (the first head of a connection is
    // judged before routing and is not logged).
    let mut conn = RawConnection::connect(out).await.unwrap();
    conn.send(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nx-request-id: als-keep\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(conn.read_response(RAW_WAIT).await.unwrap().status, 200);
    conn.send(
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nHost: other.example.com\r\nx-request-id: als-400\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(conn.read_response(RAW_WAIT).await.unwrap().status, 400);
    let l = line_for(&log, "als-400").await;
    check(
        &l,
        Some(400),
        Some("ClientProtocolError"),
        Some("bad_request"),
    );
    let mut conn = RawConnection::connect(out).await.unwrap();
    conn.send(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(conn.read_response(RAW_WAIT).await.unwrap().status, 200);
    let huge = "h".repeat(61 * 1024);
    conn.send(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nx-request-id: als-431\r\nx-big: {huge}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(conn.read_response(RAW_WAIT).await.unwrap().status, 431);
    let l = line_for(&log, "als-431").await;
    check(
        &l,
        Some(431),
        Some("ClientProtocolError"),
        Some("headers_too_large"),
    );

    // The client goes away while the target is still thinking: no
    // response code, ClientConnectionClosed.
    let mut conn = RawConnection::connect(out).await.unwrap();
    conn.send(
        format!("GET /slow HTTP/1.1\r\nHost: {host}\r\nx-request-id: als-gone\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(conn);
    let l = line_for(&log, "als-gone").await;
    check(&l, None, Some("ClientConnectionClosed"), None);
    assert_eq!(l["targetGroup"], "slow");

    // Not logged: no service for the host, a broken first head.
    assert_eq!(
        get_with_id(&px, "unknown.example.com", "/", "als-no-service").await,
        404
    );
    let r = raw_request(
        out,
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nx-request-id: als-broken\r\nbad header line\r\n\r\n"
        )
        .as_bytes(),
        RAW_WAIT,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    // A marker request after them: once it is in, they would be too.
    assert_eq!(get_with_id(&px, &host, "/", "als-last").await, 200);
    line_for(&log, "als-last").await;

    let all = lines(&log);
    for id in ["als-no-service", "als-broken"] {
        assert!(
            !all.iter().any(|l| l["requestId"] == id),
            "{id} must not be logged"
        );
    }
    // One line per request: every id at most once.
    let mut ids: Vec<&str> = all.iter().filter_map(|l| l["requestId"].as_str()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a request id logged twice");
    // Every line has every field, and no secret is anywhere.
    let text = std::fs::read_to_string(&log).unwrap();
    for s in SECRETS {
        assert!(!text.contains(s), "{s} leaked into the access log");
    }
    let fields = all[0].as_object().unwrap().len();
    assert_eq!(fields, 30);
    assert!(all.iter().all(|l| l.as_object().unwrap().len() == fields));

    let s = stats(&px).await;
    assert_eq!(s["dropped"], 0, "{s}");
    assert_eq!(s["written"].as_u64(), Some(all.len() as u64), "{s}");

    px.stop().await;
    cp.stop().await;
}

/// Send `n` GETs over `conns` keep-alive connections at once; every one
/// must succeed.
async fn load(px: &Proxy, host: &str, conns: usize, n: usize) {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (out, host) = (px.outbound, host.to_string());
        let per = n / conns + usize::from(c < n % conns);
        tasks.push(tokio::spawn(async move {
            let mut conn = Http1Connection::connect(out).await.unwrap();
            for _ in 0..per {
                let r = conn
                    .request(&host, "GET", "/", &[], Vec::new())
                    .await
                    .unwrap();
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_blocked_destination_drops_lines_and_never_slows_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let ok = EchoBackend::start_named("ok").await.unwrap();
    let host = basic_mesh(
        api,
        &[&ok],
        json!({"name": "http", "defaultAction": forward("ok")}),
    )
    .await;
    // An unwritable path: a regular file where a directory should be.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let unwritable: PathBuf = blocker.join("access.log");
    api.put(
        "access-log-subscriptions",
        json!({"name": "svc-log", "resource": {"service": "svc"},
               "destination": {"file": {"path": unwritable.to_str().unwrap()}}}),
    )
    .await;
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_for_backend(&px, &host, "/", "ok").await;

    let before = stats(&px).await["dropped"].as_u64().unwrap();
    load(&px, &host, 2, 50).await;
    let (admin, want) = (px.admin, before + 50);
    let s = trellis_tests::eventually("50 more lines dropped", PUSH_WAIT, || async move {
        let r = http1_request(admin, "admin", "GET", "/stats", &[], Vec::new())
            .await
            .ok()?;
        let s = r.json().ok()?["accessLog"].clone();
        (s["dropped"].as_u64()? >= want).then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(s["written"], 0, "{s}");
    let dest = &s["destinations"][0];
    assert_eq!(
        dest["destination"],
        format!("file:{}", unwritable.display()),
        "{s}"
    );
    assert!(dest["lastError"].is_string(), "{s}");

    // A FIFO nobody reads: the writer thread blocks; the queue fills; the
    // rest is dropped, and requests go on as before.
    let fifo = dir.path().join("fifo.log");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let version = px.running.as_ref().unwrap().snapshot_version().unwrap();
    api.put(
        "access-log-subscriptions",
        json!({"name": "svc-log", "resource": {"service": "svc"},
               "destination": {"file": {"path": fifo.to_str().unwrap()}}}),
    )
    .await;
    px.running
        .as_ref()
        .unwrap()
        .wait_for_version(version + 1, PUSH_WAIT)
        .await
        .unwrap();
    let before = stats(&px).await["dropped"].as_u64().unwrap();
    let capacity = stats(&px).await["queueCapacity"].as_u64().unwrap() as usize;
    let n = capacity + 500;
    let started = Instant::now();
    load(&px, &host, 4, n).await;
    let took = started.elapsed();
    let s = stats(&px).await;
    let dropped = s["dropped"].as_u64().unwrap() - before;
    // The writer holds at most one batch (256 lines) besides the queue.
    assert!(
        dropped >= 500 - 256,
        "{dropped} dropped of {n} (took {took:?}): {s}"
    );
    assert_eq!(s["written"], 0, "{s}");
    // Unblock the writer so the proxy can stop: read the FIFO.
    let reader = std::thread::spawn(move || std::fs::read(&fifo).map(|b| b.len()));
    px.stop().await;
    cp.stop().await;
    drop(reader);
}

#[tokio::test]
async fn retries_and_the_target_that_answered_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    // Always 500: a retry goes to the other target of the group.
    let bad = EchoBackend::new("bad").fail_every(1).start().await.unwrap();
    let good = EchoBackend::start_named("good").await.unwrap();
    api.put(
        "target-groups",
        json!({"name": "pair", "port": bad.port(), "healthCheck": {"enabled": false},
               "targets": [{"address": "127.0.0.1"}, {"address": "127.0.0.1", "port": good.port()}]}),
    )
    .await;
    let host = basic_mesh(
        api,
        &[&good],
        json!({"name": "http", "defaultAction": forward("good"), "rules": [
            {"name": "retried", "priority": 1, "match": {"path": {"type": "prefix", "value": "/retried"}},
             "action": forward("pair"), "retryPolicy": {"maxAttempts": 2, "retryOn": ["500"], "budgetPercent": 100, "minRetriesPerSecond": 10000}}]}),
    )
    .await;
    api.put(
        "access-log-subscriptions",
        json!({"name": "svc-log", "resource": {"service": "svc"},
               "destination": {"file": {"path": log.to_str().unwrap()}}}),
    )
    .await;
    let mut px = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_for_backend(&px, &host, "/", "good").await;
    let mut retried = None;
    for i in 0..4 {
        let id = format!("als-retried-{i}");
        assert_eq!(get_with_id(&px, &host, "/retried", &id).await, 200);
        let l = line_for(&log, &id).await;
        check(&l, Some(200), None, None);
        assert_eq!(
            l["targetIpPort"],
            format!("127.0.0.1:{}", good.port()),
            "{l}"
        );
        if l["retries"] == 1 {
            retried = Some(l);
        }
    }
    let l = retried.expect("round robin sends one of four requests to the bad target first");
    assert_eq!(l["targetGroup"], "pair");
    assert!(bad.requests() >= 1);
    px.stop().await;
    cp.stop().await;
}
