//! Lattice semantics: auth types, levels, Deny wins, anonymous callers,
//! 401 versus 403, and what a decision says.

use super::*;

const IAM: AuthType = AuthType::Iam;
const NONE: AuthType = AuthType::None;

fn allow_account(sid: &str, account: &str) -> Value {
    json!({"Sid": sid, "Effect": "Allow", "Principal": {"AWS": account},
           "Action": "trellis:Invoke", "Resource": "*"})
}

fn deny_method(sid: &str, method: &str) -> Value {
    json!({"Sid": sid, "Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke",
           "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestMethod": method}}})
}

#[test]
fn auth_type_none_checks_nothing_even_with_a_policy() {
    let deny_all = statements(json!([deny_method("No", "GET")]));
    for r in [req(), req_b(), anon()] {
        let d = evaluate(Some((&NONE, Some(&deny_all))), Some((&NONE, None)), &r);
        assert_eq!(
            d,
            Decision::Allowed {
                network: LevelAllow::NotChecked,
                service: LevelAllow::NotChecked
            }
        );
        assert_eq!(d.status(), None);
        assert_eq!(
            d.to_string(),
            "allowed: network not checked, service not checked"
        );
        assert!(evaluate(None, None, &r).is_allowed(), "no level at all");
    }
}

#[test]
fn iam_without_a_policy_refuses_everyone_with_403() {
    for r in [req(), anon()] {
        let d = evaluate(Some((&IAM, None)), None, &r);
        assert_eq!(
            d,
            Decision::Denied {
                level: Level::Network,
                cause: DenyCause::NoPolicy
            }
        );
        assert_eq!(d.status(), Some(403), "authenticating would not help");
        assert_eq!(
            d.to_string(),
            "denied at the network: auth type IAM and no auth policy"
        );
        let d = evaluate(Some((&NONE, None)), Some((&IAM, None)), &r);
        assert_eq!(
            d,
            Decision::Denied {
                level: Level::Service,
                cause: DenyCause::NoPolicy
            }
        );
    }
}

#[test]
fn allow_names_the_statement_and_others_get_the_implicit_deny() {
    let p = statements(json!([
        allow_account("B", ACCT_B),
        allow_account("A", ACCT_A)
    ]));
    let d = at_service(&p, &req());
    assert_eq!(
        d,
        Decision::Allowed {
            network: LevelAllow::NotChecked,
            service: LevelAllow::Statement(sref(1, Some("A")))
        }
    );
    assert_eq!(
        d.to_string(),
        "allowed: network not checked, service Statement[1] (A)"
    );
    let only_b = statements(json!([allow_account("B", ACCT_B)]));
    let d = at_service(&only_b, &req());
    assert_eq!(
        d,
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::NoMatchingAllow
        }
    );
    assert_eq!(d.status(), Some(403));
    assert_eq!(
        d.to_string(),
        "denied by the service policy: no statement allows the request"
    );
}

#[test]
fn the_first_applying_allow_in_document_order_is_reported() {
    let p = statements(json!([
        allow_account("Other", ACCT_B),
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "api/orders/*"},
        allow_account("Mine", ACCT_A)
    ]));
    assert_eq!(
        at_service(&p, &req()),
        Decision::Allowed {
            network: LevelAllow::NotChecked,
            service: LevelAllow::Statement(sref(1, None))
        }
    );
}

#[test]
fn an_explicit_deny_wins_wherever_it_is() {
    // Within one policy, even after the Allow.
    let p = statements(json!([
        allow_account("A", ACCT_A),
        deny_method("NoGet", "GET")
    ]));
    let d = at_service(&p, &req());
    assert_eq!(
        d,
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::Statement(sref(1, Some("NoGet")))
        }
    );
    assert_eq!(
        d.to_string(),
        "denied by the service policy: Statement[1] (NoGet)"
    );
    assert!(allows(
        &p,
        &RequestFacts {
            method: "POST",
            ..req()
        }
    ));

    // Across levels: the network allows, the service denies.
    let net = statements(json!([allow_account("A", ACCT_A)]));
    let d = evaluate(Some((&IAM, Some(&net))), Some((&IAM, Some(&p))), &req());
    assert!(matches!(
        d,
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::Statement(_)
        }
    ));

    // A network Deny wins over a service Allow, and over a service Deny
    // (the network is reported first).
    let svc_allow = statements(json!([allow_account("A", ACCT_A)]));
    let net_deny = statements(json!([
        allow_account("A", ACCT_A),
        deny_method("NetNo", "GET")
    ]));
    for svc in [&svc_allow, &p] {
        let d = evaluate(
            Some((&IAM, Some(&net_deny))),
            Some((&IAM, Some(svc))),
            &req(),
        );
        assert_eq!(
            d,
            Decision::Denied {
                level: Level::Network,
                cause: DenyCause::Statement(sref(1, Some("NetNo")))
            }
        );
    }

    // An explicit Deny at the service beats an implicit deny at the network:
    // the more specific reason is reported.
    let net_b = statements(json!([allow_account("B", ACCT_B)]));
    let d = evaluate(Some((&IAM, Some(&net_b))), Some((&IAM, Some(&p))), &req());
    assert_eq!(
        d,
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::Statement(sref(1, Some("NoGet")))
        }
    );

    // Auth type NONE means the level's policy is not consulted at all, so
    // its Deny statements do not apply either.
    let d = evaluate(
        Some((&NONE, Some(&net_deny))),
        Some((&IAM, Some(&svc_allow))),
        &req(),
    );
    assert!(d.is_allowed());
}

