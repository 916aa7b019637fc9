//! The audit log: a record for every change, with who and which versions,
//! written with the change; each account reads only its own.

use crate::harness::{Control, run_cli};
use serde_json::{Value, json};

/// (action, kind, name, before version, after version) of a record.
type Rec = (String, String, String, Option<u64>, Option<u64>);

/// (action, kind, name, before, after) of each record, newest first.
fn summary(page: &Value) -> Vec<Rec> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap_or_default().to_string(),
                r["beforeVersion"].as_u64(),
                r["afterVersion"].as_u64(),
            )
        })
        .collect()
}

fn rec(action: &str, kind: &str, name: &str, before: Option<u64>, after: Option<u64>) -> Rec {
    (action.into(), kind.into(), name.into(), before, after)
}

#[tokio::test]
async fn every_change_is_recorded_with_who_and_versions_newest_first_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(dir.path()).await;
    let a = cp.api();
    let admin = a.with_token(Some(Box::leak(
        std::fs::read_to_string(dir.path().join("admin-token"))
            .unwrap()
            .trim()
            .to_string()
            .into_boxed_str(),
    )));
    let (_, tokens) = a.get("/v1/tokens").await;
    let harness_token_id = tokens["items"][0]["id"].as_str().unwrap().to_string();

    // A: create, update, an unchanged PUT, a refused write, a delete.
    let created = a.put("service-networks", json!({"name": "net"})).await;
    a.put(
        "service-networks",
        json!({"name": "net", "authType": "IAM"}),
    )
    .await;
    a.put(
        "service-networks",
        json!({"name": "net", "authType": "IAM"}),
    )
    .await;
    let r = a
        .call("POST", "/v1/service-networks", &json!({"name": "net"}), &[])
        .await;
    assert_eq!(r.status, 409);
    let r = a
        .call(
            "POST",
            "/v1/target-groups",
            &json!({"name": "Bad Name"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = a
        .call("DELETE", "/v1/service-networks/net", &Value::Null, &[])
        .await;
    assert_eq!(r.status, 204);
    // A token made and revoked.
    let t = a
        .call("POST", "/v1/tokens", &json!({"description": "tmp"}), &[])
        .await
        .json()
        .unwrap();
    let tid = t["id"].as_str().unwrap().to_string();
    assert_eq!(
        a.call("DELETE", &format!("/v1/tokens/{tid}"), &Value::Null, &[])
            .await
            .status,
        204
    );
    // A join token made and revoked (revoking it again changes nothing
    // and records nothing).
    let r = a
        .call(
            "POST",
            "/v1/join-tokens",
            &json!({"ttlSeconds": 600, "maxUses": 1, "description": "node-7"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let jt = r.json().unwrap();
    let jid = jt["id"].as_str().unwrap().to_string();
    let join_secret = jt["token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let r = a
            .call(
                "DELETE",
                &format!("/v1/join-tokens/{jid}"),
                &Value::Null,
                &[],
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    // A proxy forgotten (it joins with a join token of its own: made).
    let r = crate::harness::register_proxy(a, json!({"name": "px"})).await;
    assert!(r.status.is_success(), "{}", r.text());
    assert_eq!(
        a.call("DELETE", "/v1/proxies/px", &Value::Null, &[])
            .await
            .status,
        204
    );

    // B, made by the admin, changes things of its own.
    assert_eq!(
        admin
            .call(
                "POST",
                "/v1/accounts",
                &json!({"id": "222222222222", "name": "b"}),
                &[]
            )
            .await
            .status,
        201
    );
    let bt = admin
        .call(
            "POST",
            "/v1/tokens",
            &json!({"account": "222222222222"}),
            &[],
        )
        .await
        .json()
        .unwrap();
    let b = a.with_token(Some(Box::leak(
        bt["token"].as_str().unwrap().to_string().into_boxed_str(),
    )));
    b.put("service-networks", json!({"name": "bnet"})).await;

    let (code, page) = a.get("/v1/audit").await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(
        summary(&page),
        [
            rec("delete", "Proxy", "px", None, None),
            rec("create", "JoinToken", "", None, None),
            rec("delete", "JoinToken", "", None, None),
            rec("create", "JoinToken", "", None, None),
            rec("delete", "Token", "", None, None),
            rec("create", "Token", "", None, None),
            rec("delete", "ServiceNetwork", "net", Some(2), None),
            rec("update", "ServiceNetwork", "net", Some(1), Some(2)),
            rec("create", "ServiceNetwork", "net", None, Some(1)),
            // The harness made the default account and its token in process.
            rec("create", "Token", "", None, None),
            rec("create", "Account", "default", None, None),
        ],
        "{page}"
    );
    let items = page["items"].as_array().unwrap();
    for r in &items[..9] {
        assert_eq!(r["account"], "000000000000");
        assert_eq!(r["tokenId"], harness_token_id.as_str(), "{r}");
        assert!(r["at"].as_str().unwrap().ends_with('Z'), "{r}");
    }
    assert_eq!(items[2]["resourceId"], jid.as_str());
    assert_eq!(items[3]["resourceId"], jid.as_str());
    assert_eq!(items[4]["resourceId"], tid.as_str());
    assert_eq!(items[8]["resourceId"], created["id"]);
    assert_eq!(items[10]["tokenId"], "bootstrap");
    let text = page.to_string();
    assert!(
        !text.contains(&join_secret) && !text.contains("tjt_"),
        "no join token value in the audit log: {text}"
    );
    assert!(
        !text.contains("bnet") && !text.contains("222222222222"),
        "B's records leak to A: {text}"
    );

    // B sees its own: made by the admin, then its network.
    let (_, bpage) = b.get("/v1/audit").await;
    assert_eq!(
        summary(&bpage),
        [
            rec("create", "ServiceNetwork", "bnet", None, Some(1)),
            rec("create", "Token", "", None, None),
            rec("create", "Account", "b", None, None),
        ],
        "{bpage}"
    );
    assert_eq!(bpage["items"][1]["tokenId"], "admin");
    assert!(!bpage.to_string().contains("\"net\""), "{bpage}");

    // Pages: newest first, no overlap, all of them.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/audit?limit=3&pageToken={t}"),
            None => "/v1/audit?limit=3".to_string(),
        };
        let (code, p) = a.get(&path).await;
        assert_eq!(code, 200, "{p}");
        seen.extend(
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string()),
        );
        match p["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let all: Vec<_> = items
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, all);
    assert_eq!(a.get("/v1/audit?limit=0").await.0, 400);
    assert_eq!(admin.get("/v1/audit").await.0, 403);

    // The CLI shows the same.
    let (code, out) = run_cli(vec![
        "trellis".into(),
        "--server".into(),
        cp.url(),
        "audit".into(),
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<_> = out.lines().collect();
    assert!(lines[0].starts_with("AT"), "{out}");
    assert!(
        lines[1].contains("delete") && lines[1].contains("Proxy") && lines[1].contains("px"),
        "{out}"
    );
    assert!(out.contains("1 -> 2"), "{out}");
    cp.stop().await;
}
