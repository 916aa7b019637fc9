//! Health checkers against real sockets: a tiny hyper backend on
//! 127.0.0.1:0 whose answers the tests change. Waits are bounded; nothing
//! asserts how fast anything happens.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::group::tests::group;
use super::{Balancer, HEALTH_CHECK_USER_AGENT, TargetStatus};
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use trellis_config::{
    Algorithm, FastHealthCheck, ProtocolVersion, Snapshot, SnapshotTargetGroup, TargetState,
};

/// Longest any wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// One request a backend saw.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    path: String,
    user_agent: Option<String>,
    host: Option<String>,
    target: Option<String>,
}

/// A backend whose status, delay and `x-trellis-error` the test sets.
struct Backend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    proxy_error: Arc<Mutex<Option<&'static str>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answers wait while this is `false`.
    gate: watch::Sender<bool>,
    task: tokio::task::AbortHandle,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

impl Backend {
    async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let proxy_error: Arc<Mutex<Option<&'static str>>> = Arc::new(Mutex::new(None));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (gate, gate_rx) = watch::channel(true);
        let (s, d, p, v) = (
            Arc::clone(&status),
            Arc::clone(&delay_ms),
            Arc::clone(&proxy_error),
            Arc::clone(&seen),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, d, p, v, g) = (
                    Arc::clone(&s),
                    Arc::clone(&d),
                    Arc::clone(&p),
                    Arc::clone(&v),
                    gate_rx.clone(),
                );
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, d, p, v, mut g) = (
                            Arc::clone(&s),
                            Arc::clone(&d),
                            Arc::clone(&p),
                            Arc::clone(&v),
                            g.clone(),
                        );
                        async move {
                            v.lock().unwrap().push(Seen {
                                version: req.version(),
                                path: req.uri().path().to_string(),
                                user_agent: header(&req, "user-agent"),
                                host: header(&req, "host"),
                                target: header(&req, "x-trellis-target"),
                            });
                            let _ = g.wait_for(|open| *open).await;
                            let delay = d.load(Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *resp.status_mut() =
                                http::StatusCode::from_u16(s.load(Ordering::Relaxed)).unwrap();
                            if let Some(code) = *p.lock().unwrap() {
                                resp.headers_mut()
                                    .insert("x-trellis-error", code.parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            status,
            delay_ms,
            proxy_error,
            seen,
            gate,
            task: task.abort_handle(),
        }
    }

    fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A group "tg" of loopback targets on `ports`, checked every 50 ms with
/// a generous timeout (a loaded machine must not fail checks).
fn checked_group(ports: &[u16]) -> SnapshotTargetGroup {
    let mut g = group("tg", Algorithm::RoundRobin, &[]);
    for &port in ports {
        let mut t = group("x", Algorithm::RoundRobin, &["127.0.0.1"]).targets[0].clone();
        t.port = port;
        g.targets.push(t);
    }
    g.health_check.fast = Some(FastHealthCheck {
        interval_ms: 50,
        timeout_ms: 2_000,
    });
    g.health_check.healthy_threshold = 2;
    g.health_check.unhealthy_threshold = 2;
    g
}

fn snapshot(groups: Vec<SnapshotTargetGroup>) -> Snapshot {
    Snapshot {
        target_groups: groups,
        ..Default::default()
    }
}

fn target(b: &Balancer, port: u16) -> TargetStatus {
    b.status()
        .into_iter()
        .flat_map(|g| g.targets)
        .find(|t| t.port == port)
        .unwrap()
}

/// Wait (bounded) until `port`'s target is in `state`.
async fn wait_state(b: &Balancer, port: u16, state: TargetState) -> TargetStatus {
    let mut changes = b.subscribe();
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            let t = target(b, port);
            if t.state == state {
                return t;
            }
            // Wake on a change, or poll now and then anyway.
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    })
    .await;
    match waited {
        Ok(t) => t,
        Err(_) => panic!("{port} never became {state:?}: {:?}", target(b, port)),
    }
}