#[test]
fn with_iam_at_both_levels_both_must_allow() {
    let a = statements(json!([allow_account("A", ACCT_A)]));
    let b = statements(json!([allow_account("B", ACCT_B)]));
    let both = evaluate(Some((&IAM, Some(&a))), Some((&IAM, Some(&a))), &req());
    assert_eq!(
        both,
        Decision::Allowed {
            network: LevelAllow::Statement(sref(0, Some("A"))),
            service: LevelAllow::Statement(sref(0, Some("A")))
        }
    );
    assert_eq!(
        evaluate(Some((&IAM, Some(&a))), Some((&IAM, Some(&b))), &req()),
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::NoMatchingAllow
        }
    );
    assert_eq!(
        evaluate(Some((&IAM, Some(&b))), Some((&IAM, Some(&a))), &req()),
        Decision::Denied {
            level: Level::Network,
            cause: DenyCause::NoMatchingAllow
        }
    );
    // Neither: the network is reported.
    assert_eq!(
        evaluate(Some((&IAM, Some(&b))), Some((&IAM, Some(&b))), &req()),
        Decision::Denied {
            level: Level::Network,
            cause: DenyCause::NoMatchingAllow
        }
    );
    // Network NONE: only the service decides; service NONE: only the network.
    assert!(evaluate(Some((&NONE, Some(&b))), Some((&IAM, Some(&a))), &req()).is_allowed());
    assert_eq!(
        evaluate(Some((&IAM, Some(&a))), Some((&NONE, None)), &req()),
        Decision::Allowed {
            network: LevelAllow::Statement(sref(0, Some("A"))),
            service: LevelAllow::NotChecked
        }
    );
}

#[test]
fn anonymous_callers_need_a_statement_that_names_them() {
    let star =
        statements(json!([{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]));
    assert!(allows(&star, &req()));
    assert!(allows(&star, &req_b()));
    assert!(
        !allows(&star, &anon()),
        "'*' in an Allow is authenticated callers only"
    );

    let named = statements(
        json!([{"Sid": "Public", "Effect": "Allow", "Principal": {"AWS": "anonymous"},
                                   "Action": "*", "Resource": "*"}]),
    );
    assert_eq!(
        at_service(&named, &anon()),
        Decision::Allowed {
            network: LevelAllow::NotChecked,
            service: LevelAllow::Statement(sref(0, Some("Public")))
        }
    );
    assert!(
        !allows(&named, &req()),
        "'anonymous' does not include authenticated callers"
    );

    let everybody = statements(
        json!([{"Effect": "Allow", "Principal": {"AWS": ["*", "anonymous"]},
                                       "Action": "*", "Resource": "*"}]),
    );
    for r in [req(), req_b(), anon()] {
        assert!(allows(&everybody, &r), "{r:?}");
    }
}

#[test]
fn a_wildcard_deny_also_refuses_anonymous_callers() {
    let p = statements(json!([
        {"Sid": "PublicReads", "Effect": "Allow", "Principal": {"AWS": "anonymous"}, "Action": "*",
         "Resource": "*", "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"}}},
        {"Sid": "NoAdmin", "Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*/admin/*"}
    ]));
    assert!(allows(&p, &anon()));
    let admin = RequestFacts {
        path: "/admin/users",
        ..anon()
    };
    let d = at_service(&p, &admin);
    assert_eq!(
        d,
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::Statement(sref(1, Some("NoAdmin")))
        }
    );
    assert_eq!(
        d.status(),
        Some(403),
        "an explicit Deny is a 403 even for anonymous callers"
    );

    // A Deny naming an account does not touch anonymous callers.
    let p = statements(json!([
        {"Effect": "Allow", "Principal": {"AWS": "anonymous"}, "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": ACCT_A}, "Action": "*", "Resource": "*"}
    ]));
    assert!(allows(&p, &anon()));
    // A Deny naming "anonymous" refuses them with a 403.
    let p = statements(json!([
        {"Effect": "Allow", "Principal": {"AWS": ["*", "anonymous"]}, "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": "anonymous"}, "Action": "*", "Resource": "*",
         "Condition": {"StringEquals": {"trellis:RequestMethod": "POST"}}}
    ]));
    assert!(allows(&p, &anon()));
    assert_eq!(
        at_service(
            &p,
            &RequestFacts {
                method: "POST",
                ..anon()
            }
        )
        .status(),
        Some(403)
    );
    assert!(allows(
        &p,
        &RequestFacts {
            method: "POST",
            ..req()
        }
    ));
}

