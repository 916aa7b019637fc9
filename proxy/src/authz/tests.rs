//! Policies compiled from a snapshot and checked as the listeners check
//! them: principals naming accounts and workloads (callers with a mesh
//! identity), anonymous callers, both levels, the network a host names,
//! and the route an inbound request claims.

use super::*;
use crate::error::Reason;
use http::Request;
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use trellis_config::identity::WorkloadIdentity;
use trellis_config::policy::Level;

const ACCOUNT: &str = "111122223333";
const OTHER: &str = "444455556666";

fn id(account: &str, workload: &str) -> WorkloadIdentity {
    format!("spiffe://trellis.local/account/{account}/workload/{workload}")
        .parse()
        .unwrap()
}

fn allow(principal: Value, extra: Value) -> Value {
    let mut s = json!({"Effect": "Allow", "Principal": principal, "Action": "trellis:Invoke",
        "Resource": "*"});
    if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    s
}

/// Networks `blue` (sn-1) and `green` (sn-2); service `api` (svc-1) in
/// both, forwarding to `tg-1` whose target `10.0.0.1:80` proxy `front`
/// fronts (and `tg-2`, direct); `front`'s view of `api` as a fronted
/// service.
fn snapshot(
    net: (&str, Option<Value>),
    green: (&str, Option<Value>),
    svc: (&str, Option<Value>),
) -> Snapshot {
    let policy = |p: Option<Value>| p.unwrap_or(Value::Null);
    let network = |id: &str, name: &str, (auth, p): (&str, Option<Value>)| json!({"id": id, "name": name, "account": ACCOUNT, "authType": auth, "authPolicy": policy(p)});
    let (svc_auth, svc_policy) = svc;
    let svc_policy = policy(svc_policy);
    let tg = |id: &str, target: Value| {
        json!({"id": id, "name": id, "account": ACCOUNT, "protocol": "HTTP", "protocolVersion": "HTTP1",
          "port": 80, "algorithm": "round_robin",
          "healthCheck": {"enabled": true, "path": "/health"}, "targets": [target]})
    };
    let v = json!({
        "version": 1, "proxy": "front",
        "networks": [network("sn-1", "blue", net.clone()), network("sn-2", "green", green.clone())],
        "services": [{"id": "svc-1", "name": "api", "account": ACCOUNT, "networks": ["sn-1", "sn-2"],
            "hosts": ["api.blue.trellis.internal", "api.green.trellis.internal", "api.example.com"],
            "authType": svc_auth, "authPolicy": svc_policy, "listeners": []}],
        "targetGroups": [
            tg("tg-1", json!({"address": "10.0.0.1", "port": 80, "proxy": "front"})),
            tg("tg-2", json!({"address": "10.0.0.2", "port": 80}))
        ],
        "frontedServices": [{"id": "svc-1", "name": "api", "account": ACCOUNT,
            "networks": ["sn-1", "sn-2"], "ports": [80], "targetGroups": ["tg-1"],
            "authType": svc_auth, "authPolicy": svc_policy}],
        "frontedNetworks": [network("sn-1", "blue", net), network("sn-2", "green", green)]
    });
    let mut v = v;
    strip_nulls(&mut v);
    serde_json::from_value(v).unwrap()
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn doc(statements: Vec<Value>) -> Option<Value> {
    Some(json!({"Version": "2012-10-17", "Statement": statements}))
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// Check `r` as the outbound would for `host`: `Ok` or the reason and
/// the `x-trellis-auth-denied` summary.
fn out(
    p: &Policies,
    host: &str,
    r: &Request<()>,
    caller: Option<&WorkloadIdentity>,
) -> Result<(), (Reason, String)> {
    let s = p.outbound("svc-1", host, 80).unwrap();
    check(&s, r, caller, Ipv4Addr::LOCALHOST.into())
        .map_err(|f| (f.reason, f.auth_denied.unwrap_or_default().into()))
}

fn policies(s: &Snapshot) -> Policies {
    Policies::build(s, "front").unwrap()
}

const HOST: &str = "api.blue.trellis.internal";

#[test]
fn none_everywhere_checks_nothing() {
    let p = policies(&snapshot(("NONE", None), ("NONE", None), ("NONE", None)));
    let s = p.outbound("svc-1", HOST, 80).unwrap();
    assert!(!s.needs_check());
    assert_eq!(out(&p, HOST, &req("POST", "/", &[]), None), Ok(()));
}

#[test]
fn iam_without_a_policy_denies_everyone() {
    let p = policies(&snapshot(("NONE", None), ("NONE", None), ("IAM", None)));
    let alice = id(ACCOUNT, "alice");
    for caller in [None, Some(&alice)] {
        assert_eq!(
            out(&p, HOST, &req("GET", "/", &[]), caller),
            Err((Reason::AccessDenied, "service; IAM without a policy".into()))
        );
    }
}

#[test]
fn deny_wins_and_names_the_statement() {
    let policy = doc(vec![
        allow(json!({"AWS": ["*", "anonymous"]}), json!({"Sid": "All"})),
        json!({"Sid": "DenyPost", "Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke",
            "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestMethod": "POST"}}}),
    ]);
    let p = policies(&snapshot(("NONE", None), ("NONE", None), ("IAM", policy)));
    assert_eq!(out(&p, HOST, &req("GET", "/x", &[]), None), Ok(()));
    assert_eq!(
        out(&p, HOST, &req("POST", "/x", &[]), None),
        Err((
            Reason::AccessDenied,
            "service; Statement[1] (DenyPost)".into()
        ))
    );
    let bob = id(OTHER, "bob");
    assert_eq!(
        out(&p, HOST, &req("POST", "/x", &[]), Some(&bob))
            .unwrap_err()
            .1,
        "service; Statement[1] (DenyPost)"
    );
}