/// A loopback port with nothing listening.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_new_target_is_initial_until_one_check_passes() {
    let backend = Backend::start().await;
    backend.gate.send_replace(false);
    let port = backend.addr.port();
    let mut spec = checked_group(&[port]);
    spec.health_check.healthy_threshold = 10;
    let b = Balancer::new();
    b.update(&snapshot(vec![spec]));
    assert_eq!(b.health_checkers(), 1);
    // The backend holds its answers: nothing has passed yet.
    let t = target(&b, port);
    assert_eq!(t.state, TargetState::Initial, "{t:?}");
    assert!(!t.eligible || b.group("tg").unwrap().failing_open());
    backend.gate.send_replace(true);
    let t = wait_state(&b, port, TargetState::Healthy).await;
    // One pass was enough, not healthyThreshold (10) of them.
    assert!(t.health_check.consecutive_passes < 10, "{t:?}");
    assert!(t.eligible && t.reason.is_none());
    assert!(!b.group("tg").unwrap().failing_open());

    let seen = backend.seen();
    let first = &seen[0];
    assert_eq!(first.version, Version::HTTP_11);
    assert_eq!(first.path, "/");
    assert_eq!(first.user_agent.as_deref(), Some(HEALTH_CHECK_USER_AGENT));
    assert_eq!(first.host.as_deref(), Some(&*format!("127.0.0.1:{port}")));
    assert_eq!(first.target, None);
}

#[tokio::test]
async fn failing_checks_take_a_target_out_and_passing_ones_bring_it_back() {
    let (bad, good) = (Backend::start().await, Backend::start().await);
    let (p_bad, p_good) = (bad.addr.port(), good.addr.port());
    let b = Balancer::new();
    b.update(&snapshot(vec![checked_group(&[p_bad, p_good])]));
    wait_state(&b, p_bad, TargetState::Healthy).await;
    wait_state(&b, p_good, TargetState::Healthy).await;

    bad.set_status(500);
    let t = wait_state(&b, p_bad, TargetState::Unhealthy).await;
    assert_eq!(
        t.reason.as_deref(),
        Some("HealthCheckFailed: status 500 (matcher 200)")
    );
    assert!(!t.eligible);
    let g = b.group("tg").unwrap();
    for _ in 0..20 {
        assert_eq!(g.pick().unwrap().endpoint.target.port, p_good);
    }
    let report = b.health_report();
    let entry = report.targets.iter().find(|t| t.port == p_bad).unwrap();
    assert_eq!(entry.state, TargetState::Unhealthy);
    assert_eq!(entry.target_group, "tg");

    // Both down: fail open to both.
    good.set_status(503);
    wait_state(&b, p_good, TargetState::Unhealthy).await;
    assert!(g.failing_open());
    let status = b.status();
    assert!(status[0].failing_open);
    assert!(status[0].targets.iter().all(|t| t.eligible));

    bad.set_status(200);
    good.set_status(200);
    wait_state(&b, p_bad, TargetState::Healthy).await;
    wait_state(&b, p_good, TargetState::Healthy).await;
    assert!(!g.failing_open());
}

#[tokio::test]
async fn timeouts_refusals_and_the_matcher() {
    let slow = Backend::start().await;
    slow.delay_ms.store(10_000, Ordering::Relaxed);
    let teapot = Backend::start().await;
    teapot.set_status(418);
    let refused = closed_port().await;
    let mut spec = checked_group(&[slow.addr.port(), refused, teapot.addr.port()]);
    spec.health_check.fast = Some(FastHealthCheck {
        interval_ms: 50,
        timeout_ms: 100,
    });
    spec.health_check.matcher = "200-299,418".into();
    let b = Balancer::new();
    b.update(&snapshot(vec![spec]));

    let t = wait_state(&b, slow.addr.port(), TargetState::Unhealthy).await;
    let reason = t.reason.unwrap();
    assert!(reason.starts_with("HealthCheckTimeout: "), "{reason}");
    let t = wait_state(&b, refused, TargetState::Unhealthy).await;
    let reason = t.reason.unwrap();
    assert!(
        reason.starts_with(&format!(
            "HealthCheckFailed: cannot connect to 127.0.0.1:{refused}"
        )),
        "{reason}"
    );
    wait_state(&b, teapot.addr.port(), TargetState::Healthy).await;
}

#[tokio::test]
async fn h2c_checks_on_the_check_path_and_port() {
    let backend = Backend::start().await;
    let mut spec = checked_group(&[closed_port().await]);
    let data_port = spec.targets[0].port;
    spec.health_check.protocol_version = Some(ProtocolVersion::Http2);
    spec.health_check.path = "/healthz".into();
    spec.health_check.port = Some(backend.addr.port());
    let b = Balancer::new();
    b.update(&snapshot(vec![spec]));
    wait_state(&b, data_port, TargetState::Healthy).await;
    let seen = backend.seen();
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(seen[0].path, "/healthz");
    assert_eq!(seen[0].user_agent.as_deref(), Some(HEALTH_CHECK_USER_AGENT));
}

