//! Tests of the whole table: a snapshot in, routes out.

use super::*;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;
use trellis_config::Snapshot;

fn tg(id: &str) -> serde_json::Value {
    json!({
        "id": id, "name": format!("{id}-name"), "account": "000000000000",
        "protocol": "HTTP", "protocolVersion": "HTTP1", "port": 80,
        "algorithm": "round_robin", "healthCheck": {}, "targets": []
    })
}

fn forward(id: &str) -> serde_json::Value {
    json!({"forward": {"targetGroups": [{"targetGroup": id}]}})
}

fn fixed(status: u16) -> serde_json::Value {
    json!({"fixedResponse": {"statusCode": status}})
}

fn service(id: &str, hosts: &[&str], listeners: serde_json::Value) -> serde_json::Value {
    json!({
        "id": id, "name": format!("{id}-name"), "account": "000000000000",
        "networks": ["net-1"], "hosts": hosts, "authType": "NONE",
        "listeners": listeners
    })
}

fn snapshot(services: Vec<serde_json::Value>, groups: &[&str]) -> Snapshot {
    serde_json::from_value(json!({
        "version": 1, "proxy": "p1", "networks": [],
        "services": services,
        "targetGroups": groups.iter().map(|g| tg(g)).collect::<Vec<_>>()
    }))
    .unwrap()
}

/// One service `api` on hosts `api.net.trellis.internal` and
/// `API.Example.com`, listeners on 80 and 8080; rules given out of order.
fn table() -> RouteTable {
    let rules = json!([
        {"name": "by-header", "priority": 30,
         "match": {"headers": [{"name": "X-Canary", "type": "exact", "value": "yes"}]},
         "action": forward("tg-canary")},
        {"name": "posts", "priority": 10,
         "match": {"method": "POST", "path": {"type": "prefix", "value": "/api"}},
         "action": fixed(405)},
        {"name": "api", "priority": 20,
         "match": {"path": {"type": "prefix", "value": "/api"}},
         "action": forward("tg-api")}
    ]);
    let s = snapshot(
        vec![
            service(
                "svc-api",
                &["api.net.trellis.internal", "API.Example.com"],
                json!([
                    {"name": "http", "protocol": "HTTP", "port": 80,
                     "defaultAction": fixed(404), "rules": rules},
                    {"name": "alt", "protocol": "HTTP", "port": 8080,
                     "defaultAction": forward("tg-alt")}
                ]),
            ),
            service(
                "svc-v6",
                &["v6.example"],
                json!([{"name": "http", "port": 80, "defaultAction": fixed(204)}]),
            ),
        ],
        &["tg-api", "tg-canary", "tg-alt"],
    );
    RouteTable::build(&s).unwrap()
}

fn route<'a>(t: &'a RouteTable, host: &str, method: Method, path: &str) -> Route<'a> {
    t.route(host, &method, path, &HeaderMap::new())
}

/// `(group picked, rule)` of a forward, `(status, rule)` of a fixed answer.
fn outcome(r: &Route<'_>) -> String {
    match r {
        Route::NoService => "no_service".into(),
        Route::NoListener { port } => format!("no_listener:{port}"),
        Route::Fixed { status, info } => format!("{status}:{}", info.rule.unwrap_or("default")),
        Route::Forward { groups, info } => {
            format!("{}:{}", groups.pick(), info.rule.unwrap_or("default"))
        }
    }
}

#[test]
fn rules_are_tried_in_priority_order() {
    let t = table();
    let host = "api.net.trellis.internal";
    // "posts" (10) comes before "api" (20) although listed after it.
    assert_eq!(
        outcome(&route(&t, host, Method::POST, "/api/x")),
        "405:posts"
    );
    assert_eq!(
        outcome(&route(&t, host, Method::GET, "/api/x")),
        "tg-api:api"
    );
    // "api" (20) wins over "by-header" (30) when both match.
    let mut h = HeaderMap::new();
    h.insert("x-canary", HeaderValue::from_static("yes"));
    let r = t.route(host, &Method::GET, "/api/x", &h);
    assert_eq!(outcome(&r), "tg-api:api");
    let r = t.route(host, &Method::GET, "/web", &h);
    assert_eq!(outcome(&r), "tg-canary:by-header");
}

#[test]
fn default_action_when_no_rule_matches() {
    let t = table();
    let r = route(&t, "api.net.trellis.internal", Method::GET, "/web");
    assert_eq!(outcome(&r), "404:default");
    let Route::Fixed { info, .. } = r else {
        panic!("expected a fixed answer");
    };
    assert_eq!(info.service_id, "svc-api");
    assert_eq!(info.service, "svc-api-name");
    assert_eq!(info.listener, "http");
    assert_eq!(info.rule, None);
}