#[test]
fn accounts_and_workloads_need_an_identity() {
    let policy = doc(vec![
        allow(json!({"AWS": ACCOUNT}), json!({"Sid": "Mine"})),
        allow(
            json!({"AWS": format!("spiffe://trellis.local/account/{OTHER}/workload/web-*")}),
            json!({"Sid": "TheirWeb"}),
        ),
    ]);
    let p = policies(&snapshot(("NONE", None), ("NONE", None), ("IAM", policy)));
    let get = req("GET", "/", &[]);
    assert_eq!(out(&p, HOST, &get, Some(&id(ACCOUNT, "any"))), Ok(()));
    assert_eq!(out(&p, HOST, &get, Some(&id(OTHER, "web-1"))), Ok(()));
    assert_eq!(
        out(&p, HOST, &get, Some(&id(OTHER, "db"))),
        Err((Reason::AccessDenied, "service; no statement allows".into()))
    );
    assert_eq!(
        out(&p, HOST, &get, None),
        Err((
            Reason::Unauthenticated,
            "service; needs an authenticated caller".into()
        )),
        "an anonymous caller gets 401 where an account would be let in"
    );
}

#[test]
fn conditions_see_headers_paths_queries_and_the_network() {
    let policy = doc(vec![allow(
        json!({"AWS": "anonymous"}),
        json!({"Condition": {
            "StringEquals": {"trellis:RequestHeader/x-team": "blue", "trellis:ServiceNetwork": "blue",
                             "trellis:RequestQueryString/v": "2", "trellis:RequestPort": "80"},
            "StringLike": {"trellis:RequestPath": "/v1/*"}}}),
    )]);
    let p = policies(&snapshot(("NONE", None), ("NONE", None), ("IAM", policy)));
    let ok = req("GET", "/v1/a?v=2", &[("x-team", "blue")]);
    assert_eq!(out(&p, HOST, &ok, None), Ok(()));
    for bad in [
        req("GET", "/v1/a?v=2", &[("x-team", "red")]),
        req("GET", "/v2/a?v=2", &[("x-team", "blue")]),
        req("GET", "/v1/a?v=3", &[("x-team", "blue")]),
    ] {
        assert_eq!(
            out(&p, HOST, &bad, None).unwrap_err().0,
            Reason::AccessDenied
        );
    }
    assert_eq!(
        out(&p, "api.green.trellis.internal", &ok, None)
            .unwrap_err()
            .0,
        Reason::AccessDenied,
        "through green, trellis:ServiceNetwork is green"
    );
}

