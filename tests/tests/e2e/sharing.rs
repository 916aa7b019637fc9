//! Sharing a service network between two accounts, through the REST API
//! and real proxies: the sharee sees the network, associates its own
//! service and proxy with it, cannot change it; revoking removes it from
//! the sharee's proxy and deactivates the sharee's associations.

use crate::harness::{Api, Control, PUSH_WAIT, Proxy, forward, wait_for_backend};
use serde_json::{Value, json};
use trellis_config::limits::DEFAULT_ACCOUNT;
use trellis_tests::{EchoBackend, http1_request};

const B: &str = "222222222222";
const C: &str = "333333333333";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

async fn account(api: Api, admin: &'static str, id: &str) -> Api {
    let admin = api.with_token(Some(admin));
    let r = admin
        .call("POST", "/v1/accounts", &json!({"id": id, "name": id}), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t = admin
        .call("POST", "/v1/tokens", &json!({"account": id}), &[])
        .await
        .json()
        .unwrap();
    api.with_token(Some(leak(t["token"].as_str().unwrap().to_string())))
}

/// Wait until a GET of `host` through `proxy` answers `status`.
async fn wait_status(proxy: &Proxy, host: &str, status: u16) {
    let (out, host2) = (proxy.outbound, host.to_string());
    trellis_tests::wait_until_async(&format!("{host} answers {status}"), PUSH_WAIT, || {
        let host = host2.clone();
        async move {
            http1_request(out, &host, "GET", "/", &[], Vec::new())
                .await
                .is_ok_and(|r| r.status == status)
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_shared_network_carries_the_sharees_services_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let a = cp.api();
    let admin = leak(
        std::fs::read_to_string(dir.path().join("cp/admin-token"))
            .unwrap()
            .trim()
            .to_string(),
    );
    let b = account(a, admin, B).await;
    let c = account(a, admin, C).await;
    let (ba, bb) = (
        EchoBackend::start_named("a").await.unwrap(),
        EchoBackend::start_named("b").await.unwrap(),
    );

    // A: network, its own service.
    let net = a.put("service-networks", json!({"name": "net"})).await;
    let net_id = net["id"].as_str().unwrap().to_string();
    a.put(
        "target-groups",
        json!({"name": "atg", "port": ba.port(), "targets": [{"address": "127.0.0.1"}]}),
    )
    .await;
    a.put(
        "services",
        json!({"name": "asvc", "listeners": [{"name": "http", "defaultAction": forward("atg")}]}),
    )
    .await;
    a.put(
        "service-associations",
        json!({"name": "asvc-net", "serviceNetwork": "net", "service": "asvc"}),
    )
    .await;

    // Before a share, B and C see nothing of it.
    assert_eq!(
        b.get(&format!("/v1/service-networks/{net_id}")).await.0,
        404
    );
    let r = b
        .call(
            "POST",
            "/v1/service-associations",
            &json!({"name": "x", "serviceNetwork": net_id, "service": "none"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Share with B (again: 200, unchanged). Only the owner manages shares.
    let shares = "/v1/service-networks/net/shares";
    let r = a.call("POST", shares, &json!({"account": B}), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json().unwrap()["networkName"], "net");
    assert_eq!(
        a.call("POST", shares, &json!({"account": B}), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        a.call("POST", shares, &json!({"account": "999999999999"}), &[])
            .await
            .status,
        400
    );
    assert_eq!(
        a.call("POST", shares, &json!({"account": "12"}), &[])
            .await
            .status,
        400
    );
    let (_, list) = a.get(shares).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["account"], B);
    let b_shares = format!("/v1/service-networks/{net_id}/shares");
    assert_eq!(b.get(&b_shares).await.0, 403);
    assert_eq!(
        b.call("POST", &b_shares, &json!({"account": C}), &[])
            .await
            .status,
        403
    );
    assert_eq!(
        b.call("DELETE", &format!("{b_shares}/{B}"), &Value::Null, &[])
            .await
            .status,
        403
    );
    assert_eq!(c.get(&b_shares).await.0, 404);

    // B sees the network, marked with its owner; C does not.
    let (code, seen) = b.get(&format!("/v1/service-networks/{net_id}")).await;
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["account"], DEFAULT_ACCOUNT);
    assert_eq!(seen["shared"], true);
    let (_, listed) = b.get("/v1/service-networks").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["items"][0]["id"], net_id.as_str());
    assert_eq!(listed["items"][0]["shared"], true);
    assert!(
        a.get("/v1/service-networks").await.1["items"][0]
            .get("shared")
            .is_none()
    );
    assert_eq!(
        c.get(&format!("/v1/service-networks/{net_id}")).await.0,
        404
    );
    assert_eq!(c.get("/v1/service-networks").await.1["items"], json!([]));

    // B cannot change or delete it (403), nor use A's service.
    let net_url = format!("/v1/service-networks/{net_id}");
    let r = b
        .call(
            "PUT",
            &net_url,
            &json!({"name": "net", "authType": "IAM"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        b.call("DELETE", &net_url, &Value::Null, &[]).await.status,
        403
    );
    assert_eq!(
        c.call("DELETE", &net_url, &Value::Null, &[]).await.status,
        404
    );
    let r = b
        .call(
            "POST",
            "/v1/service-associations",
            &json!({"name": "steal", "serviceNetwork": net_id, "service": "asvc"}),
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        400,
        "A's service is not B's to associate: {}",
        r.text()
    );
    assert_eq!(a.get("/v1/service-networks/net").await.1["version"], 1);

    // B associates its own service, by the network's id.
    b.put(
        "target-groups",
        json!({"name": "btg", "port": bb.port(), "targets": [{"address": "127.0.0.1"}]}),
    )
    .await;
    b.put(
        "services",
        json!({"name": "bsvc", "listeners": [{"name": "http", "defaultAction": forward("btg")}]}),
    )
    .await;
    let sa = b
        .put(
            "service-associations",
            json!({"name": "bsvc-net", "serviceNetwork": net_id, "service": "bsvc"}),
        )
        .await;
    assert_eq!(sa["status"]["dnsName"], "bsvc.net.trellis.internal", "{sa}");
    // Only associations may name a shared network: not B's log subscriptions.
    let r = b
        .call(
            "POST",
            "/v1/access-log-subscriptions",
            &json!({"name": "spy", "resource": {"serviceNetwork": net_id}, "destination": {"file": {"path": "/dev/null"}}}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // C cannot.
    let r = c
        .call(
            "POST",
            "/v1/service-associations",
            &json!({"name": "x", "serviceNetwork": net_id, "service": "x"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);

    // Both see both associations on the network; C sees nothing.
    for (who, api) in [("A", a), ("B", b)] {
        let key = if who == "A" { "net" } else { net_id.as_str() };
        let (code, on) = api
            .get(&format!("/v1/service-networks/{key}/associations"))
            .await;
        assert_eq!(code, 200, "{on}");
        let mut names: Vec<_> = on["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["asvc-net", "bsvc-net"], "{who}: {on}");
    }
    assert_eq!(
        c.get(&format!("/v1/service-networks/{net_id}/associations"))
            .await
            .0,
        404
    );

    // A's proxy reaches B's service; B's proxy (account B, joined by the
    // network's id) reaches A's service.
    let url = cp.url();
    let mut pa = Proxy::start(Proxy::config("pa", &url, &dir.path().join("pa"), &["net"])).await;
    let mut cfg = Proxy::config("pb", &url, &dir.path().join("pb"), &[&net_id]);
    // B's proxy joins with a join token of B's: its certificate, and so
    // its registration, names account B.
    cfg.join_token = Some(crate::harness::join_token(b).await.into());
    let mut pb = Proxy::start(cfg).await;
    wait_for_backend(&pa, "bsvc.net.trellis.internal", "/", "b").await;
    wait_for_backend(&pa, "asvc.net.trellis.internal", "/", "a").await;
    wait_for_backend(&pb, "asvc.net.trellis.internal", "/", "a").await;
    // A proxy association of B's with the shared network puts it in the
    // scope of B's proxies of that group.
    let r = crate::harness::register_proxy(b, json!({"name": "pb2", "group": "bgroup"})).await;
    assert!(r.status.is_success(), "{}", r.text());
    assert_eq!(b.get("/v1/proxies/pb2").await.1["scope"], json!([]));
    b.put(
        "proxy-associations",
        json!({"name": "bgroup-net", "serviceNetwork": net_id, "proxyGroup": "bgroup"}),
    )
    .await;
    let scope =
        trellis_tests::eventually("pb2 gets the shared network", PUSH_WAIT, || async move {
            let (_, v) = b.get("/v1/proxies/pb2").await;
            (v["scope"] == json!(["net"])).then_some(v)
        })
        .await;
    assert!(scope.is_ok(), "{scope:?}");
    // B sees its proxy; A does not, and the other way round.
    assert_eq!(b.get("/v1/proxies/pb").await.0, 200);
    assert_eq!(b.get("/v1/proxies/pa").await.0, 404);
    assert_eq!(a.get("/v1/proxies/pb").await.0, 404);
    // The snapshot names the accounts that may use the network.
    let r = http1_request(pb.admin, "admin", "GET", "/config", &[], Vec::new())
        .await
        .unwrap();
    let snap = r.json().unwrap();
    assert_eq!(
        snap["networks"][0]["accounts"],
        json!([DEFAULT_ACCOUNT, B]),
        "{snap}"
    );

    // Revoke: B's proxy loses the network, A's proxy stops routing to B's
    // service; B's association stays stored; new ones are refused.
    let r = a
        .call("DELETE", &format!("{shares}/{B}"), &Value::Null, &[])
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        a.call("DELETE", &format!("{shares}/{B}"), &Value::Null, &[])
            .await
            .status,
        404
    );
    wait_status(&pb, "asvc.net.trellis.internal", 404).await;
    wait_status(&pa, "bsvc.net.trellis.internal", 404).await;
    assert_eq!(pa.get("asvc.net.trellis.internal", "/").await.status, 200);
    assert_eq!(b.get("/v1/service-associations/bsvc-net").await.0, 200);
    assert_eq!(b.get(&net_url).await.0, 404);
    let r = b
        .call(
            "POST",
            "/v1/service-associations",
            &json!({"name": "late", "serviceNetwork": net_id, "service": "bsvc"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Shared again: B's association is active again.
    assert_eq!(
        a.call("POST", shares, &json!({"account": B}), &[])
            .await
            .status,
        201
    );
    wait_for_backend(&pa, "bsvc.net.trellis.internal", "/", "b").await;

    // The audit log has the shares.
    let (_, log) = a.get("/v1/audit").await;
    let kinds: Vec<_> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "Share")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["create", "delete", "create"], "{log}");

    // The owner deletes the network (its own association first): the
    // share goes with it, B's association stays and names nothing.
    pa.stop().await;
    pb.stop().await;
    assert_eq!(
        a.call(
            "DELETE",
            "/v1/service-associations/asvc-net",
            &Value::Null,
            &[]
        )
        .await
        .status,
        204
    );
    assert_eq!(
        a.call("DELETE", "/v1/service-networks/net", &Value::Null, &[])
            .await
            .status,
        204
    );
    assert_eq!(b.get("/v1/service-networks").await.1["items"], json!([]));
    assert_eq!(b.get("/v1/service-associations/bsvc-net").await.0, 200);
    let net2 = a.put("service-networks", json!({"name": "net"})).await;
    assert_ne!(net2["id"], net_id.as_str());
    assert_eq!(
        a.get(shares).await.1["items"],
        json!([]),
        "no share carried over"
    );
    cp.stop().await;
}
