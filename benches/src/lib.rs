//! Shared inputs for Trellis benchmarks: synthetic snapshots of any size
//! and requests known to take a given route through them, so every bench
//! measures the same, documented shape of configuration.
#![forbid(unsafe_code)]

use http::{HeaderMap, HeaderValue, Method};
use trellis_config::{
    Action, AuthType, FixedResponseAction, ForwardAction, HeaderMatch, ListenerProtocol,
    ListenerSpec, MatchType, PathMatch, PathMatchType, RuleMatch, RuleSpec, Snapshot,
    SnapshotNetwork, SnapshotService, SnapshotTarget, SnapshotTargetGroup, TargetProtocol,
    WeightedTargetGroup, dns_name,
};

/// The one network every synthetic service belongs to.
pub const NETWORK: &str = "net-0";

/// Header that the header rules of [`synthetic_snapshot`] match on.
pub const ROUTE_HEADER: &str = "x-route";

/// The generated host name of synthetic service `i`.
pub fn service_host(i: usize) -> String {
    dns_name(&format!("svc-{i}"), NETWORK)
}

/// A snapshot with `services` services, each with:
///
/// - two hosts: [`service_host`]`(i)` and `svc-{i}.example.com`;
/// - one HTTP listener on port 80 whose default action answers 404;
/// - `rules` rules (priority `r + 1` for rule `r`), their kind cycling
///   through four shapes so a lookup exercises every comparison:
///   - `r % 4 == 0`: path prefix `/r{r}/` (case-sensitive) -> blue
///   - `r % 4 == 1`: path exact `/r{r}` (case-insensitive) -> blue 90 / green 10
///   - `r % 4 == 2`: header `x-route` exact `r{r}` -> green
///   - `r % 4 == 3`: method `POST` and path prefix `/r{r}/` -> 503 fixed
/// - two target groups, `tg-{i}-blue` and `tg-{i}-green` (round robin and
///   least request), each with two targets on one address.
///
/// [`rule_request`] builds a request that matches rule `r` and no earlier
/// one; [`miss_request`] one that matches no rule.
pub fn synthetic_snapshot(services: usize, rules: usize) -> Snapshot {
    let mut snapshot = Snapshot {
        version: 1,
        proxy: "bench-proxy".into(),
        networks: vec![SnapshotNetwork {
            accounts: Vec::new(),
            id: "sn-0".into(),
            name: NETWORK.into(),
            account: trellis_config::limits::DEFAULT_ACCOUNT.into(),
            auth_type: AuthType::None,
            auth_policy: None,
        }],
        services: Vec::with_capacity(services),
        target_groups: Vec::with_capacity(services * 2),
        ..Snapshot::default()
    };
    for i in 0..services {
        let (blue, green) = (format!("tg-{i}-blue"), format!("tg-{i}-green"));
        snapshot.services.push(SnapshotService {
            idle_timeout_seconds: 60,
            rate_limit: None,
            access_logs: Vec::new(),
            id: format!("svc-id-{i}"),
            name: format!("svc-{i}"),
            account: trellis_config::limits::DEFAULT_ACCOUNT.into(),
            networks: vec!["sn-0".into()],
            hosts: vec![service_host(i), format!("svc-{i}.example.com")],
            auth_type: AuthType::None,
            auth_policy: None,
            listeners: vec![ListenerSpec {
                timeout_ms: None,
                retry_policy: None,
                name: "http".into(),
                protocol: ListenerProtocol::Http,
                port: 80,
                default_action: fixed(404),
                rules: (0..rules).map(|r| rule(r, &blue, &green)).collect(),
            }],
        });
        let address = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        for (id, algorithm) in [
            (blue, trellis_config::Algorithm::RoundRobin),
            (green, trellis_config::Algorithm::LeastRequest),
        ] {
            snapshot
                .target_groups
                .push(target_group(id, algorithm, &address));
        }
    }
    snapshot
}

