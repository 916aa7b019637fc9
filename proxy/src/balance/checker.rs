//! Active health checkers: one task per checked target, keyed by (target
//! group id, address, port), that outlive snapshot pushes.
//!
//! After every push, [`Checkers::reconcile`] compares the running
//! checkers with the targets that should be checked (groups with checks
//! enabled, targets not draining):
//!
//! - a target whose settings did not change keeps its checker untouched;
//! - changed settings (path, interval, thresholds, `via`, ...) are handed
//!   to the running checker, which keeps the target's health and
//!   counters; a shorter interval takes effect at once;
//! - a checker whose target left, started draining or had its checks
//!   disabled is stopped, and a target that stays becomes unchecked
//!   (reported UNAVAILABLE, eligible);
//! - a new target gets a checker. Its first check comes at a random point
//!   of the first [`FIRST_CHECK_WINDOW`] (or of the interval, if shorter),
//!   its second at a random point between half an interval and one and a
//!   half after that, and the others every interval after the second: the
//!   checks of many targets spread over the interval, yet a proxy that
//!   starts (or a group that appears) knows every target's health within
//!   about a second. (Spreading the *first* checks over a whole 30 s
//!   interval would send all of a group's traffic, for seconds, to the
//!   few targets checked first: an INITIAL target takes traffic only
//!   while no target has passed.)
//!
//! A stopped checker that was mid-check cannot publish its result: the
//! target's health cell accepts results only from its current owner.

use super::Groups;
use super::endpoint::EndpointState;
use super::health::Health;
use super::probe::{HealthClient, Probe};
use super::signal::Signals;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// (target group id, address, port).
type Key = (String, String, u16);

/// A running checker; dropping it stops the task.
#[derive(Debug)]
struct Running {
    probe: watch::Sender<Arc<Probe>>,
    state: Arc<EndpointState>,
    owner: u64,
    task: AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every checker of a balancer.
#[derive(Debug, Default)]
pub(crate) struct Checkers {
    client: Arc<HealthClient>,
    running: Mutex<HashMap<Key, Running>>,
    next_owner: AtomicU64,
    stopped: AtomicBool,
}

impl Checkers {
    /// Checkers whose probes of fronted targets use `mesh` TLS.
    pub(crate) fn with_mesh(mesh: &crate::identity::MeshTls) -> Self {
        Self {
            client: Arc::new(HealthClient::with_mesh(mesh)),
            ..Self::default()
        }
    }
}

/// The first checks of new targets are spread over this much time (or
/// over the interval, if shorter); see the module documentation.
pub const FIRST_CHECK_WINDOW: Duration = Duration::from_secs(1);

/// Delay of a new target's first check: uniformly random in
/// `[0, min(interval, FIRST_CHECK_WINDOW))`.
pub(crate) fn first_delay(interval: Duration) -> Duration {
    interval.min(FIRST_CHECK_WINDOW).mul_f64(fastrand::f64())
}

/// Delay between the first and the second check: uniformly random in
/// `[interval / 2, 3 × interval / 2)`, which sets the target's phase.
pub(crate) fn second_delay(interval: Duration) -> Duration {
    interval.mul_f64(0.5 + fastrand::f64())
}

impl Checkers {
    /// Whether checkers can start now (a tokio runtime, not stopped).
    pub(crate) fn can_run(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed) && tokio::runtime::Handle::try_current().is_ok()
    }

