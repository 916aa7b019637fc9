//! Health reporting: the proxy tells the control plane what its health
//! checks and outlier detection see, so the REST API can show each
//! target's state aggregated over the proxies.
//!
//! `POST {control}/v1/proxies/{name}/health` with a
//! [`trellis_config::HealthReport`] (every target of every target group in
//! the snapshot, with state and reason; the full view, not a delta, so a
//! lost report is repaired by the next):
//!
//! - when the reporter starts, and [`HEALTH_REPORT_DEBOUNCE`] after a
//!   target's health or ejection changes or a push changes the targets
//!   (changes within that time go in one report), when the report differs
//!   from the last one delivered;
//! - when an ejection ends (nothing else signals it);
//! - every [`HEALTH_REPORT_INTERVAL`] in any case.
//!
//! Under failure: a failed report is logged at debug level (a control
//! plane without the endpoint answers 404; one that is down does not
//! answer) and sent again after a capped backoff, or with the next
//! change, whichever comes first. Reporting never affects traffic.

use super::backoff::Backoff;
use super::control::ControlClient;
use crate::balance::Balancer;
use crate::run::signalled;
use crate::state::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_config::HealthReport;

/// Changes closer together than this go in one report.
pub const HEALTH_REPORT_DEBOUNCE: Duration = Duration::from_millis(100);

/// A report is sent at least this often, changed or not.
pub const HEALTH_REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// First retry of a failed report; doubles up to [`HEALTH_REPORT_INTERVAL`].
pub const HEALTH_REPORT_RETRY: Duration = Duration::from_secs(1);

/// Slack after an ejection's end before reporting it, so the report
/// surely sees it over.
const RETURN_SLACK: Duration = Duration::from_millis(5);

/// Sleep until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Report until `shutdown`.
pub(crate) async fn report(
    shared: Arc<Shared>,
    control: ControlClient,
    shutdown: watch::Receiver<bool>,
) {
    let path = format!("/v1/proxies/{}/health", shared.name);
    let has_snapshot = || shared.current_version().is_some();
    report_loop(&shared.balancer, has_snapshot, &control, &path, shutdown).await;
}

