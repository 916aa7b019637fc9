//! The CLI run in-process: argument parsing, and commands against a real
//! control plane on a free loopback port.

use super::*;
use crate::server::{ControlConfig, RunningControl};

fn args(line: &str) -> Vec<String> {
    std::iter::once("trellis".to_string())
        .chain(line.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn parses_aliases_flags_and_stdin() {
    let cli = parse(args("--server http://h:1 get svc catalog -o yaml")).unwrap();
    assert_eq!(cli.server, "http://h:1");
    match cli.command {
        Command::Get { kind, name, output } => {
            assert_eq!(kind, Subject::Kind(Kind::Service));
            assert_eq!(name.as_deref(), Some("catalog"));
            assert_eq!(output, Format::Yaml);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(args("apply -f -")).unwrap().command,
        Command::Apply { file } if file == "-"
    ));
    assert!(matches!(
        parse(args("get proxies")).unwrap().command,
        Command::Get {
            kind: Subject::Proxies,
            ..
        }
    ));
    let dev = parse(args("dev --demo --api 127.0.0.1:0")).unwrap();
    assert!(matches!(
        dev.command,
        Command::Dev(DevArgs { demo: true, .. })
    ));
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let e = parse(args("get widgets")).unwrap_err();
    assert_eq!(e.exit, Exit::Usage);
    assert!(e.message.contains("unknown kind 'widgets'"), "{e}");
    assert_eq!(
        parse(args("delete proxies x")).unwrap_err().exit,
        Exit::Usage
    );
    let h = parse(args("--help")).unwrap_err();
    assert_eq!(h.exit, Exit::Ok);
    assert!(h.message.contains("Exit codes:"), "{h}");
}

/// A control plane on a free port with a fresh store.
async fn control() -> (RunningControl, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::server::start(ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        admin_token: None,
    })
    .await
    .unwrap();
    (c, dir)
}

/// Run `trellis --server URL <line>`; output and result.
async fn cli(c: &RunningControl, line: &str) -> (String, Result<(), CliError>) {
    let mut a = args(line);
    a.insert(1, format!("--server={}", c.url()));
    let t = c
        .bootstrap_account(trellis_config::limits::DEFAULT_ACCOUNT, "default", "test")
        .await
        .unwrap();
    a.insert(1, format!("--token={}", t.token));
    let mut out = Vec::new();
    let r = run(a, &mut out).await;
    (String::from_utf8(out).unwrap(), r)
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn apply_twice_changes_nothing_the_second_time() {
    let (c, dir) = control().await;
    let file = write(&dir, "demo.yaml", demo::DEMO_YAML);

    let (out, r) = cli(&c, &format!("apply -f {file}")).await;
    r.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "service-network/demo created",
            "target-group/catalog-v1 created",
            "target-group/catalog-v2 created",
            "service/catalog created",
            "service/reviews created",
            "service-association/catalog-demo created",
            "service-association/reviews-demo created",
            "proxy-association/dev-demo created",
            "applied 8 resources: 8 created",
        ]
    );

    let (out, r) = cli(&c, &format!("apply -f {file}")).await;
    r.unwrap();
    assert!(out.contains("service/catalog unchanged\n"), "{out}");
    assert!(
        out.ends_with("no changes: 8 resources unchanged\n"),
        "{out}"
    );

    // One edit: one resource configured, its version grows.
    let edited = demo::DEMO_YAML.replace("weight: 80", "weight: 50");
    let file2 = write(&dir, "edited.yaml", &edited);
    let (out, r) = cli(&c, &format!("apply -f {file2}")).await;
    r.unwrap();
    assert!(out.contains("service/catalog configured\n"), "{out}");
    assert!(
        out.ends_with("applied 8 resources: 1 configured, 7 unchanged\n"),
        "{out}"
    );
    let (out, r) = cli(&c, "get service catalog").await;
    r.unwrap();
    let row = out.lines().nth(1).unwrap();
    assert!(row.starts_with("catalog   svc-"), "{out}");
    assert!(row.contains("   2   "), "version 2 expected: {out}");
    c.shutdown().await;
}

