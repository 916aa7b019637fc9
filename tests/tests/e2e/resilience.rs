//! Resilience (issue 4) end to end: health checks, outlier ejection,
//! circuit breakers, retries, timeouts, rate limits and draining, each
//! through real sockets with a real control plane, a real proxy and
//! backends that misbehave on purpose.
//!
//! Time is kept out of the assertions: a health-check "interval" is
//! counted in checks a healthy backend received, "immediately" means
//! "before the requests holding the limit finished", and the few wall-clock
//! bounds are generous upper bounds against hangs (or lower bounds that a
//! correct proxy meets by construction, such as "not answered before the
//! timeout").
//!
//! Shared here: [`Mesh`] (control plane + configuration + proxy),
//! [`target_group`], [`Load`] (clients looping through the proxy) and
//! [`target_states`] (the REST view of a group's target health).

mod breaker;
mod connections;
mod draining;
mod health;
mod outlier;
mod rate_limit;
mod retries;
mod runtime_state;
mod timeouts;

use crate::harness::{Api, Control, PUSH_WAIT, Proxy, backend_of, wait_in_sync};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use trellis_tests::{BackendHandle, Http1Connection, HttpResponse};

/// The host of service `svc` in network `net`.
pub const HOST: &str = "svc.net.trellis.internal";

/// The proxy's reason header.
pub const REASON: &str = "x-trellis-error";

/// Health-check interval of the fast checks the tests use.
pub const CHECK_INTERVAL_MS: u64 = 200;

/// Path of the health checks in these tests, so a backend's counter for it
/// counts checks and nothing else.
pub const CHECK_PATH: &str = "/health";

/// Fast active health checks on [`CHECK_PATH`]: every
/// [`CHECK_INTERVAL_MS`], 2 passes to become healthy, 2 failures to become
/// unhealthy.
pub fn fast_checks() -> Value {
    json!({
        "path": CHECK_PATH,
        "fast": {"intervalMs": CHECK_INTERVAL_MS, "timeoutMs": 100},
        "healthyThreshold": 2,
        "unhealthyThreshold": 2
    })
}

/// Health checks off: counters then count only the tests' own requests.
pub fn no_checks() -> Value {
    json!({"enabled": false})
}

/// A target group `name` with one target per backend (127.0.0.1 and the
/// backend's port), with `extra` fields merged in (e.g. `healthCheck`).
pub fn target_group(name: &str, backends: &[&BackendHandle], extra: Value) -> Value {
    let targets: Vec<Value> = backends
        .iter()
        .map(|b| json!({"address": "127.0.0.1", "port": b.port()}))
        .collect();
    let port = backends.first().map_or(80, |b| b.port());
    merge(
        json!({"name": name, "port": port, "targets": targets}),
        extra,
    )
}

/// `base` with the fields of `extra` (an object, or null) set on it.
pub fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// Service `svc` with one listener.
pub fn service(listener: Value) -> Value {
    json!({"name": "svc", "listeners": [listener]})
}

/// A forward action to one target group.
pub fn forward(tg: &str) -> Value {
    crate::harness::forward(tg)
}

/// A retry policy with the budget out of the way (for tests about
/// something else than the budget).
pub fn retries(max_attempts: u32, retry_on: &[&str], extra: Value) -> Value {
    merge(
        json!({
            "maxAttempts": max_attempts,
            "retryOn": retry_on,
            "budgetPercent": 100,
            "minRetriesPerSecond": 10_000
        }),
        extra,
    )
}

/// No retries at all, whatever the defaults are: every attempt the proxy
/// makes is visible to the client.
pub fn no_retries() -> Value {
    json!({"maxAttempts": 1})
}

/// A control plane, the configuration of one service, and proxy `p1` in
/// sync with it.
pub struct Mesh {
    /// Data directories of the control plane and the proxy.
    _dir: tempfile::TempDir,
    pub cp: Control,
    pub api: Api,
    pub px: Proxy,
}

