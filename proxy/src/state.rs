//! What every task of a running proxy shares: the current prepared
//! snapshot (swapped whole, read without locks), the runtime state beside
//! it (balancer), the forwarding clients and the shutdown signal.

use crate::balance::Balancer;
use crate::forward::Forwarder;
use crate::listen::{Servers, Side};
use crate::route::RouteTable;
use arc_swap::ArcSwapOption;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use trellis_config::{ProtocolVersion, Snapshot};

/// A snapshot with its lookups prepared; built once per push, never per
/// request. Requests hold the `Arc` they loaded at their start, so a push
/// never changes a request halfway.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The snapshot as received (served by the admin `/config`).
    pub snapshot: Snapshot,
    /// host -> service -> listener -> rule.
    pub routes: RouteTable,
    /// Every auth policy, compiled.
    pub policies: crate::authz::Policies,
    /// Targets this proxy fronts, by `address:port`, with the protocol
    /// version of their target group: the only places the inbound
    /// listener forwards to.
    pub fronted: HashMap<String, ProtocolVersion>,
    /// Names for span attributes (see [`crate::observe::trace::SpanNames`]).
    pub span_names: crate::observe::trace::SpanNames,
}

impl Prepared {
    /// Prepare `snapshot` for the proxy called `proxy`.
    pub fn build(snapshot: Snapshot, proxy: &str) -> Result<Self, String> {
        if !snapshot.proxy.is_empty() && snapshot.proxy != proxy {
            return Err(format!(
                "snapshot version {} was compiled for proxy '{}', not '{proxy}'",
                snapshot.version, snapshot.proxy
            ));
        }
        let routes = RouteTable::build(&snapshot).map_err(|e| e.to_string())?;
        let policies =
            crate::authz::Policies::build(&snapshot, proxy).map_err(|e| e.to_string())?;
        let mut fronted = HashMap::new();
        for group in &snapshot.target_groups {
            for target in &group.targets {
                if target.via.is_none() && target.proxy.as_deref() == Some(proxy) {
                    fronted
                        .entry(target.authority())
                        .or_insert(group.protocol_version);
                }
            }
        }
        let span_names = crate::observe::trace::SpanNames::build(&snapshot);
        Ok(Self {
            snapshot,
            span_names,
            routes,
            policies,
            fronted,
        })
    }
}

/// State shared by the listeners, the sync task and [`crate::RunningProxy`].
#[derive(Debug)]
pub(crate) struct Shared {
    /// This proxy's name.
    pub name: String,
    /// The snapshot in use; `None` until one is loaded.
    pub current: ArcSwapOption<Prepared>,
    /// Target choice and its runtime state.
    pub balancer: Balancer,
    /// Upstream clients.
    pub forwarder: Forwarder,
    /// Mesh TLS: identity and configs (empty until joined).
    pub mesh: crate::identity::MeshTls,
    /// Limits and HTTP servers of the outbound listener.
    pub outbound: Servers,
    /// Limits and HTTP servers of the inbound listener.
    pub inbound: Servers,
    /// Access-log destinations and their counters (runtime state beside
    /// the snapshot, keyed by destination).
    pub access_log: crate::observe::AccessLog,
    /// Prometheus metrics (`GET /metrics` on the admin listener).
    pub metrics: crate::observe::metrics::ProxyMetrics,
    /// Version of the snapshot in use, for `wait_ready` and friends.
    pub version: watch::Sender<Option<u64>>,
    /// Becomes `true` when the proxy shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// The proxy's tracer; `None` when no trace endpoint is configured.
    pub traces: Option<crate::observe::trace::Traces>,
}

impl Shared {
    /// Prepare `snapshot` and make it the one in use. On error nothing
    /// changes. The balancer learns the new target groups before the new
    /// routes can name them.
    pub fn install(&self, snapshot: Snapshot) -> Result<Arc<Prepared>, String> {
        let prepared = Arc::new(Prepared::build(snapshot, &self.name)?);
        self.mesh.set_fronting(&prepared.snapshot);
        self.balancer.update(&prepared.snapshot);
        self.access_log.update(&prepared.snapshot);
        self.metrics.install(&prepared.snapshot);
        self.current.store(Some(Arc::clone(&prepared)));
        self.version.send_replace(Some(prepared.snapshot.version));
        Ok(prepared)
    }

    /// The settings of one data listener.
    pub fn servers(&self, side: Side) -> &Servers {
        match side {
            Side::Outbound => &self.outbound,
            Side::Inbound => &self.inbound,
        }
    }

    /// Version of the snapshot in use.
    pub fn current_version(&self) -> Option<u64> {
        *self.version.borrow()
    }
}