/// The reporter's loop, apart from [`Shared`] for tests.
async fn report_loop(
    balancer: &Balancer,
    has_snapshot: impl Fn() -> bool,
    control: &ControlClient,
    path: &str,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = balancer.subscribe();
    // Report what there is at once: changes before the subscription
    // (a snapshot loaded from disk) signalled nobody.
    changes.mark_changed();
    let mut retry = Backoff::new(HEALTH_REPORT_RETRY, HEALTH_REPORT_INTERVAL);
    let mut delivered: Option<HealthReport> = None;
    let mut periodic = Instant::now() + HEALTH_REPORT_INTERVAL;
    let mut retry_at: Option<Instant> = None;
    loop {
        let returns = balancer
            .next_return()
            .map(|d| Instant::now() + d + RETURN_SLACK);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(HEALTH_REPORT_DEBOUNCE) => {}
                    _ = signalled(&mut shutdown) => return,
                }
                changes.borrow_and_update();
            }
            _ = tokio::time::sleep_until(periodic) => {}
            _ = sleep_until(returns) => {}
            _ = sleep_until(retry_at) => {}
            _ = signalled(&mut shutdown) => return,
        }
        let due = Instant::now() >= periodic;
        let report = balancer.health_report();
        if !due && delivered.as_ref() == Some(&report) {
            continue;
        }
        if due {
            periodic = Instant::now() + HEALTH_REPORT_INTERVAL;
        }
        if !has_snapshot() {
            // Nothing to say before the first snapshot.
            retry_at = None;
            continue;
        }
        let sent = tokio::select! {
            sent = control.post_json(path, &report) => sent,
            _ = signalled(&mut shutdown) => return,
        };
        match sent {
            Ok(()) => {
                tracing::trace!(targets = report.targets.len(), "health report sent");
                delivered = Some(report);
                retry.reset();
                retry_at = None;
            }
            Err(error) => {
                let delay = retry.next_delay();
                tracing::debug!(%error, retry_in = ?delay, "cannot send the health report");
                delivered = None;
                retry_at = Some(Instant::now() + delay);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use trellis_config::{
        Algorithm, OutlierDetection, ProtocolVersion, Snapshot, SnapshotTarget,
        SnapshotTargetGroup, TargetProtocol, TargetState,
    };

    /// A control plane that refuses the first `refuse` reports (404, as
    /// one without the endpoint) and records the others.
    struct FakeControl {
        base: String,
        posts: Arc<AtomicUsize>,
        reports: Arc<Mutex<Vec<(String, HealthReport)>>>,
        task: tokio::task::AbortHandle,
    }

    impl Drop for FakeControl {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeControl {
        async fn start(refuse: usize) -> FakeControl {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let posts = Arc::new(AtomicUsize::new(0));
            let reports = Arc::new(Mutex::new(Vec::new()));
            let (p, r) = (Arc::clone(&posts), Arc::clone(&reports));
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (p, r) = (Arc::clone(&p), Arc::clone(&r));
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let (p, r) = (Arc::clone(&p), Arc::clone(&r));
                            async move {
                                let path = req.uri().path().to_string();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let n = p.fetch_add(1, Ordering::SeqCst);
                                let status = if n < refuse {
                                    StatusCode::NOT_FOUND
                                } else {
                                    let report = serde_json::from_slice(&body).unwrap();
                                    r.lock().unwrap().push((path, report));
                                    StatusCode::NO_CONTENT
                                };
                                let mut resp = Response::new(Full::new(Bytes::new()));
                                *resp.status_mut() = status;
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            FakeControl {
                base,
                posts,
                reports,
                task: task.abort_handle(),
            }
        }

        fn last(&self) -> Option<(String, HealthReport)> {
            self.reports.lock().unwrap().last().cloned()
        }
    }

    /// Two targets; two consecutive 5xx eject one for `ejection_ms`.
    fn group(ejection_ms: u32) -> SnapshotTargetGroup {
        let target = |address: &str| SnapshotTarget {
            address: address.into(),
            port: 8080,
            proxy: None,
            via: None,
            draining: false,
        };
        SnapshotTargetGroup {
            id: "tg-1".into(),
            name: "pool".into(),
            account: "000000000000".into(),
            protocol: TargetProtocol::Http,
            protocol_version: ProtocolVersion::Http1,
            port: 8080,
            algorithm: Algorithm::RoundRobin,
            health_check: Default::default(),
            targets: vec![target("10.0.0.1"), target("10.0.0.2")],
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: 2,
                base_ejection_ms: ejection_ms,
                max_ejection_percent: 50,
                ..Default::default()
            }),
            circuit_breaker: Default::default(),
            connection: Default::default(),
        }
    }

    /// Wait (bounded) for a report that satisfies `f`.
    async fn wait_report(cp: &FakeControl, what: &str, f: impl Fn(&HealthReport) -> bool) {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if cp.last().is_some_and(|(_, r)| f(&r)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "no report with {what}: {:?}", cp.last());
    }

    fn state_of(r: &HealthReport, address: &str) -> Option<(TargetState, Option<String>)> {
        r.targets
            .iter()
            .find(|t| t.address == address)
            .map(|t| (t.state, t.reason.clone()))
    }

    /// Start a reporter for `balancer` to `cp`; stop it with the sender.
    fn reporter(
        balancer: &Arc<Balancer>,
        cp: &FakeControl,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (stop, stopped) = watch::channel(false);
        let (b, base) = (Arc::clone(balancer), cp.base.clone());
        let task = tokio::spawn(async move {
            let control = ControlClient::new(&base);
            report_loop(&b, || true, &control, "/v1/proxies/p1/health", stopped).await;
        });
        (stop, task)
    }

    /// Load `group` and eject one of its targets; returns its address.
    fn eject_one(balancer: &Balancer, group: SnapshotTargetGroup) -> String {
        balancer.update(&Snapshot {
            target_groups: vec![group],
            ..Default::default()
        });
        let g = balancer.group("tg-1").unwrap();
        let guard = g.pick().unwrap();
        guard.record(crate::balance::Outcome::Status(503));
        guard.record(crate::balance::Outcome::Status(503));
        guard.endpoint.target.address.clone()
    }

    async fn stop(stop: watch::Sender<bool>, task: tokio::task::JoinHandle<()>) {
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn changes_are_reported_and_a_refused_report_is_retried() {
        let cp = FakeControl::start(1).await;
        let balancer = Arc::new(Balancer::without_health_checks());
        let (tx, task) = reporter(&balancer, &cp);
        let ejected = eject_one(&balancer, group(600_000));
        wait_report(&cp, "the ejection", |r| {
            state_of(r, &ejected)
                == Some((
                    TargetState::Unhealthy,
                    Some("Ejected: 2 consecutive 5xx".into()),
                ))
        })
        .await;
        assert!(
            cp.posts.load(Ordering::SeqCst) >= 2,
            "the refused report was retried"
        );
        let (path, report) = cp.last().unwrap();
        assert_eq!(path, "/v1/proxies/p1/health");
        assert_eq!(report.targets.len(), 2);
        assert!(report.targets.iter().all(|t| t.target_group == "tg-1"));
        stop(tx, task).await;
    }

    #[tokio::test]
    async fn the_end_of_an_ejection_is_reported_without_any_pick() {
        let cp = FakeControl::start(0).await;
        let balancer = Arc::new(Balancer::without_health_checks());
        let (tx, task) = reporter(&balancer, &cp);
        let ejected = eject_one(&balancer, group(1_000));
        wait_report(&cp, "the ejection", |r| {
            state_of(r, &ejected).is_some_and(|(s, _)| s == TargetState::Unhealthy)
        })
        .await;
        // Within the wait (shorter than the periodic report), with no pick
        // and no other change.
        wait_report(&cp, "the return", |r| {
            state_of(r, &ejected).is_some_and(|(s, _)| s == TargetState::Unavailable)
        })
        .await;
        stop(tx, task).await;
    }
}
