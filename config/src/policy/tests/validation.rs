//! Validation: what is accepted, and every problem reported at its path.

use super::*;

/// Every error of a document, as `field: message` lines.
fn errors(doc: &Value) -> Vec<String> {
    match PolicyDocument::parse(&doc.to_string()) {
        Ok(_) => panic!("accepted: {doc:#}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

/// The error at exactly `field`, or fail listing them all.
fn at<'a>(errs: &'a [String], field: &str) -> &'a str {
    let prefix = format!("{field}: ");
    errs.iter()
        .find_map(|e| e.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no error at {field}; got {errs:#?}"))
}

fn ok_statement(extra: Value) -> Value {
    let mut s = json!({
        "Effect": "Allow", "Principal": "*", "Action": "trellis:Invoke", "Resource": "*"
    });
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    s
}

fn one(extra: Value) -> Value {
    json!({"Statement": [ok_statement(extra)]})
}

#[test]
fn a_full_policy_with_every_form_is_accepted_and_typed() {
    let doc = PolicyDocument::parse(
        &json!({
            "Version": "2012-10-17",
            "Id": "shop-policy",
            "Statement": [
                {
                    "Sid": "Readers",
                    "Effect": "Allow",
                    "Principal": {"AWS": [ACCT_A, "anonymous", "spiffe://*/account/4444*/workload/batch-?"],
                                  "Trellis": "*"},
                    "Action": ["trellis:Invoke", "trellis:*", "*", "TRELLIS:invoke"],
                    "Resource": ["*", "api", "api/*", "svc-*/orders/*",
                                 "trellis:111122223333:service/api/v1/*", "trellis:*:service/*"],
                    "Condition": {
                        "StringEquals": {"trellis:RequestMethod": ["GET", "HEAD"],
                                         "trellis:RequestPort": 8080,
                                         "trellis:SourceAccount": ACCT_A},
                        "StringNotEquals": {"trellis:requestheader/X-Debug": "1"},
                        "StringEqualsIgnoreCase": {"trellis:RequestQueryString/Format": "JSON"},
                        "StringNotEqualsIgnoreCase": {"trellis:ServiceNetwork": "LAB"},
                        "StringLike": {"trellis:RequestPath": "/orders/*",
                                       "trellis:SourceWorkload": "spiffe://*/workload/web*",
                                       "trellis:Service": "api*"},
                        "StringNotLike": {"trellis:RequestPort": "9*"},
                        "IpAddress": {"trellis:SourceIp": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]},
                        "NotIpAddress": {"trellis:SourceIp": "10.66.0.0/16"}
                    }
                },
                {"Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke", "Resource": "api/admin/*"}
            ]
        })
        .to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.version.as_deref(), Some(POLICY_VERSION));
    assert_eq!(doc.id.as_deref(), Some("shop-policy"));
    assert_eq!(doc.statements.len(), 2);
    let s = &doc.statements[0];
    assert_eq!(s.sid.as_deref(), Some("Readers"));
    assert_eq!(s.effect, Effect::Allow);
    assert!(s.principals.contains(&Principal::Anonymous));
    assert!(s.principals.contains(&Principal::Any));
    assert!(s.principals.contains(&Principal::Account(ACCT_A.into())));
    assert_eq!(
        s.resources[4],
        Resource {
            account: Some(ACCT_A.into()),
            service: "api".into(),
            path: Some("/v1/*".into())
        }
    );
    assert_eq!(s.resources[2].path, None, "'/*' is stored as every path");
    assert_eq!(
        s.resources[5],
        Resource::any(),
        "trellis:*:service/* is '*'"
    );
    assert_eq!(s.conditions.len(), 12);
    let header = s
        .conditions
        .iter()
        .find(|c| matches!(c.key, ConditionKey::RequestHeader(_)))
        .unwrap();
    assert_eq!(header.key, ConditionKey::RequestHeader("x-debug".into()));
    let query = s
        .conditions
        .iter()
        .find(|c| matches!(c.key, ConditionKey::RequestQueryString(_)))
        .unwrap();
    assert_eq!(query.key, ConditionKey::RequestQueryString("Format".into()));
    let port = s
        .conditions
        .iter()
        .find(|c| c.key == ConditionKey::RequestPort && c.operator == Operator::StringEquals)
        .unwrap();
    assert_eq!(port.values, ConditionValues::Strings(vec!["8080".into()]));
}

#[test]
fn a_single_statement_object_and_a_missing_version_are_accepted() {
    let doc =
        PolicyDocument::parse(&json!({"Statement": ok_statement(json!({}))}).to_string()).unwrap();
    assert_eq!(doc.version, None);
    assert_eq!(doc.statements.len(), 1);
}

#[test]
fn the_brief_example_path_and_message() {
    let errs = errors(&json!({"Statement": [
        ok_statement(json!({})),
        ok_statement(json!({"Condition": {"StringLike": {"trellis:Bogus": "x"}}}))
    ]}));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "Statement[1].Condition.StringLike.trellis:Bogus: unknown condition key; expected one of trellis:RequestMethod, "
        ),
        "{}",
        errs[0]
    );
}