#[tokio::test]
async fn invalid_documents_are_all_reported_and_nothing_is_applied() {
    let (c, dir) = control().await;
    let file = write(
        &dir,
        "bad.yaml",
        "kind: ServiceNetwork\nname: fine\n---\n\
         kind: TargetGroup\nname: tg\nport: 0\nhealthCheck: {intervalSeconds: 1}\n---\n\
         kind: Service\nname: s\nlisteners:\n- name: l\n  defaultAction: {fixedResponse: {statusCode: 700}}\n",
    );
    let (out, r) = cli(&c, &format!("apply -f {file}")).await;
    let e = r.unwrap_err();
    assert_eq!(e.exit, Exit::Invalid);
    assert_eq!(out, "");
    for want in [
        "2 documents are invalid; nothing was applied",
        "document 2 (target-group/tg):\n  port: must be between 1 and 65535",
        "  healthCheck.intervalSeconds: must be between 5 and 300, got 1",
        "document 3 (service/s):\n  listeners[0].defaultAction.fixedResponse.statusCode: must be between 100 and 599, got 700",
    ] {
        assert!(e.message.contains(want), "{want:?} missing from:\n{e}");
    }
    let (out, r) = cli(&c, "get networks").await;
    r.unwrap();
    assert_eq!(out, "No service networks found.\n");
    c.shutdown().await;
}

#[tokio::test]
async fn a_rejected_reference_names_the_document_and_what_was_applied() {
    let (c, dir) = control().await;
    let file = write(
        &dir,
        "ref.yaml",
        "kind: ServiceNetwork\nname: n\n---\n\
         kind: Service\nname: s\nlisteners:\n- name: l\n  defaultAction: {forward: {targetGroups: [{targetGroup: missing}]}}\n",
    );
    let (out, r) = cli(&c, &format!("apply -f {file}")).await;
    let e = r.unwrap_err();
    assert_eq!(out, "service-network/n created\n");
    assert!(e.message.contains("service/s (document 2 of "), "{e}");
    assert!(e.message.contains("missing"), "{e}");
    assert!(
        e.message
            .contains("1 of 2 documents were applied before it (applied 1 resource: 1 created)"),
        "{e}"
    );
    assert!(matches!(e.exit, Exit::Invalid | Exit::NotFound), "{e:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn get_describe_delete_and_yaml_round_trip() {
    let (c, dir) = control().await;
    let file = write(&dir, "demo.yaml", demo::DEMO_YAML);
    cli(&c, &format!("apply -f {file}")).await.1.unwrap();

    let (out, r) = cli(&c, "get tg").await;
    r.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME         ID   ")
            && lines[0].ends_with("PORT    PROTOCOL     TARGETS   UPDATED"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].starts_with("catalog-v1   tg-"), "{out}");
    assert!(
        lines[1].contains("   18081   HTTP/HTTP1   1         "),
        "{out}"
    );

    // The YAML of `get` applies back unchanged.
    let (yaml, r) = cli(&c, "get services -o yaml").await;
    r.unwrap();
    assert!(yaml.starts_with("kind: Service\nname: catalog\n"), "{yaml}");
    let back = write(&dir, "back.yaml", &yaml);
    let (out, r) = cli(&c, &format!("apply -f {back}")).await;
    r.unwrap();
    assert_eq!(
        out,
        "service/catalog unchanged\nservice/reviews unchanged\nno changes: 2 resources unchanged\n"
    );
    let (json, r) = cli(&c, "get sn demo -o json").await;
    r.unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "ServiceNetwork");
    assert_eq!(v["version"], 1);

    let (out, r) = cli(&c, "describe service catalog").await;
    r.unwrap();
    assert!(
        out.contains("catalog.demo.trellis.internal (network demo)"),
        "{out}"
    );
    assert!(out.contains("header x-canary = \"true\""), "{out}");

    // Still referenced: refused with exit 5, the server's reason shown.
    let (_, r) = cli(&c, "delete tg catalog-v2").await;
    let e = r.unwrap_err();
    assert_eq!(e.exit, Exit::Conflict, "{e}");
    assert!(
        e.message
            .starts_with("error: deleting target-group/catalog-v2: "),
        "{e}"
    );
    assert!(e.message.contains("catalog"), "{e}");

    let (out, r) = cli(&c, "delete pxa dev-demo").await;
    r.unwrap();
    assert_eq!(out, "proxy-association/dev-demo deleted\n");
    let (_, r) = cli(&c, "get pxa dev-demo").await;
    let e = r.unwrap_err();
    assert_eq!(e.exit, Exit::NotFound);
    assert_eq!(
        e.message,
        "error: proxy-association 'dev-demo' not found; list them with `trellis get proxy-associations`"
    );
    let (out, r) = cli(&c, "proxies").await;
    r.unwrap();
    assert_eq!(out, "No proxies have registered yet.\n");
    c.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_exits_6_with_a_hint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut out = Vec::new();
    let e = run(
        args(&format!("--server http://127.0.0.1:{port} get services")),
        &mut out,
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit, Exit::Unreachable);
    assert!(e.message.contains("trellis dev"), "{e}");
}

