//! Auth-policy evaluation, per request, and compiling a policy.
//!
//! Two policies:
//!
//! - **20 statements** (the shape of a busy network policy): 5 Deny
//!   statements that every request must clear (admin paths, a debug
//!   header, a debug query parameter, `TRACE`, one banned account), then 15
//!   Allow statements: 7 for other accounts (rejected on the principal), 7
//!   for every caller whose last condition (the `x-team` header) fails, and
//!   the last one, which allows the benchmark's caller.
//! - **100 statements × 10 conditions** (issue 3's bench): 100 Allow
//!   statements for every caller, each with ten conditions over method,
//!   path, port, header, query, source account and workload, service,
//!   network and source IP; only the query-string value differs, so only
//!   the last statement applies. That is about 60 KB of JSON, over the 10 KB
//!   limit, so each statement is validated alone and the statements are
//!   assembled into one document before compiling.
//!
//! Headers come from a real `http::HeaderMap` through a newtype, as the
//! proxy will lend them.
//!
//! `authz`: the proxy's own path (`trellis_proxy::authz`) on a snapshot
//! of 1,000 services, half of them `IAM` with the 20-statement policy plus
//! a statement admitting anonymous `GET`s of `/public/*`: compiling every
//! policy of the snapshot (once per push), what a request to a service
//! without a check pays, and a full check of an allowed anonymous request
//! (finding the network from the host, gathering facts, evaluating).
//!
//! Run with `cargo bench -p trellis-benches --bench policy`; about 50 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Duration;
use trellis_config::AuthType;
use trellis_config::policy::{
    Caller, CompiledPolicy, Decision, DenyCause, HeaderLookup, Level, LevelAllow, PolicyDocument,
    RequestFacts, evaluate,
};

const ACCOUNT: &str = "100000000019";
const WORKLOAD: &str = "spiffe://trellis.local/account/100000000019/workload/web";

/// The proxy's way of lending headers: no copy, no allocation.
struct Headers<'a>(&'a HeaderMap);

impl HeaderLookup for Headers<'_> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(f)
    }
}

fn statement(effect: &str, principal: Value, resource: &str, condition: Value) -> Value {
    json!({"Effect": effect, "Principal": principal, "Action": "trellis:Invoke",
           "Resource": resource, "Condition": condition})
}

fn policy_20() -> Value {
    let mut s = vec![
        json!({"Sid": "NoAdmin", "Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke",
               "Resource": "*/admin/*"}),
        statement(
            "Deny",
            json!("*"),
            "*",
            json!({"StringEquals": {"trellis:RequestHeader/x-debug": "1"}}),
        ),
        statement(
            "Deny",
            json!("*"),
            "*",
            json!({"StringLike": {"trellis:RequestQueryString/debug": "*"}}),
        ),
        statement(
            "Deny",
            json!("*"),
            "*",
            json!({"StringEquals": {"trellis:RequestMethod": "TRACE"}}),
        ),
        statement("Deny", json!({"AWS": "999999999999"}), "*", json!({})),
    ];
    for i in 0..7 {
        s.push(statement(
            "Allow",
            json!({"AWS": [format!("1000000000{i:02}"), format!("spiffe://*/account/2000000000{i:02}/workload/*")]}),
            &format!("svc-{i}/*"),
            json!({"StringEquals": {"trellis:RequestMethod": ["GET", "HEAD"]}}),
        ));
    }
    for i in 0..7 {
        s.push(statement(
            "Allow",
            json!("*"),
            "api/*",
            json!({
                "StringEquals": {"trellis:RequestMethod": ["GET", "HEAD"]},
                "StringLike": {"trellis:RequestPath": "/v1/*", "trellis:RequestHeader/x-team": format!("team-{i}")}
            }),
        ));
    }
    s.push(json!({
        "Sid": "Web", "Effect": "Allow", "Principal": {"AWS": WORKLOAD}, "Action": "trellis:Invoke",
        "Resource": format!("trellis:{ACCOUNT}:service/api/v1/*"),
        "Condition": {
            "StringEquals": {"trellis:RequestMethod": ["GET", "HEAD"], "trellis:RequestHeader/x-team": "team-web"},
            "IpAddress": {"trellis:SourceIp": "10.0.0.0/8"}
        }
    }));
    json!({"Version": "2012-10-17", "Statement": s})
}