#[test]
fn every_problem_is_reported_at_its_path_in_one_pass() {
    let errs = errors(&json!({
        "Version": "2024-01-01",
        "Statment": [],
        "Statement": [
            {"Sid": "Dup", "Effect": "Permit", "Principal": {"AWS": [ACCT_A, "arn:aws:iam::111122223333:root", "bob"]},
             "Action": "trellis:Invoke", "Resource": ["api/*", "arn:aws:vpc-lattice:us-west-2:1:service/svc-1/*"]},
            {"Sid": "Dup", "effect": "Allow", "Principal": "*", "Action": ["trellis:Invoke", "vpc-lattice-svcs:Invoke"],
             "Resource": "Api/*", "NotPrincipal": "*",
             "Condition": {"stringequals": {"trellis:RequestMethod": "GET"},
                           "StringEqualsIfExists": {"trellis:RequestMethod": "GET"},
                           "StringEquals": {"vpc-lattice-svcs:Port": "80", "trellis:RequestMethod": []}}},
            {"Effect": "Allow", "Principal": {"Service": "x"}, "Resource": "trellis:1234:service/api"},
            "not an object"
        ]
    }));
    for (field, message) in [
        (
            "Version",
            "must be \"2012-10-17\" (or left out), got \"2024-01-01\"",
        ),
        (
            "Statment",
            "unknown field; expected one of Version, Id, Statement",
        ),
        (
            "Statement[0].Effect",
            "must be \"Allow\" or \"Deny\", got \"Permit\"",
        ),
        (
            "Statement[0].Principal.AWS[1]",
            "IAM ARNs are not Trellis principals; write the account id \"111122223333\"",
        ),
        (
            "Statement[1].Sid",
            "'Dup' is already the Sid of Statement[0]",
        ),
        (
            "Statement[1].effect",
            "unknown field; did you mean 'Effect'? (element names are case-sensitive)",
        ),
        ("Statement[1].Effect", "required: \"Allow\" or \"Deny\""),
        (
            "Statement[1].NotPrincipal",
            "'NotPrincipal' is not supported; write the positive form with a Deny statement instead",
        ),
        (
            "Statement[1].Condition.stringequals",
            "unknown operator; did you mean 'StringEquals'? (operators are case-sensitive)",
        ),
        (
            "Statement[1].Condition.StringEquals.vpc-lattice-svcs:Port",
            "unknown condition key; use 'trellis:RequestPort' in Trellis policies",
        ),
        (
            "Statement[1].Condition.StringEquals.trellis:RequestMethod",
            "must have at least one value",
        ),
        (
            "Statement[2].Principal.Service",
            "unknown principal type; use \"AWS\" or \"Trellis\" (they mean the same)",
        ),
        (
            "Statement[2].Action",
            "required: \"trellis:Invoke\" or \"*\"",
        ),
        ("Statement[3]", "a statement must be a JSON object"),
    ] {
        assert_eq!(at(&errs, field), message, "at {field}");
    }
    for (field, fragment) in [
        ("Statement[0].Principal.AWS[2]", "'bob' is not a principal"),
        (
            "Statement[0].Resource[1]",
            "AWS ARNs are not Trellis resources",
        ),
        (
            "Statement[1].Action[1]",
            "write \"trellis:Invoke\" for Lattice's Invoke",
        ),
        (
            "Statement[1].Resource",
            "the service 'Api' must be a service name pattern",
        ),
        (
            "Statement[1].Condition.StringEqualsIfExists",
            "'IfExists' and set operators",
        ),
        (
            "Statement[2].Resource",
            "the account '1234' must be 12 digits",
        ),
    ] {
        assert!(at(&errs, field).contains(fragment), "at {field}: {errs:#?}");
    }
    // Nothing else: each problem once.
    assert_eq!(errs.len(), 20, "{errs:#?}");
}