#[test]
fn both_levels_must_allow_and_none_skips_a_level() {
    let anyone = doc(vec![allow(json!({"AWS": ["*", "anonymous"]}), json!({}))]);
    let only_get = doc(vec![allow(
        json!({"AWS": "anonymous"}),
        json!({"Sid": "Get", "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"}}}),
    )]);
    // Network IAM (GET only) + service IAM (anyone): POST refused by the network.
    let p = policies(&snapshot(
        ("IAM", only_get.clone()),
        ("NONE", None),
        ("IAM", anyone.clone()),
    ));
    assert_eq!(out(&p, HOST, &req("GET", "/", &[]), None), Ok(()));
    assert_eq!(
        out(&p, HOST, &req("POST", "/", &[]), None),
        Err((Reason::AccessDenied, "network; no statement allows".into()))
    );
    // Through green (NONE) only the service's policy counts.
    assert_eq!(
        out(
            &p,
            "api.green.trellis.internal",
            &req("POST", "/", &[]),
            None
        ),
        Ok(())
    );
    // A custom domain is checked against both networks: blue refuses POST.
    assert_eq!(
        out(&p, "api.example.com", &req("POST", "/", &[]), None)
            .unwrap_err()
            .0,
        Reason::AccessDenied
    );
    // Service NONE: the network alone decides.
    let p = policies(&snapshot(("IAM", only_get), ("NONE", None), ("NONE", None)));
    assert_eq!(out(&p, HOST, &req("GET", "/", &[]), None), Ok(()));
    assert_eq!(
        out(&p, HOST, &req("PUT", "/", &[]), None).unwrap_err().0,
        Reason::AccessDenied
    );
}

#[test]
fn the_inbound_accepts_only_a_route_that_reaches_the_target() {
    let p = policies(&snapshot(("NONE", None), ("NONE", None), ("IAM", None)));
    assert!(
        p.inbound("svc-1", Some("sn-1"), 80, "10.0.0.1:80", None)
            .is_ok()
    );
    for (svc, net, port, target) in [
        ("svc-2", Some("sn-1"), 80, "10.0.0.1:80"),
        ("svc-1", Some("sn-9"), 80, "10.0.0.1:80"),
        ("svc-1", None, 80, "10.0.0.1:80"),
        ("svc-1", Some("sn-1"), 81, "10.0.0.1:80"),
    ] {
        assert!(
            p.inbound(svc, net, port, target, None).is_err(),
            "{svc} {net:?} {port} {target}"
        );
    }
    let open = policies(&snapshot(("NONE", None), ("NONE", None), ("NONE", None)));
    assert!(
        open.inbound("svc-9", None, 1, "10.0.0.1:80", None)
            .unwrap()
            .is_none(),
        "nothing guards the target and no caller identity: any claim passes unchecked"
    );
    assert!(
        open.inbound("svc-9", None, 1, "10.0.0.1:80", Some(ACCOUNT))
            .is_err(),
        "with a caller identity the route is checked even without a policy"
    );
    // The claimed route's policies apply with the peer's identity.
    let s = p
        .inbound("svc-1", Some("sn-2"), 80, "10.0.0.1:80", Some(ACCOUNT))
        .unwrap()
        .unwrap();
    assert!(s.needs_check());
    let f = check(
        &s,
        &req("GET", "/", &[]),
        Some(&id(ACCOUNT, "a")),
        Ipv4Addr::LOCALHOST.into(),
    )
    .unwrap_err();
    assert_eq!(f.reason, Reason::AccessDenied);
}

#[test]
fn an_unrouted_request_passes_only_as_a_health_check_of_a_guarded_target() {
    let guarded = policies(&snapshot(("NONE", None), ("NONE", None), ("IAM", None)));
    let open = policies(&snapshot(("NONE", None), ("NONE", None), ("NONE", None)));
    let probe = |paths: &[Box<str>]| paths.iter().any(|p| &**p == "/health");
    assert!(open.unrouted("10.0.0.1:80", None, |_| false).is_ok());
    assert!(
        open.unrouted("10.0.0.1:80", Some(ACCOUNT), |_| false)
            .is_ok()
    );
    assert!(guarded.unrouted("10.0.0.1:80", None, |_| false).is_err());
    assert!(
        guarded
            .unrouted("10.0.0.1:80", Some(ACCOUNT), probe)
            .is_ok()
    );
    // An account with no way to the target: only its health checks.
    let e = open
        .unrouted("10.0.0.1:80", Some(OTHER), |_| false)
        .unwrap_err();
    assert!(e.contains(OTHER), "{e}");
    assert!(open.unrouted("10.0.0.1:80", Some(OTHER), probe).is_ok());
}

