//! Routing table: preparing it for a large snapshot, and one lookup.
//!
//! 10,000 services x 1 listener x 10 rules (see
//! `trellis_benches::synthetic_snapshot`). Run with
//! `cargo bench -p trellis-benches --bench routing`; about half a minute.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use trellis_benches::{miss_request, rule_request, service_host, synthetic_snapshot};
use trellis_proxy::route::{Route, RouteTable};

const SERVICES: usize = 10_000;
const RULES: usize = 10;

fn routing(c: &mut Criterion) {
    let snapshot = synthetic_snapshot(SERVICES, RULES);
    let table = match RouteTable::build(&snapshot) {
        Ok(t) => t,
        Err(e) => panic!("synthetic snapshot does not build: {e}"),
    };

    let mut g = c.benchmark_group("route_table");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("build/10k_services_10_rules", |b| {
        b.iter(|| RouteTable::build(black_box(&snapshot)))
    });
    g.finish();

    let last = service_host(SERVICES - 1);
    let last_upper = format!("{}:80", last.to_ascii_uppercase());
    let hit = rule_request(RULES - 1);
    let miss = miss_request();
    // The inputs must take the routes their names say, or the numbers lie.
    assert_rule(&table, &last, &hit, Some("r9"));
    assert_rule(&table, &last_upper, &hit, Some("r9"));
    assert_rule(&table, &last, &miss, None);
    assert!(matches!(
        table.route("nobody.example", &miss.0, &miss.1, &miss.2),
        Route::NoService
    ));

    let mut g = c.benchmark_group("route");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, host, req) in [
        ("hit_rule_10", last.as_str(), &hit),
        (
            "hit_rule_10_upper_case_host_port",
            last_upper.as_str(),
            &hit,
        ),
        ("default_action_all_rules_missed", last.as_str(), &miss),
        ("unknown_host", "nobody.example", &miss),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = table.route(
                    black_box(host),
                    black_box(&req.0),
                    black_box(&req.1),
                    black_box(&req.2),
                );
                // Include the weighted choice a forward needs.
                if let Route::Forward { groups, .. } = &r {
                    black_box(groups.pick());
                }
                black_box(r);
            })
        });
    }
    g.finish();
}

fn assert_rule(
    t: &RouteTable,
    host: &str,
    req: &(http::Method, String, http::HeaderMap),
    rule: Option<&str>,
) {
    match t.route(host, &req.0, &req.1, &req.2) {
        Route::Fixed { info, .. } | Route::Forward { info, .. } => assert_eq!(info.rule, rule),
        other => panic!("{host}: expected rule {rule:?}, got {other:?}"),
    }
}

criterion_group!(benches, routing);
criterion_main!(benches);