#[test]
fn principals_and_resources_shapes() {
    let bad_principal = |p: Value| errors(&one(json!({"Principal": p})));
    for p in [
        json!("111122223333"),
        json!({}),
        json!(["*"]),
        json!({"AWS": []}),
        json!({"AWS": [42]}),
    ] {
        let errs = bad_principal(p.clone());
        assert!(
            errs.iter().all(|e| e.starts_with("Statement[0].Principal")),
            "{p}: {errs:?}"
        );
    }
    for w in [
        "spiffe://trellis.local/account/111122223333/workload/web/extra",
        "spiffe://trellis.local/account/1111/workload/web",
        "spiffe://trellis.local/acct/111122223333/workload/web",
        "spiffe://Trellis.local/account/111122223333/workload/web",
        "spiffe://trellis.local/account/111122223333/workload/Web",
        "spiffe://*",
    ] {
        let errs = bad_principal(json!({"AWS": w}));
        assert_eq!(errs.len(), 1, "{w}: {errs:?}");
        assert!(
            errs[0].starts_with("Statement[0].Principal.AWS: '"),
            "{w}: {errs:?}"
        );
    }
    for r in [
        "trellis:111122223333:svc/api",
        "trellis:111122223333",
        "api /x",
        "",
        "/orders/*",
        "API",
    ] {
        let errs = errors(&one(json!({"Resource": r})));
        assert_eq!(errs.len(), 1, "{r}: {errs:?}");
        assert!(
            errs[0].starts_with("Statement[0].Resource: "),
            "{r}: {errs:?}"
        );
    }
    assert!(errors(&one(json!({"Resource": []})))[0].ends_with("must not be an empty list"));
    assert!(
        errors(&one(json!({"Sid": "has space"})))[0]
            .starts_with("Statement[0].Sid: may contain only")
    );
    assert!(errors(&one(json!({"Sid": ""})))[0].starts_with("Statement[0].Sid: must be 1 to 100"));
}

#[test]
fn condition_values_are_checked_against_their_key() {
    let cond = |c: Value| errors(&one(json!({"Condition": c})));
    for (c, field, fragment) in [
        (
            json!({"StringEquals": {"trellis:RequestMethod": "get"}}),
            "Statement[0].Condition.StringEquals.trellis:RequestMethod",
            "HTTP methods are case-sensitive: 'get' never matches; write 'GET'",
        ),
        (
            json!({"StringEquals": {"trellis:RequestPort": ["80", "080", "70000"]}}),
            "Statement[0].Condition.StringEquals.trellis:RequestPort[1]",
            "'080' is not a port",
        ),
        (
            json!({"StringEquals": {"trellis:RequestPort": ["80", "080", "70000"]}}),
            "Statement[0].Condition.StringEquals.trellis:RequestPort[2]",
            "'70000' is not a port",
        ),
        (
            json!({"StringEquals": {"trellis:RequestPath": "orders"}}),
            "Statement[0].Condition.StringEquals.trellis:RequestPath",
            "paths start with '/'",
        ),
        (
            json!({"StringEquals": {"trellis:SourceAccount": "1234"}}),
            "Statement[0].Condition.StringEquals.trellis:SourceAccount",
            "not a 12-digit account id",
        ),
        (
            json!({"StringLike": {"trellis:SourceWorkload": "web"}}),
            "Statement[0].Condition.StringLike.trellis:SourceWorkload",
            "is not a workload id",
        ),
        (
            json!({"StringEquals": {"trellis:Service": "Api"}}),
            "Statement[0].Condition.StringEquals.trellis:Service",
            "is not a service name",
        ),
        (
            json!({"StringEquals": {"trellis:SourceIp": "10.0.0.1"}}),
            "Statement[0].Condition.StringEquals.trellis:SourceIp",
            "trellis:SourceIp takes IpAddress or NotIpAddress, not StringEquals",
        ),
        (
            json!({"IpAddress": {"trellis:RequestMethod": "10.0.0.1"}}),
            "Statement[0].Condition.IpAddress.trellis:RequestMethod",
            "IpAddress applies only to trellis:SourceIp",
        ),
        (
            json!({"IpAddress": {"trellis:SourceIp": ["10.0.0.0/8", "10.0.0.0/40"]}}),
            "Statement[0].Condition.IpAddress.trellis:SourceIp[1]",
            "the prefix length must be 0 to 32",
        ),
        (
            json!({"StringEquals": {"trellis:RequestHeader/bad header": "x"}}),
            "Statement[0].Condition.StringEquals.trellis:RequestHeader/bad header",
            "is not a valid header name",
        ),
        (
            json!({"StringEquals": {"aws:PrincipalType": "Anonymous"}}),
            "Statement[0].Condition.StringEquals.aws:PrincipalType",
            "name \"anonymous\" in Principal",
        ),
        (
            json!({"StringEquals": {"trellis:RequestMethod": {"a": 1}}}),
            "Statement[0].Condition.StringEquals.trellis:RequestMethod",
            "must be a string or a list of strings",
        ),
        (
            json!({"StringEquals": {"trellis:RequestMethod": ["GET", null]}}),
            "Statement[0].Condition.StringEquals.trellis:RequestMethod[1]",
            "must be a string, got null",
        ),
        (
            json!({"StringEquals": {}}),
            "Statement[0].Condition.StringEquals",
            "must be a non-empty object",
        ),
        (json!(["x"]), "Statement[0].Condition", "must be an object"),
    ] {
        let errs = cond(c.clone());
        assert!(at(&errs, field).contains(fragment), "{c}: {errs:#?}");
    }
    // Case-insensitive and glob forms that are fine.
    assert!(
        PolicyDocument::parse(
            &one(json!({"Condition": {
                "StringEqualsIgnoreCase": {"trellis:RequestMethod": "get", "trellis:Service": "API"},
                "StringLike": {"trellis:RequestPort": "80*", "trellis:SourceAccount": "1111*",
                               "trellis:RequestPath": "*.json", "trellis:SourceWorkload": "*/workload/web"},
                "StringEquals": {"trellis:RequestMethod": "PURGE"}
            }}))
            .to_string()
        )
        .is_ok()
    );
}