/// GET through the dev proxy with a Host header; the backend's name.
async fn backend_for(proxy: &Client, host: &str, path: &str, extra: &[(&str, &str)]) -> String {
    let mut headers = vec![("host", host)];
    headers.extend_from_slice(extra);
    let r = proxy
        .send(http::Method::GET, path, None, &headers)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{host}{path}: {}", r.body);
    r.body["backend"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn dev_demo_routes_through_the_proxy_at_once() {
    let opts = dev::DevOptions::ephemeral(true);
    let mut log = Vec::new();
    let env = dev::DevEnv::start(&opts, &mut log).await.unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains("  service/catalog created\n"), "{log}");
    let status = env.demo_status.clone().unwrap();
    assert!(status.in_sync && status.scope == ["demo"], "{status:?}");

    let proxy = Client::new(&env.proxy.outbound_addr.to_string()).unwrap();
    let catalog = "catalog.demo.trellis.internal";
    // Header rule and path rule: always v2.
    for _ in 0..5 {
        assert_eq!(
            backend_for(&proxy, catalog, "/", &[("x-canary", "true")]).await,
            "catalog-v2"
        );
        assert_eq!(
            backend_for(&proxy, catalog, "/v2/items", &[]).await,
            "catalog-v2"
        );
        assert_eq!(
            backend_for(&proxy, "reviews.demo.trellis.internal", "/", &[]).await,
            "catalog-v1"
        );
    }
    // The 80/20 split: 200 requests give about 40 to v2 (sd ~6).
    let mut v2 = 0;
    for _ in 0..200 {
        if backend_for(&proxy, catalog, "/", &[]).await == "catalog-v2" {
            v2 += 1;
        }
    }
    assert!((15..=70).contains(&v2), "{v2} of 200 went to catalog-v2");

    // The banner's curl commands name the real addresses.
    let banner = env.banner(&opts);
    let p = env.proxy.outbound_addr;
    assert!(
        banner.contains(&format!("curl -s -H 'host: {catalog}' http://{p}/\n")),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("curl -s -x http://{p} http://{catalog}/\n")),
        "{banner}"
    );

    // The banner gives the default account's token, once; with it the
    // CLI sees the proxy in sync, without it the CLI is refused.
    let token = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("export TRELLIS_TOKEN="))
        .expect("the banner prints the token")
        .to_string();
    assert!(token.starts_with("trellis_tok-"), "{banner}");
    let mut out = Vec::new();
    let refused = run(
        args(&format!("--server {} proxies", env.control.url())),
        &mut out,
    )
    .await
    .unwrap_err();
    assert!(
        refused.message.contains("needs an API token"),
        "{refused:?}"
    );
    let mut out = Vec::new();
    run(
        args(&format!(
            "--server {} --token {token} proxies",
            env.control.url()
        )),
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("dev-node   dev     demo    "), "{out}");
    assert!(row.contains("   yes   "), "{out}");
    let data_dir = env.data_dir.clone();
    env.shutdown().await;
    assert!(!data_dir.exists(), "the temporary data dir is removed");
}