    /// Number of running checkers.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start, update and stop checkers to match the groups held (read
    /// under the checkers' lock, so concurrent updates end with the last).
    pub(crate) fn reconcile(&self, groups: &ArcSwap<Groups>, signals: &Arc<Signals>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no tokio runtime: health checkers not started");
            return;
        };
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut running = self.lock();
        let groups = groups.load();
        let mut wanted = HashMap::new();
        for g in groups.values() {
            if !g.spec().health_check.enabled {
                continue;
            }
            for e in g.endpoints() {
                if !e.target.draining {
                    let key = (g.id().to_string(), e.target.address.clone(), e.target.port);
                    wanted.insert(key, (g, e));
                }
            }
        }
        let mut changed = false;
        running.retain(|key, r| {
            let keep = wanted
                .get(key)
                .is_some_and(|(_, e)| Arc::ptr_eq(e.state(), &r.state));
            if !keep {
                r.task.abort();
                changed |= r.state.health.release(r.owner);
            }
            keep
        });
        for (key, (group, endpoint)) in wanted {
            let probe = match Probe::new(group.spec(), &endpoint.target) {
                Ok(p) => p,
                Err(error) => {
                    tracing::warn!(target_group = %key.0, target = endpoint.target_authority(), %error, "cannot health-check this target; it counts as healthy");
                    if let Some(r) = running.remove(&key) {
                        changed |= r.state.health.release(r.owner);
                    }
                    changed |= endpoint.state().health.release(0);
                    continue;
                }
            };
            if let Some(r) = running.get(&key) {
                r.probe.send_if_modified(|current| {
                    let differs = **current != probe;
                    if differs {
                        *current = Arc::new(probe);
                    }
                    differs
                });
                continue;
            }
            let owner = self.next_owner.fetch_add(1, Ordering::Relaxed) + 1;
            let state = Arc::clone(endpoint.state());
            changed |= state.health.claim(owner);
            let (tx, rx) = watch::channel(Arc::new(probe));
            let task = runtime.spawn(run(Checker {
                probe: rx,
                state: Arc::clone(&state),
                owner,
                signals: Arc::clone(signals),
                client: Arc::clone(&self.client),
                group: group.id().to_string(),
                name: group.name().to_string(),
                target: endpoint.target_authority().to_string(),
            }));
            running.insert(
                key,
                Running {
                    probe: tx,
                    state,
                    owner,
                    task: task.abort_handle(),
                },
            );
        }
        drop(running);
        if changed {
            signals.changed();
        }
    }

    /// Stop every checker for good (proxy shutdown); targets become
    /// unchecked.
    pub(crate) fn stop(&self, signals: &Signals) {
        self.stopped.store(true, Ordering::Relaxed);
        let stopped: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        let mut changed = false;
        for r in stopped {
            r.task.abort();
            changed |= r.state.health.release(r.owner);
        }
        if changed {
            signals.changed();
        }
    }
}

/// One target's checker task.
struct Checker {
    probe: watch::Receiver<Arc<Probe>>,
    state: Arc<EndpointState>,
    owner: u64,
    signals: Arc<Signals>,
    client: Arc<HealthClient>,
    group: String,
    name: String,
    target: String,
}

async fn run(mut c: Checker) {
    let mut probe = Arc::clone(&c.probe.borrow_and_update());
    let mut next = Instant::now() + first_delay(probe.interval);
    let mut first = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = c.probe.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = Arc::clone(&c.probe.borrow_and_update());
                if new.interval < probe.interval {
                    next = next.min(Instant::now() + first_delay(new.interval));
                }
                probe = new;
                continue;
            }
        }
        let started = Instant::now();
        let result = c.client.check(&probe).await;
        let failure = result.as_ref().err().cloned();
        if let Some((from, to)) = c.state.health.record(c.owner, result, probe.thresholds) {
            c.signals.changed();
            log_transition(&c, from, to, failure.as_deref());
        } else if let Some(reason) = &failure {
            tracing::debug!(target_group = %c.group, target = %c.target, %reason, "health check failed");
        }
        next = started
            + if first {
                second_delay(probe.interval)
            } else {
                probe.interval
            };
        first = false;
    }
}

fn log_transition(c: &Checker, from: Health, to: Health, reason: Option<&str>) {
    match to {
        Health::Healthy => tracing::info!(
            target_group = %c.group,
            name = %c.name,
            target = %c.target,
            from = ?from,
            "target is healthy"
        ),
        _ => tracing::warn!(
            target_group = %c.group,
            name = %c.name,
            target = %c.target,
            from = ?from,
            to = ?to,
            reason = reason.unwrap_or(""),
            "target failed its health checks"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `delays` are below `mid`.
    fn below(delays: &[Duration], mid: Duration) -> usize {
        delays.iter().filter(|d| **d < mid).count()
    }

    #[test]
    fn first_checks_come_soon_and_spread() {
        for (interval, window) in [
            (Duration::from_secs(30), FIRST_CHECK_WINDOW),
            (Duration::from_millis(100), Duration::from_millis(100)),
        ] {
            let delays: Vec<Duration> = (0..1_000).map(|_| first_delay(interval)).collect();
            assert!(delays.iter().all(|d| *d < window), "{interval:?}");
            // Spread, not bunched: both halves of the window get some.
            let early = below(&delays, window / 2);
            assert!((300..=700).contains(&early), "{early} of 1000 early");
        }
    }

    #[test]
    fn second_checks_set_a_phase_across_the_interval() {
        let interval = Duration::from_secs(30);
        let delays: Vec<Duration> = (0..1_000).map(|_| second_delay(interval)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= interval / 2 && *d < interval * 3 / 2)
        );
        let early = below(&delays, interval);
        assert!((300..=700).contains(&early), "{early} of 1000 early");
    }
}