#[test]
fn top_level_shapes() {
    let top = |text: &str| match PolicyDocument::parse(text) {
        Ok(_) => panic!("accepted {text}"),
        Err(e) => e.to_string(),
    };
    assert!(top("{").starts_with("not valid JSON: "), "{}", top("{"));
    assert_eq!(
        top("[]"),
        "a policy must be a JSON object with a \"Statement\" list"
    );
    assert_eq!(top("{}"), "Statement: required: a list of statements");
    assert_eq!(
        top(r#"{"Statement": []}"#),
        "Statement: must have at least one statement"
    );
    assert_eq!(
        top(r#"{"Statement": 1}"#),
        "Statement: must be a list of statements (or a single statement object)"
    );
    assert_eq!(
        top(r#"{"Statement": {}, "Id": 3}"#)
            .matches("required")
            .count(),
        4
    );
}

#[test]
fn size_limit_is_10_kb_and_other_problems_are_still_reported() {
    let base = one(json!({})).to_string();
    let pad = |n: usize| format!("{base}{}", " ".repeat(n - base.len()));
    assert!(PolicyDocument::parse(&pad(MAX_POLICY_BYTES)).is_ok());
    let e = PolicyDocument::parse(&pad(MAX_POLICY_BYTES + 1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the policy is 10241 bytes; at most 10240 bytes (10 KB) are allowed"
    );
    assert_eq!(e.errors[0].field, "");

    // From a JSON value: measured compactly; a big policy of many
    // statements, with one bad Effect, gets both errors.
    let mut list: Vec<Value> = (0..120)
        .map(|i| ok_statement(json!({"Sid": format!("S{i}"), "Resource": format!("svc-{i}/*")})))
        .collect();
    list[7]["Effect"] = json!("allow");
    let big = json!({"Statement": list});
    assert!(big.to_string().len() > MAX_POLICY_BYTES);
    let errs = PolicyDocument::from_value(&big).unwrap_err();
    let shown: Vec<String> = errs.errors.iter().map(ToString::to_string).collect();
    assert!(shown[0].starts_with("the policy is "), "{shown:?}");
    assert_eq!(
        shown[1],
        "Statement[7].Effect: must be \"Allow\" or \"Deny\", got \"allow\""
    );
    assert_eq!(shown.len(), 2);
}

#[test]
fn from_value_and_parse_agree() {
    let doc =
        one(json!({"Sid": "A", "Condition": {"StringLike": {"trellis:RequestPath": "/x/*"}}}));
    assert_eq!(
        PolicyDocument::from_value(&doc).unwrap(),
        PolicyDocument::parse(&doc.to_string()).unwrap()
    );
}
