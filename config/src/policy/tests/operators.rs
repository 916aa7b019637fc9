//! Each operator over each key, missing keys, several values, and the case
//! rules (keys case-insensitive, values case-sensitive, header names
//! lowercase).

use super::*;

/// Whether `Allow * when {op: {key: values}}` admits `r`.
fn holds(op: &str, key: &str, values: Value, r: &RequestFacts<'_>) -> bool {
    allows(&allow_if(json!({op: {key: values}})), r)
}

/// `holds` for the operator and its negation, which must disagree.
fn pair(op: &str, not_op: &str, key: &str, values: Value, r: &RequestFacts<'_>) -> bool {
    let pos = holds(op, key, values.clone(), r);
    let neg = holds(not_op, key, values.clone(), r);
    assert_ne!(pos, neg, "{op}/{not_op} {key} {values} on {r:?}");
    pos
}

fn eq(key: &str, values: Value, r: &RequestFacts<'_>) -> bool {
    pair("StringEquals", "StringNotEquals", key, values, r)
}

fn like(key: &str, values: Value, r: &RequestFacts<'_>) -> bool {
    pair("StringLike", "StringNotLike", key, values, r)
}

fn eq_ic(key: &str, values: Value, r: &RequestFacts<'_>) -> bool {
    pair(
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        key,
        values,
        r,
    )
}

#[test]
fn request_method() {
    let r = req();
    assert!(eq("trellis:RequestMethod", json!("GET"), &r));
    assert!(
        eq("trellis:RequestMethod", json!(["POST", "GET"]), &r),
        "values are alternatives"
    );
    assert!(!eq("trellis:RequestMethod", json!("POST"), &r));
    assert!(eq_ic("trellis:RequestMethod", json!("get"), &r));
    assert!(like("trellis:RequestMethod", json!("G*"), &r));
    assert!(!like("trellis:RequestMethod", json!("P*"), &r));
    // A custom lower-case method is compared exactly.
    let purge = RequestFacts {
        method: "purge",
        ..req()
    };
    assert!(eq("trellis:RequestMethod", json!("purge"), &purge));
    assert!(!eq("trellis:RequestMethod", json!("PURGE"), &purge));
}

#[test]
fn request_path() {
    let r = req();
    assert!(eq("trellis:RequestPath", json!("/orders/42"), &r));
    assert!(!eq("trellis:RequestPath", json!("/orders/42/"), &r));
    assert!(like("trellis:RequestPath", json!("/orders/*"), &r));
    assert!(like("trellis:RequestPath", json!("/*/4?"), &r));
    assert!(
        !like("trellis:RequestPath", json!("/Orders/*"), &r),
        "values are case-sensitive"
    );
    assert!(eq_ic("trellis:RequestPath", json!("/ORDERS/42"), &r));
}

#[test]
fn request_headers_are_multi_valued_and_case_insensitive_by_name() {
    let h = [
        ("X-Team", "blue"),
        ("x-team", "green"),
        ("accept", "text/html"),
    ];
    let r = RequestFacts {
        headers: &h,
        ..req()
    };
    // The key's header name is case-insensitive, and so is the request's.
    for key in [
        "trellis:RequestHeader/x-team",
        "trellis:requestheader/X-TEAM",
    ] {
        assert!(eq(key, json!("green"), &r), "{key}");
        assert!(eq(key, json!("blue"), &r), "any value may match");
        assert!(!eq(key, json!("red"), &r));
    }
    // The negation holds only when no value matches: a second header
    // cannot slip past a Deny on the first.
    assert!(!holds(
        "StringNotEquals",
        "trellis:RequestHeader/x-team",
        json!("blue"),
        &r
    ));
    assert!(like("trellis:RequestHeader/accept", json!("text/*"), &r));
    assert!(!eq("trellis:RequestHeader/accept", json!("TEXT/HTML"), &r));
    assert!(eq_ic(
        "trellis:RequestHeader/accept",
        json!("TEXT/HTML"),
        &r
    ));
    // A missing header: positive operators false, negated ones true.
    assert!(!eq("trellis:RequestHeader/x-missing", json!(""), &r));
    assert!(!like("trellis:RequestHeader/x-missing", json!("*"), &r));
    let no_headers = req();
    assert!(holds(
        "StringNotLike",
        "trellis:RequestHeader/x-team",
        json!("*"),
        &no_headers
    ));
    // Vec-backed headers work too (what explain will pass).
    let owned = vec![("x-team".to_string(), "blue".to_string())];
    let r = RequestFacts {
        headers: &owned,
        ..req()
    };
    assert!(eq("trellis:RequestHeader/x-team", json!("blue"), &r));
}