fn rule(r: usize, blue: &str, green: &str) -> RuleSpec {
    let path = |kind, value: String, case_sensitive| PathMatch {
        kind,
        value,
        case_sensitive,
    };
    let (matches, action) = match r % 4 {
        0 => (
            RuleMatch {
                path: Some(path(PathMatchType::Prefix, format!("/r{r}/"), true)),
                ..Default::default()
            },
            forward(&[(blue, 1)]),
        ),
        1 => (
            RuleMatch {
                path: Some(path(PathMatchType::Exact, format!("/r{r}"), false)),
                ..Default::default()
            },
            forward(&[(blue, 90), (green, 10)]),
        ),
        2 => (
            RuleMatch {
                headers: vec![HeaderMatch {
                    name: ROUTE_HEADER.into(),
                    kind: MatchType::Exact,
                    value: format!("r{r}"),
                    case_sensitive: false,
                }],
                ..Default::default()
            },
            forward(&[(green, 1)]),
        ),
        _ => (
            RuleMatch {
                method: Some("POST".into()),
                path: Some(path(PathMatchType::Prefix, format!("/r{r}/"), true)),
                ..Default::default()
            },
            fixed(503),
        ),
    };
    RuleSpec {
        timeout_ms: None,
        retry_policy: None,
        rate_limit: None,
        name: format!("r{r}"),
        priority: u16::try_from(r + 1).unwrap_or(u16::MAX),
        matches,
        action,
    }
}

fn forward(groups: &[(&str, u32)]) -> Action {
    Action::Forward(ForwardAction {
        target_groups: groups
            .iter()
            .map(|(id, weight)| WeightedTargetGroup {
                target_group: (*id).into(),
                weight: *weight,
            })
            .collect(),
    })
}

fn fixed(status_code: u16) -> Action {
    Action::FixedResponse(FixedResponseAction { status_code })
}

fn target_group(
    id: String,
    algorithm: trellis_config::Algorithm,
    address: &str,
) -> SnapshotTargetGroup {
    SnapshotTargetGroup {
        circuit_breaker: Default::default(),
        connection: Default::default(),
        outlier_detection: None,
        name: id.clone(),
        id,
        account: trellis_config::limits::DEFAULT_ACCOUNT.into(),
        protocol: TargetProtocol::Http,
        protocol_version: Default::default(),
        port: 8080,
        algorithm,
        health_check: Default::default(),
        targets: [8080, 8081]
            .into_iter()
            .map(|port| SnapshotTarget {
                draining: false,
                address: address.into(),
                port,
                proxy: None,
                via: None,
            })
            .collect(),
    }
}

/// Headers a typical client sends, so header rules have something to skip.
fn common_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("application/json"));
    h.insert(
        "x-request-id",
        HeaderValue::from_static("0f8e4c2a-9b1d-4e5f-8a7b-6c5d4e3f2a1b"),
    );
    h
}

/// Method, path and headers of a request that matches rule `r` (0-based)
/// of a [`synthetic_snapshot`] service and no rule before it.
pub fn rule_request(r: usize) -> (Method, String, HeaderMap) {
    let mut headers = common_headers();
    // Every request names a route header; only the header rule `r` may
    // accept it, so earlier header rules compare and fail.
    if let Ok(v) = HeaderValue::from_str(&format!("r{r}")) {
        headers.insert(ROUTE_HEADER, v);
    }
    match r % 4 {
        0 => (Method::GET, format!("/r{r}/items"), headers),
        // Upper case: the exact rules are case-insensitive.
        1 => (Method::GET, format!("/R{r}"), headers),
        2 => (Method::GET, "/other".into(), headers),
        _ => (Method::POST, format!("/r{r}/items"), headers),
    }
}

/// A request that matches no rule (it gets the default action) after
/// every rule has been tried.
pub fn miss_request() -> (Method, String, HeaderMap) {
    let mut headers = common_headers();
    headers.insert(ROUTE_HEADER, HeaderValue::from_static("none"));
    (Method::GET, "/no/such/route".into(), headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_proxy::route::{Route, RouteTable};

    fn rule_taken(t: &RouteTable, host: &str, req: &(Method, String, HeaderMap)) -> String {
        match t.route(host, &req.0, &req.1, &req.2) {
            Route::Fixed { info, .. } | Route::Forward { info, .. } => {
                info.rule.unwrap_or("default").to_string()
            }
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn each_rule_request_takes_its_rule() {
        let rules = 10;
        let s = synthetic_snapshot(3, rules);
        let t = match RouteTable::build(&s) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        for r in 0..rules {
            assert_eq!(
                rule_taken(&t, &service_host(2), &rule_request(r)),
                format!("r{r}")
            );
        }
        assert_eq!(rule_taken(&t, &service_host(2), &miss_request()), "default");
        assert_eq!(
            rule_taken(&t, "nobody.example", &miss_request()),
            "NoService"
        );
    }
}