/// 100 statements, validated one by one (together they exceed 10 KB).
fn policy_100x10() -> PolicyDocument {
    let statements = (0..100)
        .flat_map(|i| {
            let one = statement(
                "Allow",
                json!("*"),
                "*",
                json!({
                    "StringEquals": {
                        "trellis:RequestMethod": ["GET", "HEAD"],
                        "trellis:RequestPort": "80",
                        "trellis:SourceAccount": ACCOUNT,
                        "trellis:Service": "api",
                        "trellis:ServiceNetwork": "shop",
                        "trellis:RequestQueryString/tenant": format!("t{i}")
                    },
                    "StringLike": {
                        "trellis:RequestPath": "/v1/*",
                        "trellis:RequestHeader/x-team": "team-*",
                        "trellis:SourceWorkload": "spiffe://trellis.local/*"
                    },
                    "IpAddress": {"trellis:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}
                }),
            );
            PolicyDocument::from_value(&json!({"Statement": [one]}))
                .unwrap_or_else(|e| panic!("{e}"))
                .statements
        })
        .collect();
    PolicyDocument {
        version: None,
        id: None,
        statements,
    }
}

fn headers(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("host", "api.shop.trellis.internal"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("x-request-id", "0123456789abcdef"),
    ]
    .iter()
    .chain(extra)
    {
        h.append(*n, HeaderValue::from_static(v));
    }
    h
}

fn facts<'r>(h: &'r Headers<'r>, query: &'r str, method: &'r str) -> RequestFacts<'r> {
    RequestFacts {
        caller: Some(Caller {
            account: ACCOUNT,
            workload: WORKLOAD,
        }),
        method,
        path: "/v1/orders/42",
        query,
        headers: h,
        port: 80,
        source_ip: Some("10.1.2.3".parse().unwrap()),
        service_network: Some("shop"),
        service: "api",
        service_account: ACCOUNT,
    }
}

fn policy(c: &mut Criterion) {
    let text_20 = policy_20().to_string();
    let p20 = CompiledPolicy::parse(&text_20).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p20.len(), 20);
    let doc_100 = policy_100x10();
    let p100 = CompiledPolicy::new(&doc_100);
    assert_eq!(p100.len(), 100);

    let web = headers(&[("x-team", "team-web")]);
    let web = Headers(&web);
    let debug = headers(&[("x-team", "team-web"), ("x-debug", "1")]);
    let debug = Headers(&debug);
    let other = headers(&[("x-team", "team-9")]);
    let other = Headers(&other);

    let allowed = facts(&web, "page=2", "GET");
    let denied = facts(&debug, "page=2", "GET");
    let nothing = facts(&other, "page=2", "GET");
    let anonymous = RequestFacts {
        caller: None,
        ..allowed
    };
    let last_of_100 = facts(&web, "page=2&tenant=t99", "GET");

    // The inputs must be decided the way their names say, or the numbers lie.
    let iam = AuthType::Iam;
    let svc = |p| Some((&iam, Some(p)));
    assert!(matches!(
        evaluate(None, svc(&p20), &allowed),
        Decision::Allowed { service: LevelAllow::Statement(s), .. } if s.index == 19
    ));
    assert!(matches!(
        evaluate(None, svc(&p20), &denied),
        Decision::Denied { cause: DenyCause::Statement(s), .. } if s.index == 1
    ));
    assert!(matches!(
        evaluate(None, svc(&p20), &nothing),
        Decision::Denied {
            cause: DenyCause::NoMatchingAllow,
            ..
        }
    ));
    assert!(matches!(
        evaluate(None, svc(&p20), &anonymous),
        Decision::Unauthenticated {
            level: Level::Service
        }
    ));
    assert!(evaluate(svc(&p20), svc(&p20), &allowed).is_allowed());
    assert!(matches!(
        evaluate(None, svc(&p100), &last_of_100),
        Decision::Allowed { service: LevelAllow::Statement(s), .. } if s.index == 99
    ));

    let mut g = c.benchmark_group("policy_eval");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, network, req) in [
        ("20_statements/allowed_by_last", None, &allowed),
        ("20_statements/explicit_deny", None, &denied),
        ("20_statements/implicit_deny", None, &nothing),
        ("20_statements/anonymous_401", None, &anonymous),
        ("20_statements/both_levels_allowed", svc(&p20), &allowed),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| evaluate(black_box(network), svc(&p20), black_box(req)))
        });
    }
    g.bench_function("100x10/allowed_by_last", |b| {
        b.iter(|| evaluate(None, svc(&p100), black_box(&last_of_100)))
    });
    g.finish();

    let mut g = c.benchmark_group("policy_compile");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("20_statements/parse_validate_compile", |b| {
        b.iter(|| CompiledPolicy::parse(black_box(&text_20)))
    });
    g.bench_function("100x10/compile_only", |b| {
        b.iter(|| CompiledPolicy::new(black_box(&doc_100)))
    });
    g.finish();
}