#[test]
fn query_string_values() {
    let r = RequestFacts {
        query: "page=2&format=json&tag=a&tag=b%20c&Flag",
        ..req()
    };
    assert!(eq("trellis:RequestQueryString/page", json!("2"), &r));
    assert!(
        eq("trellis:RequestQueryString/tag", json!("b c"), &r),
        "decoded, any value"
    );
    assert!(!holds(
        "StringNotEquals",
        "trellis:RequestQueryString/tag",
        json!("a"),
        &r
    ));
    assert!(
        eq("trellis:RequestQueryString/Flag", json!(""), &r),
        "no '=' is the empty value"
    );
    assert!(
        !eq("trellis:RequestQueryString/flag", json!(""), &r),
        "keys are case-sensitive"
    );
    assert!(like("trellis:RequestQueryString/format", json!("js*"), &r));
    assert!(eq_ic(
        "trellis:RequestQueryString/format",
        json!("JSON"),
        &r
    ));
    assert!(!eq("trellis:RequestQueryString/missing", json!(""), &r));
    // Encoding does not get past a Deny.
    let deny = statements(json!([
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
         "Condition": {"StringEquals": {"trellis:RequestQueryString/admin": "true"}}}
    ]));
    for q in [
        "admin=true",
        "admin=%74rue",
        "%61dmin=true",
        "x=1&admin=true",
    ] {
        let r = RequestFacts { query: q, ..req() };
        assert!(!allows(&deny, &r), "{q}");
    }
    assert!(allows(
        &deny,
        &RequestFacts {
            query: "admin=false",
            ..req()
        }
    ));
}

#[test]
fn request_port() {
    let r = RequestFacts {
        port: 8080,
        ..req()
    };
    assert!(eq("trellis:RequestPort", json!("8080"), &r));
    assert!(
        eq("trellis:RequestPort", json!(8080), &r),
        "a JSON number is its decimal string"
    );
    assert!(!eq("trellis:RequestPort", json!([80, 443]), &r));
    assert!(like("trellis:RequestPort", json!("80*"), &r));
    assert!(!like("trellis:RequestPort", json!("9*"), &r));
}

#[test]
fn source_account_and_workload() {
    assert!(eq("trellis:SourceAccount", json!(ACCT_A), &req()));
    assert!(!eq("trellis:SourceAccount", json!(ACCT_A), &req_b()));
    assert!(like("trellis:SourceAccount", json!("4444*"), &req_b()));
    assert!(eq("trellis:SourceWorkload", json!(WEB_A), &req()));
    assert!(like(
        "trellis:SourceWorkload",
        json!("*/workload/batch-*"),
        &req_b()
    ));
    assert!(!like(
        "trellis:SourceWorkload",
        json!("*/workload/batch-*"),
        &req()
    ));
}