#[test]
fn unauthenticated_401_only_when_authenticating_could_help() {
    // Allow for authenticated callers on GET: an anonymous GET is a 401.
    let p = statements(json!([
        {"Sid": "Mesh", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
         "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"}}}
    ]));
    let d = at_service(&p, &anon());
    assert_eq!(
        d,
        Decision::Unauthenticated {
            level: Level::Service
        }
    );
    assert_eq!(d.status(), Some(401));
    assert_eq!(
        d.to_string(),
        "the service policy admits only authenticated callers, and the request has no mesh identity"
    );
    // ...but an anonymous DELETE would be refused even if authenticated: 403.
    let del = RequestFacts {
        method: "DELETE",
        ..anon()
    };
    assert_eq!(
        at_service(&p, &del),
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::NoMatchingAllow
        }
    );

    // Identity conditions count as satisfiable by some authenticated caller.
    let p = statements(json!([
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
         "Condition": {"StringEquals": {"trellis:SourceAccount": ACCT_B},
                       "StringLike": {"trellis:SourceWorkload": "*/workload/batch-*"}}}
    ]));
    assert_eq!(at_service(&p, &anon()).status(), Some(401));
    assert_eq!(
        at_service(&p, &req()).status(),
        Some(403),
        "authenticated and not allowed"
    );
    assert!(allows(&p, &req_b()));

    // Account and workload principals require authentication too.
    for principal in [
        json!(ACCT_B),
        json!("spiffe://trellis.local/account/*/workload/batch-?"),
    ] {
        let p = statements(json!([
            {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "*", "Resource": "*"}
        ]));
        assert_eq!(at_service(&p, &anon()).status(), Some(401), "{principal}");
        assert!(allows(&p, &req_b()), "{principal}");
        assert!(!allows(&p, &req()), "{principal}");
    }

    // An Allow for anonymous callers only, on another resource: nothing an
    // authenticated caller could use, so 403.
    let p = statements(json!([
        {"Effect": "Allow", "Principal": {"AWS": "anonymous"}, "Action": "*", "Resource": "web/*"}
    ]));
    assert_eq!(at_service(&p, &anon()).status(), Some(403));
}

#[test]
fn unauthenticated_across_levels() {
    let mesh =
        statements(json!([{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]));
    let public = statements(
        json!([{"Effect": "Allow", "Principal": {"AWS": "anonymous"},
                                    "Action": "*", "Resource": "*"}]),
    );
    let none_for_anyone = statements(json!([allow_account("B", ACCT_B)]));
    let anon = anon();
    // Network wants authentication, service admits anonymous: 401 at the network.
    assert_eq!(
        evaluate(
            Some((&IAM, Some(&mesh))),
            Some((&IAM, Some(&public))),
            &anon
        ),
        Decision::Unauthenticated {
            level: Level::Network
        }
    );
    // Both want authentication: 401, the network named.
    assert_eq!(
        evaluate(Some((&IAM, Some(&mesh))), Some((&IAM, Some(&mesh))), &anon),
        Decision::Unauthenticated {
            level: Level::Network
        }
    );
    // The network wants authentication but the service has no policy:
    // authenticating would not help, so 403 where it could not.
    assert_eq!(
        evaluate(Some((&IAM, Some(&mesh))), Some((&IAM, None)), &anon),
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::NoPolicy
        }
    );
    // Same when the service's Allow could not be met by this anonymous
    // request even authenticated (a different service name).
    let other = statements(
        json!([{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "web"}]),
    );
    assert_eq!(
        evaluate(Some((&IAM, Some(&mesh))), Some((&IAM, Some(&other))), &anon),
        Decision::Denied {
            level: Level::Service,
            cause: DenyCause::NoMatchingAllow
        }
    );
    // An authenticated caller is never told 401.
    let d = evaluate(
        Some((&IAM, Some(&none_for_anyone))),
        Some((&IAM, Some(&public))),
        &req(),
    );
    assert_eq!(d.status(), Some(403));
}