#[test]
fn the_inbound_admits_only_accounts_that_may_use_the_claimed_network() {
    let mut s = snapshot(("NONE", None), ("NONE", None), ("NONE", None));
    // green (sn-2) is shared with OTHER; blue (sn-1) is not.
    for n in s.networks.iter_mut().chain(s.fronted_networks.iter_mut()) {
        if n.id == "sn-2" {
            n.accounts = vec![ACCOUNT.into(), OTHER.into()];
        }
    }
    let p = policies(&s);
    let claim =
        |net: &str, account: &str| p.inbound("svc-1", Some(net), 80, "10.0.0.1:80", Some(account));
    // No policy anywhere: the answer is "nothing to check", once admitted.
    assert!(claim("sn-1", ACCOUNT).unwrap().is_none());
    assert!(claim("sn-2", ACCOUNT).unwrap().is_none());
    assert!(claim("sn-2", OTHER).unwrap().is_none());
    let e = claim("sn-1", OTHER).unwrap_err();
    assert!(
        e.contains(OTHER) && e.contains("sn-1") && e.contains("blue"),
        "names the account and the network: {e}"
    );
    // An unrouted request of the sharee reaches the target (a network of
    // its service is shared with it); with a policy, the claim decides.
    assert!(p.unrouted("10.0.0.1:80", Some(OTHER), |_| false).is_ok());
    let mut g = s.clone();
    g.fronted_services[0].auth_type = trellis_config::AuthType::Iam;
    let p = policies(&g);
    let e = p
        .inbound("svc-1", Some("sn-1"), 80, "10.0.0.1:80", Some(OTHER))
        .unwrap_err();
    assert!(e.contains("has no access"), "{e}");
    assert!(
        p.inbound("svc-1", Some("sn-2"), 80, "10.0.0.1:80", Some(OTHER))
            .unwrap()
            .is_some()
    );
}

#[test]
fn the_outbound_checks_groups_it_sends_to_directly() {
    let mut s = snapshot(("NONE", None), ("NONE", None), ("IAM", None));
    // Seen from another proxy, tg-1's target is behind `front`.
    s.target_groups[0].targets[0].via = Some("127.0.0.1:15006".into());
    let p = Policies::build(&s, "caller").unwrap();
    assert!(!p.checked_here("tg-1"));
    assert!(p.checked_here("tg-2"));
    let p = policies(&snapshot(("NONE", None), ("NONE", None), ("IAM", None)));
    assert!(
        p.checked_here("tg-1"),
        "front sends to its own target directly"
    );
}

#[test]
fn an_invalid_policy_fails_the_snapshot() {
    let bad = Some(json!({"Statement": [{"Effect": "Maybe"}]}));
    let e = Policies::build(
        &snapshot(("NONE", None), ("NONE", None), ("IAM", bad)),
        "front",
    )
    .unwrap_err();
    assert!(e.to_string().contains("service 'api'"), "{e}");
}

#[test]
fn explain_traces_every_level_with_the_same_verdict() {
    let policy = doc(vec![
        allow(json!({"AWS": "anonymous"}), json!({"Sid": "A"})),
        json!({"Sid": "D", "Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke",
            "Resource": "api/admin/*"}),
    ]);
    let p = policies(&snapshot(("NONE", None), ("NONE", None), ("IAM", policy)));
    let s = p.outbound("svc-1", HOST, 80).unwrap();
    let r = req("GET", "/admin/x", &[]);
    let headers = Headers(r.headers());
    let parts = request_parts(r.method(), r.uri(), &headers, None, None);
    let (verdict, levels) = s.explain(&parts);
    assert_eq!(verdict, s.evaluate(&parts));
    assert_eq!(verdict.summary(), "service; Statement[1] (D)");
    assert_eq!(
        levels.len(),
        2,
        "blue (named by the host), then the service"
    );
    assert_eq!(levels[0].level, Level::Network);
    assert!(levels[0].statements.is_empty());
    assert_eq!(levels[1].statements.len(), 2);
}