fn authz(c: &mut Criterion) {
    use trellis_proxy::authz::{Policies, check};
    const SERVICES: usize = 1_000;
    let mut snapshot = trellis_benches::synthetic_snapshot(SERVICES, 1);
    let mut doc = policy_20();
    if let Some(st) = doc["Statement"].as_array_mut() {
        st.insert(
            0,
            json!({"Sid": "Public", "Effect": "Allow", "Principal": {"AWS": "anonymous"},
                   "Action": "trellis:Invoke", "Resource": "*/public/*",
                   "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"}}}),
        );
    }
    for (i, svc) in snapshot.services.iter_mut().enumerate() {
        if i % 2 == 1 {
            svc.auth_type = AuthType::Iam;
            svc.auth_policy = Some(doc.clone());
        }
    }
    let policies = Policies::build(&snapshot, "bench-proxy").unwrap_or_else(|e| panic!("{e}"));
    let (open_id, open_host) = ("svc-id-0".to_string(), trellis_benches::service_host(0));
    let last = SERVICES - 1;
    let (iam_id, iam_host) = (
        format!("svc-id-{last}"),
        trellis_benches::service_host(last),
    );
    let req = http::Request::get("/public/page?x=1")
        .header("x-team", "team-web")
        .body(())
        .unwrap();
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    // The inputs must be decided the way their names say.
    assert!(!policies.guarded(&open_id));
    assert!(policies.guarded(&iam_id));
    let subject = policies.outbound(&iam_id, &iam_host, 80).unwrap();
    assert!(check(&subject, &req, None, ip).is_ok());
    let admin = http::Request::get("/admin/x").body(()).unwrap();
    assert!(check(&subject, &admin, None, ip).is_err());

    let mut g = c.benchmark_group("authz");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("build/1k_services_500_policies_of_21", |b| {
        b.iter(|| Policies::build(black_box(&snapshot), "bench-proxy"))
    });
    g.finish();
    let mut g = c.benchmark_group("authz");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("request/service_without_check", |b| {
        b.iter(|| {
            black_box(policies.guarded(black_box(&open_id)))
                .then(|| policies.outbound(&open_id, &open_host, 80))
        })
    });
    g.bench_function("request/anonymous_get_allowed_21_statements", |b| {
        b.iter(|| {
            let s = policies
                .outbound(black_box(&iam_id), black_box(&iam_host), 80)
                .unwrap();
            check(&s, black_box(&req), None, ip)
        })
    });
    g.finish();
}

criterion_group!(benches, policy, authz);
criterion_main!(benches);