#[tokio::test]
async fn fronted_targets_are_checked_through_their_proxy() {
    // The "fronting proxy" is a backend; the target address is never dialled.
    let front = Backend::start().await;
    let mut spec = checked_group(&[9000]);
    spec.targets[0].address = "10.1.2.3".into();
    spec.targets[0].proxy = Some("edge".into());
    spec.targets[0].via = Some(front.addr.to_string());
    let b = Balancer::new();
    b.update(&snapshot(vec![spec]));
    wait_state(&b, 9000, TargetState::Healthy).await;
    let seen = front.seen();
    assert_eq!(seen[0].target.as_deref(), Some("10.1.2.3:9000"));
    assert_eq!(seen[0].host.as_deref(), Some("10.1.2.3:9000"));

    // The fronting proxy cannot reach the target: its own 502 fails the
    // check, with its reason code.
    front.set_status(502);
    *front.proxy_error.lock().unwrap() = Some("upstream_connect_failed");
    let t = wait_state(&b, 9000, TargetState::Unhealthy).await;
    let reason = t.reason.unwrap();
    assert!(
        reason.contains("fronting proxy") && reason.ends_with("502 upstream_connect_failed"),
        "{reason}"
    );
}

#[tokio::test]
async fn checkers_and_health_survive_pushes() {
    let (one, two) = (Backend::start().await, Backend::start().await);
    let (p1, p2) = (one.addr.port(), two.addr.port());
    let b = Balancer::new();
    let mut spec = checked_group(&[p1, p2]);
    b.update(&snapshot(vec![spec.clone()]));
    wait_state(&b, p1, TargetState::Healthy).await;
    wait_state(&b, p2, TargetState::Healthy).await;
    let before = target(&b, p1).health_check.checks;

    // Same push: the same checkers go on (their counts keep growing).
    b.update(&snapshot(vec![spec.clone()]));
    assert_eq!(b.health_checkers(), 2);
    assert_eq!(target(&b, p1).state, TargetState::Healthy);

    // Changed settings: taken without a reset (still HEALTHY, count kept),
    // and used (the new path).
    spec.health_check.path = "/ready".into();
    spec.name = "renamed".into();
    b.update(&snapshot(vec![spec.clone()]));
    assert_eq!(b.health_checkers(), 2);
    let t = target(&b, p1);
    assert_eq!(t.state, TargetState::Healthy);
    assert!(t.health_check.checks >= before, "{t:?}");
    tokio::time::timeout(WAIT, async {
        while !one.seen().iter().any(|s| s.path == "/ready") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // Draining: no longer checked, reported DRAINING, never picked.
    spec.targets[1].draining = true;
    b.update(&snapshot(vec![spec.clone()]));
    assert_eq!(b.health_checkers(), 1);
    let t = target(&b, p2);
    assert_eq!(t.state, TargetState::Draining);
    assert_eq!(t.reason.as_deref(), Some("DeregistrationInProgress"));
    let g = b.group("tg").unwrap();
    assert!((0..10).all(|_| g.pick().unwrap().endpoint.target.port == p1));

    // Removed: its checker stops.
    spec.targets.pop();
    b.update(&snapshot(vec![spec.clone()]));
    assert_eq!(b.health_checkers(), 1);
    let hits = two.seen().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(two.seen().len(), hits, "a removed target is not checked");

    // Checks disabled: UNAVAILABLE, eligible.
    spec.health_check.enabled = false;
    b.update(&snapshot(vec![spec.clone()]));
    assert_eq!(b.health_checkers(), 0);
    let t = target(&b, p1);
    assert_eq!(t.state, TargetState::Unavailable);
    assert_eq!(t.reason.as_deref(), Some("HealthCheckDisabled"));
    assert!(t.eligible);

    // Enabled again: a new check must pass first.
    spec.health_check.enabled = true;
    b.update(&snapshot(vec![spec]));
    assert_eq!(b.health_checkers(), 1);
    wait_state(&b, p1, TargetState::Healthy).await;

    b.stop_health_checks();
    assert_eq!(b.health_checkers(), 0);
    assert_eq!(target(&b, p1).state, TargetState::Unavailable);
}