#[test]
fn host_is_case_insensitive_and_may_carry_a_port() {
    let t = table();
    for host in [
        "API.NET.TRELLIS.INTERNAL",
        "api.example.com",
        "Api.Example.Com:80",
        "api.example.com.",
    ] {
        assert_eq!(
            outcome(&route(&t, host, Method::GET, "/api")),
            "tg-api:api",
            "{host}"
        );
    }
    let r = route(&t, "api.example.com:8080", Method::GET, "/api");
    assert_eq!(outcome(&r), "tg-alt:default");
    let Route::Forward { info, .. } = r else {
        panic!("expected a forward");
    };
    assert_eq!(info.listener, "alt");
}

#[test]
fn unknown_port_is_no_listener() {
    let t = table();
    let r = route(&t, "api.example.com:9999", Method::GET, "/");
    assert_eq!(outcome(&r), "no_listener:9999");
    let r = route(&t, "v6.example:443", Method::GET, "/");
    assert_eq!(outcome(&r), "no_listener:443");
}

#[test]
fn unknown_or_malformed_host_is_no_service() {
    let t = table();
    for host in [
        "other.example",
        "",
        "api.example.com:http",
        "[::1]:80",
        "::1",
    ] {
        assert_eq!(
            outcome(&route(&t, host, Method::GET, "/")),
            "no_service",
            "{host:?}"
        );
    }
}

#[test]
fn ipv6_literal_hosts() {
    let s = snapshot(
        vec![service(
            "svc-ip",
            &["fd00::1"],
            json!([{"name": "http", "port": 80, "defaultAction": fixed(204)},
                   {"name": "alt", "port": 8443, "defaultAction": fixed(202)}]),
        )],
        &[],
    );
    let t = RouteTable::build(&s).unwrap();
    assert_eq!(
        outcome(&route(&t, "[fd00::1]", Method::GET, "/")),
        "204:default"
    );
    assert_eq!(
        outcome(&route(&t, "[FD00::1]:80", Method::GET, "/")),
        "204:default"
    );
    assert_eq!(
        outcome(&route(&t, "[fd00::1]:8443", Method::GET, "/")),
        "202:default"
    );
    assert_eq!(
        outcome(&route(&t, "[fd00::1]:81", Method::GET, "/")),
        "no_listener:81"
    );
}

#[test]
fn unknown_target_group_fails_the_build() {
    let s = snapshot(
        vec![service(
            "svc-a",
            &["a.example"],
            json!([{"name": "http", "port": 80, "defaultAction": fixed(404),
                    "rules": [{"name": "r", "priority": 1,
                               "match": {"method": "GET"}, "action": forward("tg-gone")}]}]),
        )],
        &["tg-other"],
    );
    let err = RouteTable::build(&s).unwrap_err();
    assert!(
        matches!(&err, BuildError::UnknownTargetGroup { service, listener, target_group }
            if service == "svc-a-name" && listener == "http" && target_group == "tg-gone"),
        "{err}"
    );
}

#[test]
fn duplicate_host_fails_the_build() {
    let l = json!([{"name": "http", "port": 80, "defaultAction": fixed(404)}]);
    let s = snapshot(
        vec![
            service("svc-a", &["same.example"], l.clone()),
            service("svc-b", &["SAME.example"], l),
        ],
        &[],
    );
    let err = RouteTable::build(&s).unwrap_err();
    assert_eq!(
        err.to_string(),
        "host 'same.example' belongs to both service 'svc-a-name' and service 'svc-b-name'"
    );
}

#[test]
fn all_zero_weights_fail_the_build() {
    let s = snapshot(
        vec![service(
            "svc-a",
            &["a.example"],
            json!([{"name": "http", "port": 80, "defaultAction":
                {"forward": {"targetGroups": [{"targetGroup": "tg-a", "weight": 0}]}}}]),
        )],
        &["tg-a"],
    );
    assert!(matches!(
        RouteTable::build(&s),
        Err(BuildError::NoWeightedTargetGroup { .. })
    ));
}

#[test]
fn empty_snapshot_routes_nothing() {
    let t = RouteTable::build(&Snapshot::default()).unwrap();
    assert_eq!(t.service_count(), 0);
    assert_eq!(
        outcome(&route(&t, "a.example", Method::GET, "/")),
        "no_service"
    );
}

#[test]
fn counts() {
    let t = table();
    assert_eq!(t.service_count(), 2);
    assert_eq!(t.host_count(), 3);
}
