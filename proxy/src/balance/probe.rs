//! One health check: the request a target's checker sends, and how the
//! answer is judged.
//!
//! A check is `GET <path>` with `User-Agent: `[`HEALTH_CHECK_USER_AGENT`]
//! (so backends and tests can tell checks from traffic), over HTTP/1.1 or
//! h2c (prior knowledge) as the health check's `protocolVersion` says
//! (`HTTP2` and `GRPC` mean h2c; HTTP1 when unset). It goes where the data
//! path would go: to the target itself, on the check's `port` (the
//! target's when unset), or, for a target fronted by another proxy, to
//! that proxy's inbound listener with `x-trellis-target: address:port`.
//! It passes when the status is in the matcher and, through a fronting
//! proxy, the proxy did not answer itself (`x-trellis-error`).
//!
//! Limits of this version: HTTPS checks go as plain HTTP (TLS to targets
//! arrives with the identity work, as on the data path); through a
//! fronting proxy, the last hop speaks the target group's protocol
//! version, and a check `port` other than the target's is refused by the
//! fronting proxy (it forwards only to the targets it fronts), which fails
//! the check with that reason.

use super::health::Thresholds;
use crate::error::ERROR_HEADER;
use crate::forward::connect::{MeshConnector, Purpose};
use crate::forward::headers::X_TRELLIS_TARGET;
use crate::identity::MeshTls;
use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as StdError;
use std::time::Duration;
use trellis_config::target_group::parse_matcher;
use trellis_config::{HealthCheck, SnapshotTarget, SnapshotTargetGroup};

/// `User-Agent` of every health check.
pub const HEALTH_CHECK_USER_AGENT: &str = "Trellis-HealthChecker/1.0";

/// Pooled check connections are closed after this idle time. Shorter than
/// the shortest common server keep-alive (Node.js: 5 s), so a check never
/// races a server closing its idle connection: checks every few seconds
/// or faster reuse their connection, slower ones open a new one each time
/// (as load balancers' checks usually do).
pub const HEALTH_CHECK_POOL_IDLE: Duration = Duration::from_secs(4);

/// Most of a check's response body read (so the connection can be
/// reused); a longer body is dropped unread, which costs only the reuse.
const BODY_LIMIT: usize = 64 * 1024;

/// The matcher used if a pushed one does not parse (validation prevents it).
const FALLBACK_MATCHER: (u16, u16) = (200, 200);

/// Interval and timeout of `hc`: `fast` (milliseconds) when set, else
/// the Lattice-range seconds.
pub(crate) fn timing(hc: &HealthCheck) -> (Duration, Duration) {
    match &hc.fast {
        Some(f) => (
            Duration::from_millis(u64::from(f.interval_ms)),
            Duration::from_millis(u64::from(f.timeout_ms)),
        ),
        None => (
            Duration::from_secs(u64::from(hc.interval_seconds)),
            Duration::from_secs(u64::from(hc.timeout_seconds)),
        ),
    }
}

/// Everything a checker needs for one target; rebuilt on every push and
/// handed to the running checker only when it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    pub uri: Uri,
    /// `address:port` checked (the `Host` of HTTP/1.1 checks).
    pub host: HeaderValue,
    /// `x-trellis-target` when going through a fronting proxy.
    pub fronted: Option<HeaderValue>,
    /// Where the connection goes (for messages).
    pub connect: String,
    pub h2: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
    pub matcher: Vec<(u16, u16)>,
    pub matcher_text: String,
}

impl Probe {
    /// The check of `target` in `group`; an error names what cannot be
    /// made into a request (validation normally prevents it).
    pub(crate) fn new(
        group: &SnapshotTargetGroup,
        target: &SnapshotTarget,
    ) -> Result<Self, String> {
        let hc = &group.health_check;
        let port = hc.port.unwrap_or(target.port);
        let checked = SnapshotTarget {
            port,
            ..target.clone()
        }
        .authority();
        let connect = target.via.clone().unwrap_or_else(|| checked.clone());
        // A fronting proxy's inbound is reached over mesh TLS.
        let scheme = if target.via.is_some() {
            "https"
        } else {
            "http"
        };
        let uri: Uri = format!("{scheme}://{connect}{}", hc.path)
            .parse()
            .map_err(|e| format!("cannot check {checked} at path '{}': {e}", hc.path))?;
        let host = HeaderValue::from_str(&checked)
            .map_err(|e| format!("'{checked}' cannot be sent as a header: {e}"))?;
        let fronted = target.via.is_some().then(|| host.clone());
        let (interval, timeout) = timing(hc);
        let matcher = parse_matcher(&hc.matcher).unwrap_or_else(|_| vec![FALLBACK_MATCHER]);
        Ok(Self {
            uri,
            host,
            fronted,
            connect,
            h2: hc.protocol_version.is_some_and(|v| v.is_h2()),
            interval,
            timeout,
            thresholds: Thresholds {
                healthy: hc.healthy_threshold,
                unhealthy: hc.unhealthy_threshold,
            },
            matcher,
            matcher_text: hc.matcher.clone(),
        })
    }