#[test]
fn identity_keys_are_missing_for_anonymous_callers() {
    let public = |op: &str, key: &str, v: Value| {
        let p = statements(
            json!([{"Effect": "Allow", "Principal": {"AWS": "anonymous"}, "Action": "*",
                                   "Resource": "*", "Condition": {op: {key: v}}}]),
        );
        allows(&p, &anon())
    };
    assert!(!public(
        "StringEquals",
        "trellis:SourceAccount",
        json!(ACCT_A)
    ));
    assert!(!public("StringLike", "trellis:SourceWorkload", json!("*")));
    assert!(public(
        "StringNotEquals",
        "trellis:SourceAccount",
        json!(ACCT_A)
    ));
    assert!(public(
        "StringNotLike",
        "trellis:SourceWorkload",
        json!("*")
    ));
}

#[test]
fn service_and_service_network() {
    assert!(eq("trellis:Service", json!("api"), &req()));
    assert!(like("trellis:Service", json!("a*"), &req()));
    assert!(eq_ic("trellis:Service", json!("API"), &req()));
    assert!(eq("trellis:ServiceNetwork", json!("shop"), &req()));
    assert!(!eq("trellis:ServiceNetwork", json!("lab"), &req()));
    // No network on the way: the key is missing.
    let direct = RequestFacts {
        service_network: None,
        ..req()
    };
    assert!(!eq("trellis:ServiceNetwork", json!("shop"), &direct));
    assert!(!like("trellis:ServiceNetwork", json!("*"), &direct));
}

#[test]
fn source_ip() {
    let ip = |op: &str, v: Value, r: &RequestFacts<'_>| holds(op, "trellis:SourceIp", v, r);
    let r = req(); // 10.1.2.3
    assert!(ip("IpAddress", json!("10.0.0.0/8"), &r));
    assert!(!ip("NotIpAddress", json!("10.0.0.0/8"), &r));
    assert!(ip("IpAddress", json!(["192.0.2.0/24", "10.1.2.3"]), &r));
    assert!(!ip("IpAddress", json!("10.1.2.4/32"), &r));
    assert!(ip("NotIpAddress", json!("2001:db8::/32"), &r));
    let v6 = RequestFacts {
        source_ip: Some("2001:db8::9".parse().unwrap()),
        ..req()
    };
    assert!(ip("IpAddress", json!("2001:db8::/32"), &v6));
    let mapped = RequestFacts {
        source_ip: Some("::ffff:10.1.2.3".parse().unwrap()),
        ..req()
    };
    assert!(ip("IpAddress", json!("10.0.0.0/8"), &mapped));
    // Unknown address: IpAddress false, NotIpAddress true.
    let unknown = RequestFacts {
        source_ip: None,
        ..req()
    };
    assert!(!ip("IpAddress", json!("0.0.0.0/0"), &unknown));
    assert!(ip("NotIpAddress", json!("0.0.0.0/0"), &unknown));
}

#[test]
fn keys_and_operators_combine_with_and() {
    let p = allow_if(json!({
        "StringEquals": {"trellis:RequestMethod": ["GET", "HEAD"], "trellis:SourceAccount": ACCT_A},
        "StringLike": {"trellis:RequestPath": "/orders/*"},
        "IpAddress": {"trellis:SourceIp": "10.0.0.0/8"}
    }));
    assert!(allows(&p, &req()));
    assert!(allows(
        &p,
        &RequestFacts {
            method: "HEAD",
            ..req()
        }
    ));
    assert!(!allows(
        &p,
        &RequestFacts {
            method: "POST",
            ..req()
        }
    ));
    assert!(!allows(&p, &req_b()));
    assert!(!allows(
        &p,
        &RequestFacts {
            path: "/carts/1",
            ..req()
        }
    ));
    assert!(!allows(
        &p,
        &RequestFacts {
            source_ip: Some("192.0.2.1".parse().unwrap()),
            ..req()
        }
    ));
    // Two spellings of one key are two conditions, both required.
    let p = allow_if(json!({
        "StringEquals": {"trellis:RequestMethod": "GET", "trellis:requestmethod": "POST"}
    }));
    assert!(!allows(&p, &req()));
}
