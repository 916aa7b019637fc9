//! Passive outlier ejection: a backend answering 500 is ejected after the
//! configured consecutive 5xx and gets nothing more; when every target is
//! ejected, traffic fails open.

use super::{
    Mesh, REASON, admin_group, admin_target, admin_targets, forward, no_checks, no_retries,
    sequential, service, target_group,
};
use serde_json::json;
use std::time::{Duration, Instant};
use trellis_tests::EchoBackend;

#[tokio::test]
async fn a_backend_answering_500_is_ejected_and_gets_no_more_requests() {
    let bad = EchoBackend::new("bad").status(500).start().await.unwrap();
    let a = EchoBackend::start_named("a").await.unwrap();
    let b = EchoBackend::start_named("b").await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "pool",
            &[&bad, &a, &b],
            json!({
                "healthCheck": no_checks(),
                "outlierDetection": {"consecutive5xx": 3, "baseEjectionMs": 60000, "maxEjectionPercent": 50}
            }),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("pool"), "retryPolicy": no_retries()}),
        ),
    )
    .await;

    // One request at a time: the third 500 ejects before the next pick.
    let rs = sequential(&mesh, "/x", &[], 60).await;
    let errors: Vec<_> = rs.iter().filter(|r| r.status != 200).collect();
    for r in &errors {
        assert_eq!(
            (r.status.as_u16(), r.header("x-backend"), r.header(REASON)),
            (500, Some("bad"), None),
            "only the bad backend's own 500s: {}",
            r.text()
        );
    }
    assert_eq!(
        bad.requests(),
        3,
        "ejected after exactly 3 consecutive 5xx (consecutive5xx: 3)"
    );
    assert_eq!(errors.len(), 3);
    let view = admin_targets(&mesh).await;
    let t = admin_target(&view, "pool", bad.port());
    assert_eq!(
        (&t["ejection"]["ejected"], &t["state"]),
        (&json!(true), &json!("UNHEALTHY")),
        "{t}"
    );
    assert!(
        t["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Ejected")),
        "{t}"
    );

    // Its counter stays still; the others serve everything.
    let rs = sequential(&mesh, "/y", &[], 60).await;
    assert!(rs.iter().all(|r| r.status == 200));
    assert_eq!(bad.requests(), 3, "an ejected target gets nothing");
    assert_eq!(a.requests_to("/y") + b.requests_to("/y"), 60);
    mesh.stop().await;
}

#[tokio::test]
async fn when_every_target_is_ejected_traffic_still_reaches_them() {
    let x = EchoBackend::new("x").status(500).start().await.unwrap();
    let y = EchoBackend::new("y").status(500).start().await.unwrap();
    let mesh = Mesh::start(
        &[target_group(
            "pool",
            &[&x, &y],
            json!({
                "healthCheck": no_checks(),
                "outlierDetection": {"consecutive5xx": 2, "baseEjectionMs": 60000, "maxEjectionPercent": 100}
            }),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("pool"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    let rs = sequential(&mesh, "/x", &[], 40).await;
    for r in &rs {
        assert_eq!(
            (r.status.as_u16(), r.header(REASON)),
            (500, None),
            "fail-open: the targets' own answers, not a proxy error: {}",
            r.text()
        );
    }
    assert_eq!(x.requests() + y.requests(), 40);
    // They were ejected, and the group fails open.
    let view = admin_targets(&mesh).await;
    assert_eq!(admin_group(&view, "pool")["failingOpen"], true, "{view}");
    for port in [x.port(), y.port()] {
        let t = admin_target(&view, "pool", port);
        assert!(t["ejection"]["total"].as_u64() > Some(0), "{t}");
    }
    assert!(
        x.requests() > 5 && y.requests() > 5,
        "both keep getting traffic after their ejection: x {} y {}",
        x.requests(),
        y.requests()
    );
    mesh.stop().await;
}

#[tokio::test]
async fn each_ejection_of_a_flapping_target_lasts_longer() {
    // A target that fails every request it gets: ejected by its first 500,
    // back after the ejection time, ejected again by its next request.
    let bad = EchoBackend::new("bad").status(500).start().await.unwrap();
    let good = EchoBackend::start_named("good").await.unwrap();
    let base_ms: u64 = 300;
    let mesh = Mesh::start(
        &[target_group(
            "pool",
            &[&bad, &good],
            json!({
                "healthCheck": no_checks(),
                "outlierDetection": {"consecutive5xx": 1, "baseEjectionMs": base_ms,
                                     "maxEjectionMs": 60_000, "maxEjectionPercent": 50}
            }),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("pool"), "retryPolicy": no_retries()}),
        ),
    )
    .await;

    // One client, one request at a time; note when each of the bad
    // target's 500s arrived. The n-th ejection starts just before the n-th
    // 500 reaches the client and lasts base × n, so the next 500 cannot
    // come sooner (minus the moment between the proxy's verdict and the
    // client reading the answer: a tenth of the time is left for it).
    let hits = 5;
    let mut seen = Vec::new();
    let mut conn = trellis_tests::Http1Connection::connect(mesh.out())
        .await
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    while seen.len() < hits {
        assert!(
            Instant::now() < give_up,
            "the bad target came back only {} times: {seen:?}",
            seen.len()
        );
        if conn.is_closed() {
            conn = trellis_tests::Http1Connection::connect(mesh.out())
                .await
                .unwrap();
        }
        let r = conn
            .request(super::HOST, "GET", "/x", &[], Vec::new())
            .await
            .unwrap();
        match r.header("x-backend") {
            Some("bad") => seen.push(Instant::now()),
            Some("good") => assert_eq!(r.status, 200),
            other => panic!("answered by {other:?}: {}", r.text()),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let n = i as u64 + 1;
        let ejection = Duration::from_millis(base_ms * n);
        assert!(
            *gap >= ejection.mul_f64(0.9),
            "ejection {n} should last {ejection:?} (base × {n}), but the target was back after {gap:?}; all gaps: {gaps:?}"
        );
    }
    // The proxy's view agrees: the target has been ejected `hits` times and
    // the multiplier grew with each.
    let view = admin_targets(&mesh).await;
    let t = admin_target(&view, "pool", bad.port());
    assert_eq!(
        (
            &t["ejection"]["ejected"],
            &t["ejection"]["ejections"],
            &t["ejection"]["total"]
        ),
        (&json!(true), &json!(hits), &json!(hits)),
        "{t}"
    );
    assert_eq!(bad.requests(), hits as u64);
    mesh.stop().await;
}
