//! Control-plane snapshot compile time: resources -> one proxy's Snapshot,
//! for 10,000 services × 10 rules in one network (the same shape as the
//! routing bench), and for a proxy whose scope holds only 1 % of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use std::time::Duration;
use trellis_config::{Kind, ProxyRegistration};
use trellis_control::compile::compile;
use trellis_control::keys;
use trellis_control::model::Model;
use trellis_control::store::KeyValue;

fn kv(key: String, value: serde_json::Value) -> KeyValue {
    KeyValue {
        key,
        value: serde_json::to_vec(&value).unwrap(),
        create_revision: 1,
        mod_revision: 1,
    }
}

fn meta(kind: Kind, i: usize) -> serde_json::Value {
    json!({"id": format!("{}-{i:016x}", kind.id_prefix()), "account": "000000000000", "version": 1, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"})
}

fn resource(kind: Kind, i: usize, spec: serde_json::Value) -> KeyValue {
    let m = meta(kind, i);
    let id = m["id"].as_str().unwrap().to_string();
    kv(keys::resource(kind, &id), json!({"meta": m, "spec": spec}))
}

/// `services` services in network `net` (index 0) or, for `small_every`,
/// every n-th one also in network `small` (index 1).
fn model(services: usize, rules: usize, small_every: usize) -> Model {
    let mut kvs = vec![
        resource(Kind::ServiceNetwork, 0, json!({"name": "net"})),
        resource(Kind::ServiceNetwork, 1, json!({"name": "small"})),
    ];
    for i in 0..services {
        for color in ["blue", "green"] {
            let n = i * 2 + usize::from(color == "green");
            kvs.push(resource(
                Kind::TargetGroup,
                n,
                json!({"name": format!("tg-{i}-{color}"), "port": 8080, "targets": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}]}),
            ));
        }
        let fwd = |tg: &str| json!({"forward": {"targetGroups": [{"targetGroup": format!("tg-{i}-{tg}"), "weight": 1}]}});
        let rules: Vec<_> = (0..rules)
            .map(|r| {
                let m = match r % 4 {
                    0 => json!({"path": {"type": "prefix", "value": format!("/r{r}/")}}),
                    1 => json!({"path": {"type": "exact", "value": format!("/r{r}"), "caseSensitive": false}}),
                    2 => json!({"headers": [{"name": "x-route", "type": "exact", "value": format!("r{r}")}]}),
                    _ => json!({"method": "POST", "path": {"type": "prefix", "value": format!("/r{r}/")}}),
                };
                json!({"name": format!("r{r}"), "priority": r + 1, "match": m, "action": fwd(if r % 2 == 0 { "blue" } else { "green" })})
            })
            .collect();
        kvs.push(resource(
            Kind::Service,
            i,
            json!({"name": format!("svc-{i}"), "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "defaultAction": fwd("blue"), "rules": rules}]}),
        ));
        kvs.push(resource(Kind::ServiceAssociation, i * 2, json!({"name": format!("a-{i}"), "serviceNetwork": "net", "service": format!("svc-{i}")})));
        if small_every > 0 && i % small_every == 0 {
            kvs.push(resource(Kind::ServiceAssociation, i * 2 + 1, json!({"name": format!("s-{i}"), "serviceNetwork": "small", "service": format!("svc-{i}")})));
        }
    }
    Model::load(&kvs, 1)
}

fn reg(network: &str) -> ProxyRegistration {
    ProxyRegistration {
        name: "bench".into(),
        account: None,
        group: None,
        inbound_address: None,
        service_networks: vec![network.into()],
    }
}

fn bench(c: &mut Criterion) {
    let m = model(10_000, 10, 100);
    let full = compile(&m, &reg("net"));
    assert_eq!(full.services.len(), 10_000);
    assert_eq!(full.target_groups.len(), 20_000);
    let mut g = c.benchmark_group("compile");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("10k_services_x10_rules_full_scope", |b| {
        b.iter(|| black_box(compile(black_box(&m), &reg("net"))))
    });
    g.bench_function("10k_services_x10_rules_1pct_scope", |b| {
        b.iter(|| black_box(compile(black_box(&m), &reg("small"))))
    });
    g.bench_function("serialize_full_snapshot_json", |b| {
        b.iter(|| black_box(serde_json::to_vec(&full).unwrap().len()))
    });
    g.finish();
    println!(
        "full snapshot JSON: {} bytes",
        serde_json::to_vec(&full).unwrap().len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