impl Mesh {
    /// Start a control plane, put network `net`, the target groups, the
    /// service (named `svc`) and its association, then start proxy `p1`
    /// with `tune` applied to its settings and wait until it is in sync.
    pub async fn start_with(
        target_groups: &[Value],
        service: Value,
        tune: impl FnOnce(&mut trellis_proxy::ProxyConfig),
    ) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let cp = Control::start_in(&dir.path().join("cp")).await;
        let api = cp.api();
        configure(api, target_groups, service).await;
        let mut cfg = Proxy::config("p1", &cp.url(), &dir.path().join("p1"), &["net"]);
        tune(&mut cfg);
        let px = Proxy::start(cfg).await;
        wait_in_sync(api, "p1").await;
        Mesh {
            _dir: dir,
            cp,
            api,
            px,
        }
    }

    /// [`Mesh::start_with`] with the proxy's default settings.
    pub async fn start(target_groups: &[Value], service: Value) -> Mesh {
        Self::start_with(target_groups, service, |_| {}).await
    }

    /// The proxy's outbound listener.
    pub fn out(&self) -> SocketAddr {
        self.px.outbound
    }

    /// One GET of `path` through the proxy to [`HOST`] with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        trellis_tests::http1_request(self.out(), HOST, "GET", path, headers, Vec::new())
            .await
            .unwrap()
    }

    /// PUT a resource, then wait until the proxy applied a newer version
    /// than the one it had.
    pub async fn push(&self, collection: &str, spec: Value) {
        let before = wait_in_sync(self.api, "p1").await["appliedVersion"]
            .as_u64()
            .unwrap();
        self.api.put(collection, spec).await;
        let api = self.api;
        trellis_tests::eventually("the proxy applies the change", PUSH_WAIT, || async move {
            let v = wait_in_sync(api, "p1").await;
            (v["appliedVersion"].as_u64() > Some(before)).then_some(())
        })
        .await
        .unwrap();
    }

    /// Stop the proxy and the control plane.
    pub async fn stop(mut self) {
        self.px.stop().await;
        self.cp.stop().await;
    }
}

/// Put network `net`, the target groups, `service` (named `svc`) and its
/// association with `net`.
pub async fn configure(api: Api, target_groups: &[Value], service: Value) {
    api.put("service-networks", json!({"name": "net"})).await;
    for tg in target_groups {
        api.put("target-groups", tg.clone()).await;
    }
    api.put("services", service).await;
    api.put(
        "service-associations",
        json!({"name": "svc-net", "serviceNetwork": "net", "service": "svc"}),
    )
    .await;
}

/// What one request of a [`Load`] got.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Status, when a response arrived.
    pub status: Option<u16>,
    /// The proxy's reason header, if any.
    pub reason: Option<String>,
    /// The echo backend that answered (or a description of the answer).
    pub backend: String,
    /// The client error, when no response arrived.
    pub error: Option<String>,
    /// The probe's value when the answer arrived (see [`Load::start`]).
    pub probe: u64,
}

impl Outcome {
    /// A 200 from a backend.
    pub fn ok(&self) -> bool {
        self.status == Some(200)
    }

    fn from(r: anyhow::Result<HttpResponse>, probe: u64) -> Outcome {
        match r {
            Ok(r) => Outcome {
                status: Some(r.status.as_u16()),
                reason: r.header(REASON).map(str::to_string),
                backend: backend_of(&r),
                error: None,
                probe,
            },
            Err(e) => Outcome {
                status: None,
                reason: None,
                backend: String::new(),
                error: Some(format!("{e:#}")),
                probe,
            },
        }
    }
}

/// A value read after each answer: e.g. a healthy backend's health-check
/// count, a clock made of checks.
pub type Probe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A probe that always reads 0.
pub fn no_probe() -> Probe {
    Arc::new(|| 0)
}