#[test]
fn resources_match_service_account_and_path() {
    let p = |r: Value| {
        statements(json!([{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": r}]))
    };
    let cases: &[(Value, bool)] = &[
        (json!("*"), true),
        (json!("api"), true),
        (json!("api/*"), true),
        (json!("api/orders/*"), true),
        (json!("api/orders/4?"), true),
        (json!("api/orders"), false),
        (json!("a*/*"), true),
        (json!("svc-*/*"), false),
        (json!("ap?"), true),
        (json!("*/orders/*"), true),
        (json!("web/*"), false),
        (json!("api/ORDERS/*"), false),
        (json!("trellis:111122223333:service/api/orders/*"), true),
        (json!("trellis:444455556666:service/api/*"), false),
        (json!("trellis:1111*:service/*"), true),
        (json!("trellis:*:service/api"), true),
        (json!(["web/*", "api/orders/*"]), true),
    ];
    for (r, expected) in cases {
        assert_eq!(allows(&p(r.clone()), &req()), *expected, "{r}");
    }
    // The service part never spans a '/': 'a*' cannot eat "pi/orders".
    let cross = statements(
        json!([{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "a*/42"}]),
    );
    assert!(!allows(&cross, &req()));
}

#[test]
fn workload_principals_match_per_segment() {
    let p = |w: &str| {
        statements(
            json!([{"Effect": "Allow", "Principal": {"Trellis": w}, "Action": "*", "Resource": "*"}]),
        )
    };
    assert!(allows(&p(WEB_A), &req()));
    assert!(!allows(&p(WEB_A), &req_b()));
    assert!(allows(&p("spiffe://*/account/*/workload/web"), &req()));
    assert!(allows(
        &p("spiffe://trellis.local/account/111122223333/workload/*"),
        &req()
    ));
    assert!(!allows(
        &p("spiffe://other.mesh/account/111122223333/workload/*"),
        &req()
    ));
    assert!(allows(
        &p("spiffe://trellis.local/account/4444*/workload/batch-?"),
        &req_b()
    ));
    let tricky = RequestFacts {
        caller: Some(Caller {
            account: ACCT_A,
            workload: "spiffe://trellis.local/account/111122223333/workload/web/account/222233334444/workload/x",
        }),
        ..req()
    };
    assert!(
        !allows(&p("spiffe://*/account/*/workload/x"), &tricky),
        "a '*' never spans segments"
    );
}

#[test]
fn explain_uses_the_same_checks_and_names_the_failing_part() {
    let p = statements(json!([
        allow_account("B", ACCT_B),
        {"Sid": "Web", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "web/*"},
        {"Sid": "Posts", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
         "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"},
                       "StringLike": {"trellis:RequestHeader/X-Team": "blue-*"}}},
        deny_method("NoDelete", "DELETE"),
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}
    ]));
    let outcomes: Vec<StatementMatch<'_>> = p.explain(&req()).iter().map(|t| t.outcome).collect();
    assert_eq!(
        outcomes,
        [
            StatementMatch::Principal,
            StatementMatch::Resource,
            StatementMatch::Condition {
                operator: Operator::StringLike,
                key: "trellis:RequestHeader/x-team"
            },
            StatementMatch::Condition {
                operator: Operator::StringEquals,
                key: "trellis:RequestMethod"
            },
            StatementMatch::Applies,
        ]
    );
    let traces = p.explain(&anon());
    assert_eq!(traces[4].outcome, StatementMatch::NeedsAuthentication);
    assert_eq!(traces[0].outcome, StatementMatch::NeedsAuthentication);
    assert_eq!(traces[1].outcome, StatementMatch::Principal);
    assert_eq!(traces[3].statement, sref(3, Some("NoDelete")));
    assert_eq!(traces[3].effect, Effect::Deny);
    // The decision agrees with the trace.
    assert_eq!(
        at_service(&p, &req()),
        Decision::Allowed {
            network: LevelAllow::NotChecked,
            service: LevelAllow::Statement(sref(4, None))
        }
    );
    assert_eq!(p.len(), 5);
    assert_eq!(p.sid(3), Some("NoDelete"));
    assert_eq!(p.effect(3), Some(Effect::Deny));
    assert_eq!(p.sid(9), None);
}

#[test]
fn decisions_never_carry_policy_text() {
    let p = statements(json!([
        {"Sid": "S", "Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "api/secret-path/*",
         "Condition": {"StringEquals": {"trellis:RequestHeader/x-token": "hunter2"}}}
    ]));
    let r = RequestFacts {
        path: "/secret-path/1",
        headers: &[("x-token", "hunter2")],
        ..req()
    };
    let d = at_service(&p, &r);
    let shown = format!("{d} {d:?}");
    assert!(shown.contains("Statement[0]"), "{shown}");
    for secret in ["hunter2", "secret-path", "x-token"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[test]
fn compiled_policies_are_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<CompiledPolicy>();
}
