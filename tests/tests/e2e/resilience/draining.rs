//! Draining: SIGTERM to a real `trellis-proxy` under load fails none of the
//! requests it had accepted and exits 0 within the drain timeout; a target
//! deregistered under load drains (DRAINING, then gone) without failing a
//! request.

use super::{
    CHECK_PATH, HOST, Load, Mesh, configure, describe_failures, fast_checks, forward, no_checks,
    no_probe, no_retries, service, target_group, wait_for_state,
};
use crate::harness::{Control, PUSH_WAIT, wait_in_sync, workspace_bin};
use serde_json::json;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trellis_tests::backend::{BackendStats, ECHO_DELAY_MS_HEADER};
use trellis_tests::{
    EchoBackend, Http1Connection, Http2Connection, free_addr, http1_request, wait_until,
    wait_until_async,
};

/// The drain timeout given to the proxy.
const DRAIN: Duration = Duration::from_secs(5);

/// Kills the process when the test ends without it having exited (a
/// failed assertion must not leave a proxy running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What one request of the SIGTERM load got: status and `Connection:
/// close`, or the client error.
type Answer = Result<(u16, bool), String>;

/// A client looping requests with unique paths (`/load/<id>/<n>`), each
/// held 200 ms by the backend; paths in flight are in `inflight`.
fn spawn_client(
    out: SocketAddr,
    id: String,
    h2: bool,
    stop: Arc<AtomicBool>,
    inflight: Arc<Mutex<HashSet<String>>>,
) -> tokio::task::JoinHandle<Vec<(String, Answer)>> {
    tokio::spawn(async move {
        let mut answers = Vec::new();
        let (mut h1c, mut h2c): (Option<Http1Connection>, Option<Http2Connection>) = (None, None);
        let mut seq = 0;
        while !stop.load(Ordering::SeqCst) {
            let closed = if h2 {
                h2c.as_ref().is_none_or(|c| c.is_closed())
            } else {
                h1c.as_ref().is_none_or(|c| c.is_closed())
            };
            if closed {
                let ok = if h2 {
                    h2c = Http2Connection::connect(out).await.ok();
                    h2c.is_some()
                } else {
                    h1c = Http1Connection::connect(out).await.ok();
                    h1c.is_some()
                };
                if !ok {
                    // Refused: the proxy stopped accepting.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
            let path = format!("/load/{id}/{seq}");
            seq += 1;
            inflight.lock().unwrap().insert(path.clone());
            let headers = [(ECHO_DELAY_MS_HEADER, "200")];
            let r = match (&mut h1c, &h2c) {
                (Some(c), _) if !h2 => c.request(HOST, "GET", &path, &headers, Vec::new()).await,
                (_, Some(c)) => c.request(HOST, "GET", &path, &headers, Vec::new()).await,
                _ => unreachable!("connected above"),
            };
            inflight.lock().unwrap().remove(&path);
            let answer = match r {
                Ok(r) => Ok((
                    r.status.as_u16(),
                    r.header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close")),
                )),
                Err(e) => {
                    (h1c, h2c) = (None, None);
                    Err(format!("{e:#}"))
                }
            };
            answers.push((path, answer));
        }
        answers
    })
}

#[tokio::test]
async fn sigterm_under_load_fails_no_accepted_request_and_exits_0_within_the_drain_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let a = EchoBackend::start_named("a").await.unwrap();
    configure(
        api,
        &[target_group(
            "a",
            &[&a],
            json!({"healthCheck": no_checks()}),
        )],
        service(
            json!({"name": "http", "defaultAction": forward("a"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    let (out, admin) = (free_addr(), free_addr());
    let log_path = dir.path().join("proxy.log");
    let token = crate::harness::join_token_for(&cp.url()).await.unwrap();
    let child = Command::new(workspace_bin("trellis-proxy"))
        .env("TRELLIS_JOIN_TOKEN", &token)
        .args(["--name", "p1", "--control-url", &cp.url()])
        .args(["--outbound-listen", &out.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("p1"))
        .args(["--service-network", "net"])
        .args(["--drain-timeout", "5s"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_in_sync(api, "p1").await;
    wait_until_async("the proxy serves", PUSH_WAIT, || async move {
        http1_request(out, HOST, "GET", "/", &[], Vec::new())
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await
    .unwrap();

    // Load: four HTTP/1.1 keep-alive clients and one h2c client, and one
    // long request (1.5 s at the backend) that keeps the drain going.
    let stop = Arc::new(AtomicBool::new(false));
    let inflight = Arc::new(Mutex::new(HashSet::new()));
    let mut clients = Vec::new();
    for i in 0..5 {
        let h2 = i == 4;
        let id = if h2 {
            "h2".to_string()
        } else {
            format!("h1-{i}")
        };
        clients.push(spawn_client(out, id, h2, stop.clone(), inflight.clone()));
    }
    let long = tokio::spawn(async move {
        http1_request(
            out,
            HOST,
            "GET",
            "/long",
            &[(ECHO_DELAY_MS_HEADER, "1500")],
            Vec::new(),
        )
        .await
    });
    let stats: Arc<BackendStats> = a.request_counter();
    let accepted_now = {
        let (inflight, stats) = (inflight.clone(), stats.clone());
        move || -> Vec<String> {
            inflight
                .lock()
                .unwrap()
                .iter()
                .filter(|p| stats.requests_to(p) == 1)
                .cloned()
                .collect()
        }
    };
    wait_until(
        "the long request and three others at the backend",
        PUSH_WAIT,
        || stats.requests_to("/long") == 1 && accepted_now().len() >= 3,
    )
    .await
    .unwrap();

    // Requests the backend has received are accepted for sure.
    let accepted = accepted_now();
    let signalled = Instant::now();
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    // Draining: not ready any more (the admin listener stays up until the
    // drain is over), and a new request goes nowhere.
    let mut last_ready = None;
    loop {
        match http1_request(admin, "admin", "GET", "/ready", &[], Vec::new()).await {
            Ok(r) if r.status == 503 => break,
            Ok(r) => last_ready = Some(r.status.as_u16()),
            Err(e) => panic!(
                "/ready answered {last_ready:?} during the drain, then the admin listener closed ({e:#}); log:\n{}",
                log()
            ),
        }
        assert!(
            signalled.elapsed() < PUSH_WAIT,
            "/ready still {last_ready:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = http1_request(out, HOST, "GET", "/after", &[], Vec::new()).await;
    assert!(
        after.as_ref().map_or(true, |r| r.status != 200),
        "a request after SIGTERM was served: {after:?}"
    );

    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < DRAIN + Duration::from_secs(10),
            "still running {:?} after SIGTERM; log:\n{}",
            signalled.elapsed(),
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", log());
    assert!(
        took < DRAIN + Duration::from_secs(5),
        "exited {took:?} after SIGTERM, drain timeout {DRAIN:?}"
    );

    stop.store(true, Ordering::SeqCst);
    let mut answers = std::collections::HashMap::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    let long = long.await.unwrap().expect("the long request was answered");
    assert_eq!(long.status, 200, "the long request: {}", long.text());
    for path in &accepted {
        let answer = answers.get(path).cloned();
        match answer {
            Some(Ok((200, close))) => assert!(
                close || path.starts_with("/load/h2"),
                "{path}: an HTTP/1.1 answer during the drain says Connection: close"
            ),
            other => panic!(
                "{path}, accepted before SIGTERM, got {other:?}; log:\n{}",
                log()
            ),
        }
    }
    assert_eq!(a.requests_to("/after"), 0, "nothing new reached the target");
    cp.stop().await;
}

#[tokio::test]
async fn a_target_deregistered_under_load_drains_without_failing_a_request() {
    let a = EchoBackend::start_named("a").await.unwrap();
    let b = EchoBackend::start_named("b").await.unwrap();
    let settings = json!({"healthCheck": fast_checks(), "deregistrationDelaySeconds": 2});
    let mesh = Mesh::start(
        &[target_group("pool", &[&a, &b], settings.clone())],
        // No retries: a request cut on the draining target would show.
        service(
            json!({"name": "http", "defaultAction": forward("pool"), "retryPolicy": no_retries()}),
        ),
    )
    .await;
    let api = mesh.api;
    // Held 100 ms at the backend, so requests are in flight on b when it
    // is deregistered.
    let load = Load::start(
        mesh.out(),
        "/load",
        &[(ECHO_DELAY_MS_HEADER, "100")],
        4,
        no_probe(),
    );
    wait_until("both targets serve", PUSH_WAIT, || {
        a.requests_to("/load") >= 5 && b.requests_to("/load") >= 5
    })
    .await
    .unwrap();

    let b_target = b.addr().to_string();
    api.put("target-groups", target_group("pool", &[&a], settings))
        .await;
    wait_for_state(api, "pool", &b_target, "DRAINING").await;
    wait_in_sync(api, "p1").await;
    // Requests picked before the change finish (each takes 100 ms): after
    // that b gets no new request.
    load.wait_for_more_ok(40).await;
    let settled = b.requests_to("/load");
    load.wait_for_more_ok(100).await;
    assert_eq!(
        b.requests_to("/load"),
        settled,
        "a draining target gets no new request"
    );
    // Removed after the deregistration delay.
    let what = format!("{b_target} gone from the REST API");
    trellis_tests::wait_until_async(&what, PUSH_WAIT, || {
        let b_target = b_target.clone();
        async move {
            super::target_states(api, "pool")
                .await
                .is_ok_and(|ts| ts.iter().all(|t| t.target != b_target))
        }
    })
    .await
    .unwrap();
    let outcomes = load.finish().await;
    assert!(
        outcomes.iter().all(|o| o.ok()),
        "deregistration failed requests: {}",
        describe_failures(&outcomes)
    );
    // b still answers health checks: only deregistration took it out.
    assert!(b.requests_to(CHECK_PATH) > 0);
    mesh.stop().await;
}