/// Clients looping GETs through a proxy, each on its own kept-alive
/// HTTP/1.1 connection (reconnecting after an error), recording every
/// outcome.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// Start `clients` clients sending `GET path` with `headers` to `addr`
    /// with `Host: HOST`; `probe` is read after each answer.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        clients: usize,
        probe: Probe,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, probe, headers, path) = (
                    stop.clone(),
                    ok.clone(),
                    probe.clone(),
                    headers.clone(),
                    path.to_string(),
                );
                tokio::spawn(async move {
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    let mut out = Vec::new();
                    let mut conn: Option<Http1Connection> = None;
                    while !stop.load(Ordering::SeqCst) {
                        if conn.as_ref().is_none_or(|c| c.is_closed()) {
                            conn = Http1Connection::connect(addr).await.ok();
                        }
                        let r = match conn.as_mut() {
                            Some(c) => c.request(HOST, "GET", &path, &h, Vec::new()).await,
                            None => Err(anyhow::anyhow!("cannot connect to {addr}")),
                        };
                        if r.is_err() {
                            conn = None;
                        }
                        let o = Outcome::from(r, probe());
                        if o.ok() {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        out.push(o);
                    }
                    out
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    /// Answers that were 200 so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Wait until `n` more requests were answered 200.
    pub async fn wait_for_more_ok(&self, n: u64) {
        let target = self.ok() + n;
        let ok = self.ok.clone();
        trellis_tests::wait_until(&format!("{n} more successful requests"), PUSH_WAIT, || {
            ok.load(Ordering::SeqCst) >= target
        })
        .await
        .unwrap();
    }

    /// Stop the clients after their current request and return every
    /// outcome, client by client, in order.
    pub async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// The failed outcomes, briefly, for assertion messages.
pub fn describe_failures(outcomes: &[Outcome]) -> String {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok())
        .take(20)
        .map(|o| match (&o.status, &o.error) {
            (Some(s), _) => format!("{s} {:?} {} (probe {})", o.reason, o.backend, o.probe),
            (None, Some(e)) => format!("error {e} (probe {})", o.probe),
            _ => "?".to_string(),
        })
        .collect();
    format!(
        "{} of {} failed; first ones: {failed:#?}",
        outcomes.iter().filter(|o| !o.ok()).count(),
        outcomes.len()
    )
}

/// One target as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetView {
    /// `address:port`.
    pub target: String,
    /// INITIAL, HEALTHY, UNHEALTHY, UNAVAILABLE or DRAINING.
    pub state: String,
    /// Why, when given.
    pub reason: Option<String>,
}

/// `GET /v1/target-groups/{tg}/targets`: each target's aggregated state.
/// Errs with the status and body when the call fails or the answer has no
/// list of targets.
pub async fn target_states(api: Api, tg: &str) -> Result<Vec<TargetView>, String> {
    let (code, body) = api.get(&format!("/v1/target-groups/{tg}/targets")).await;
    if code != 200 {
        return Err(format!("{code} {body}"));
    }
    let list = body
        .as_array()
        .or_else(|| body["items"].as_array())
        .or_else(|| body["targets"].as_array())
        .ok_or_else(|| format!("no list of targets in {body}"))?;
    list.iter()
        .map(|t| {
            let inner = if t["target"].is_object() {
                &t["target"]
            } else {
                t
            };
            let address = inner["address"]
                .as_str()
                .ok_or_else(|| format!("no address in {t}"))?;
            let port = inner["port"]
                .as_u64()
                .ok_or_else(|| format!("no port in {t}"))?;
            let state = t["state"]
                .as_str()
                .or_else(|| t["health"]["state"].as_str())
                .ok_or_else(|| format!("no state in {t}"))?;
            let reason = t["reason"]
                .as_str()
                .or_else(|| t["health"]["reason"].as_str())
                .map(str::to_string);
            Ok(TargetView {
                target: format!("{address}:{port}"),
                state: state.to_string(),
                reason,
            })
        })
        .collect()
}

/// Wait until the REST API shows `target` (`address:port`) of `tg` in
/// `state`; returns what it showed.
pub async fn wait_for_state(api: Api, tg: &str, target: &str, state: &str) -> TargetView {
    let what = format!("{target} of {tg} {state} in the REST API");
    let last = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = trellis_tests::eventually(&what, PUSH_WAIT, || {
        let last = last.clone();
        async move {
            let r = target_states(api, tg).await;
            *last.lock().unwrap() = format!("{r:?}");
            r.ok()?
                .into_iter()
                .find(|t| t.target == target && t.state == state)
        }
    })
    .await;
    match seen {
        Ok(t) => t,
        Err(e) => panic!("{e}; last answer: {}", last.lock().unwrap()),
    }
}

/// `GET /targets` on the proxy's admin listener: the proxy's own view of
/// every target group and target.
pub async fn admin_targets(mesh: &Mesh) -> Value {
    let r =
        trellis_tests::http1_request(mesh.px.admin, "admin", "GET", "/targets", &[], Vec::new())
            .await
            .unwrap();
    assert_eq!(r.status, 200, "GET /targets: {}", r.text());
    r.json().unwrap()
}

/// Target group `name` in an admin `/targets` answer.
pub fn admin_group<'a>(targets: &'a Value, name: &str) -> &'a Value {
    targets["targetGroups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("no target group {name} in {targets}"))
}

/// The target on `port` of group `name` in an admin `/targets` answer.
pub fn admin_target<'a>(targets: &'a Value, name: &str, port: u16) -> &'a Value {
    admin_group(targets, name)["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["port"] == port))
        .unwrap_or_else(|| panic!("no target on port {port} in group {name}: {targets}"))
}

/// Send `n` GETs of `path` one after another; returns the responses.
pub async fn sequential(
    mesh: &Mesh,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<HttpResponse> {
    let mut conn = Http1Connection::connect(mesh.out()).await.unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if conn.is_closed() {
            conn = Http1Connection::connect(mesh.out()).await.unwrap();
        }
        out.push(
            conn.request(HOST, "GET", path, headers, Vec::new())
                .await
                .unwrap(),
        );
    }
    out
}

/// Assert that `r` is an error the proxy made: `status`, the reason in the
/// header and in a JSON body.
pub fn assert_proxy_error(r: &HttpResponse, status: u16, reason: &str) {
    assert_eq!(
        (r.status.as_u16(), r.header(REASON)),
        (status, Some(reason)),
        "body: {}",
        r.text()
    );
    let v = r.json().unwrap();
    assert_eq!(v["error"], reason, "{v}");
}
