//! The access log's per-line work on its writer thread: one JSON line from
//! a finished request's record, into a reused buffer. Run with
//! `cargo bench -p trellis-benches --bench access_log`; a few seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Version};
use std::hint::black_box;
use std::time::{Duration, SystemTime};
use trellis_proxy::access_log_format::{Outcome, RequestRecord, write_line};

/// A typical record: a routed GET answered by a target.
fn record() -> RequestRecord {
    RequestRecord {
        start_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        service_network: Some("demo".into()),
        service: "catalog".into(),
        service_id: "svc-0123456789abcdef".into(),
        listener: "http".into(),
        rule: Some("canary".into()),
        target_group: Some("catalog-v1".into()),
        target_group_id: Some("tg-0123456789abcdef".into()),
        source: ([127, 0, 0, 1], 40_000).into(),
        target: Some("10.0.0.7:8080".into()),
        method: Method::GET,
        path: "/items/42".into(),
        version: Version::HTTP_11,
        host: Some("catalog.demo.trellis.internal".into()),
        user_agent: Some("wrk".into()),
        server_name: None,
        tls_version: None,
        status: Some(200),
        grpc_status: None,
        bytes_received: 0,
        bytes_sent: 2,
        duration: Duration::from_micros(1_700),
        request_to_target: Some(Duration::from_micros(1_500)),
        response_from_target: Some(Duration::from_micros(200)),
        request_id: "6939f9b4-05aa-4da0-911b-d49f541d9977".into(),
        caller_principal: None,
        caller_account: None,
        auth_denied_reason: None,
        outcome: Outcome::Upstream,
        failure_reason: None,
        retries: 0,
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
    }
}

fn access_log(c: &mut Criterion) {
    let r = record();
    let mut buf = Vec::with_capacity(64 * 1024);
    write_line(&r, &mut buf);
    assert!(buf.ends_with(b"\n") && buf.len() > 300, "not a line");
    let mut g = c.benchmark_group("access_log");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("write_line", |b| {
        b.iter(|| {
            buf.clear();
            write_line(black_box(&r), &mut buf);
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, access_log);
criterion_main!(benches);