    fn matches(&self, status: u16) -> bool {
        self.matcher
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// The HTTP clients every checker of a proxy shares.
#[derive(Debug)]
pub(crate) struct HealthClient {
    h1: Client<MeshConnector, Empty<Bytes>>,
    h2: Client<MeshConnector, Empty<Bytes>>,
}

impl Default for HealthClient {
    fn default() -> Self {
        Self::with_mesh(&MeshTls::new(false))
    }
}

impl HealthClient {
    /// Clients whose probes of fronted targets use `mesh` TLS.
    pub(crate) fn with_mesh(mesh: &MeshTls) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let tls =
            |h2: bool| MeshConnector::new(connector.clone(), mesh.clone(), Purpose::Peer { h2 });
        let builder = |h2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(HEALTH_CHECK_POOL_IDLE)
                .pool_max_idle_per_host(1)
                .http2_only(h2);
            b
        };
        Self {
            h1: builder(false).build(tls(false)),
            h2: builder(true).build(tls(true)),
        }
    }
}

impl HealthClient {
    /// Run one check; `Err` carries the reason shown in health reports
    /// (`HealthCheckFailed: ...`, `HealthCheckTimeout: ...`).
    pub(crate) async fn check(&self, p: &Probe) -> Result<(), String> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(p.uri.clone())
            .header(USER_AGENT, HEALTH_CHECK_USER_AGENT);
        if !p.h2 {
            req = req.header(HOST, p.host.clone());
        }
        if let Some(t) = &p.fronted {
            req = req.header(X_TRELLIS_TARGET, t.clone());
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| format!("HealthCheckFailed: cannot build the request: {e}"))?;
        let client = if p.h2 { &self.h2 } else { &self.h1 };
        let exchange = async {
            let resp = client.request(req).await?;
            let status = resp.status().as_u16();
            let proxy_error = resp
                .headers()
                .get(ERROR_HEADER)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            // Read the (small) body so the connection can be reused; its
            // content does not matter.
            let _ = Limited::new(resp.into_body(), BODY_LIMIT).collect().await;
            Ok::<_, hyper_util::client::legacy::Error>((status, proxy_error))
        };
        match tokio::time::timeout(p.timeout, exchange).await {
            Err(_) => Err(format!(
                "HealthCheckTimeout: no response from {} within {:?}",
                p.connect, p.timeout
            )),
            Ok(Err(e)) if e.is_connect() => Err(format!(
                "HealthCheckFailed: cannot connect to {}: {}",
                p.connect,
                chain(&e)
            )),
            Ok(Err(e)) => Err(format!("HealthCheckFailed: {}", chain(&e))),
            Ok(Ok((status, Some(code)))) if p.fronted.is_some() => Err(format!(
                "HealthCheckFailed: the fronting proxy at {} answered {status} {code}",
                p.connect
            )),
            Ok(Ok((status, _))) if p.matches(status) => Ok(()),
            Ok(Ok((status, _))) => Err(format!(
                "HealthCheckFailed: status {status} (matcher {})",
                p.matcher_text
            )),
        }
    }
}

/// `outer: inner: innermost`, skipping repeats.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::super::group::tests::group;
    use super::*;
    use trellis_config::{Algorithm, FastHealthCheck, ProtocolVersion};

    #[test]
    fn probe_of_a_direct_and_a_fronted_target() {
        let mut g = group("tg", Algorithm::RoundRobin, &["10.0.0.1", "fd00::2"]);
        g.health_check.path = "/healthz?deep=1".into();
        g.health_check.matcher = "200-299,404".into();
        let p = Probe::new(&g, &g.targets[0]).unwrap();
        assert_eq!(p.uri.to_string(), "http://10.0.0.1:8080/healthz?deep=1");
        assert_eq!(p.host, "10.0.0.1:8080");
        assert_eq!(p.fronted, None);
        assert!(!p.h2);
        assert_eq!(
            (p.interval, p.timeout),
            (Duration::from_secs(30), Duration::from_secs(5))
        );
        assert!(p.matches(204) && p.matches(404) && !p.matches(500) && !p.matches(301));

        g.health_check.port = Some(9000);
        g.health_check.protocol_version = Some(ProtocolVersion::Http2);
        g.health_check.fast = Some(FastHealthCheck {
            interval_ms: 100,
            timeout_ms: 50,
        });
        g.targets[1].proxy = Some("edge".into());
        g.targets[1].via = Some("192.0.2.1:15006".into());
        let p = Probe::new(&g, &g.targets[1]).unwrap();
        assert_eq!(p.uri.to_string(), "https://192.0.2.1:15006/healthz?deep=1");
        assert_eq!(p.fronted.unwrap(), "[fd00::2]:9000");
        assert!(p.h2);
        assert_eq!(
            (p.interval, p.timeout),
            (Duration::from_millis(100), Duration::from_millis(50))
        );
    }
}