#[tokio::test]
async fn get_targets_shows_health_and_draining() {
    let (c, dir) = control().await;
    let two = write(
        &dir,
        "two.yaml",
        "kind: TargetGroup\nname: g\nport: 80\nderegistrationDelaySeconds: 600\n\
         targets: [{address: 10.0.0.1}, {address: 10.0.0.2, port: 81}]\n",
    );
    let one = write(
        &dir,
        "one.yaml",
        "kind: TargetGroup\nname: g\nport: 80\nderegistrationDelaySeconds: 600\n\
         targets: [{address: 10.0.0.1}]\n",
    );
    cli(&c, &format!("apply -f {two}")).await.1.unwrap();
    cli(&c, &format!("apply -f {one}")).await.1.unwrap();

    let (out, r) = cli(&c, "get targets g").await;
    r.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "ADDRESS    PORT   PROXY   STATE         REASON",
        "{out}"
    );
    assert!(
        lines[1].starts_with("10.0.0.1   80     -       UNAVAILABLE   NotReported: "),
        "{out}"
    );
    assert!(
        lines[2].starts_with("10.0.0.2   81     -       DRAINING      deregistered, draining (9m"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");

    let (out, r) = cli(&c, "get targets g -o json").await;
    r.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[1]["state"], "DRAINING", "{out}");

    let (out, r) = cli(&c, "describe tg g").await;
    r.unwrap();
    assert!(
        out.contains("Targets:\n  ADDRESS    PORT   PROXY   STATE"),
        "{out}"
    );
    assert!(
        out.contains("  10.0.0.2   81     -       DRAINING"),
        "{out}"
    );

    let e = cli(&c, "get targets").await.1.unwrap_err();
    assert_eq!(e.exit, Exit::Usage, "{e}");
    let e = cli(&c, "get targets nope").await.1.unwrap_err();
    assert_eq!(e.exit, Exit::NotFound, "{e}");
    assert!(e.message.contains("trellis get target-groups"), "{e}");
    c.shutdown().await;
}

#[tokio::test]
async fn join_tokens_are_created_listed_and_revoked() {
    let (c, _dir) = control().await;
    let (out, r) = cli(
        &c,
        "join-token create --ttl 10m --max-uses 2 --description node -q",
    )
    .await;
    r.unwrap();
    let token = out.trim().to_string();
    assert!(token.starts_with("tjt_"), "{out}");
    let id = crate::join::token_id(&token).unwrap().to_string();
    let (out, r) = cli(&c, "join-token list").await;
    r.unwrap();
    assert!(
        out.contains(&id) && out.contains("active") && out.contains("0/2"),
        "{out}"
    );
    assert!(!out.contains(&token), "a listed value: {out}");
    let (out, r) = cli(&c, &format!("join-token revoke {id}")).await;
    r.unwrap();
    assert_eq!(out, format!("join token {id} revoked\n"));
    let (out, _) = cli(&c, "join-token list").await;
    assert!(out.contains("revoked"), "{out}");
    let (_, r) = cli(&c, "join-token revoke nope").await;
    assert_eq!(r.unwrap_err().exit, crate::cli::error::Exit::NotFound);
    let (out, r) = cli(&c, "join-token create").await;
    r.unwrap();
    assert!(
        out.contains("unlimited uses") && out.contains("shown only now"),
        "{out}"
    );
    c.shutdown().await;
}
