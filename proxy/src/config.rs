//! What a proxy is told when it starts, with every default named and
//! explained.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;
use trellis_config::ProxyRegistration;

/// Trace settings' defaults ([`ProxyConfig::traces`]).
pub use crate::observe::trace::settings as trace;
pub use crate::observe::trace::{OtlpProtocol, Sampler, TraceConfig, TraceStats};

/// Where local applications send their requests. Loopback only: the
/// outbound listener forwards anywhere the snapshot allows, so it must not
/// be reachable from other hosts. 15001 as in Istio's sidecar.
pub const DEFAULT_OUTBOUND_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15001));

/// Where other proxies reach this one, for targets it fronts. All
/// interfaces, since peers are on other hosts. 15006 as in Istio.
pub const DEFAULT_INBOUND_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 15006));

/// Health and config endpoints; loopback, since `/config` shows the whole
/// snapshot. 15000 as Envoy's admin port.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15000));

/// The control plane of a local `trellis-control` with its defaults.
pub const DEFAULT_CONTROL_URL: &str = "http://127.0.0.1:7070";

/// Time a target has to send its response head: long enough for slow
/// handlers, short enough that a hung target frees its client. A timeout
/// is answered 504 `upstream_timeout`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);

/// Time a client has to send a complete request head on a new connection;
/// bounds slow-loris clients. Answered 408 `request_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a kept-alive client connection may sit idle between requests
/// (hyper's header timer covers both, see `listen`). Longer than common
/// client pool idle times so that the proxy is rarely the side that
/// closes a connection a client is about to reuse.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest request head (request line and header fields), as VPC Lattice
/// allows (60 KiB). Answered 431 `headers_too_large`.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 60 * 1024;

/// Most header fields in one request, as VPC Lattice allows. Also hyper's
/// own default, which keeps hyper's header array on the stack.
pub const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;

/// Largest request body. Bodies stream, so this is not about memory: it
/// stops a runaway client from pushing unbounded data at a target.
/// Answered 413 `body_too_large`.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 10 * 1024 * 1024;

/// Time requests in flight get to finish at shutdown before their
/// connections are cut; well inside Kubernetes' default 30 s grace period.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The control plane sends a heartbeat every 5 s; a watch stream silent
/// for three of them is dead (a half-open TCP connection never errors by
/// itself), and the proxy reconnects.
pub const DEFAULT_WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Settings of one proxy. Build with [`ProxyConfig::new`] (production
/// defaults) or [`ProxyConfig::loopback`] (everything on 127.0.0.1 with
/// ephemeral ports, for tests and `trellis dev`), then adjust fields.
/// A secret setting (the join token): its `Debug` never shows it, so a
/// logged configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Unique name of the proxy (a DNS label: pod or node name).
    pub name: String,
    /// Group for proxy associations (e.g. a node pool).
    pub group: Option<String>,
    /// Account the proxy runs for; the control plane's default when `None`.
    pub account: Option<String>,
    /// Base URL of the control plane, e.g. `http://127.0.0.1:7070`.
    pub control_url: String,
    /// Address of the outbound listener (local applications). Port 0 picks one.
    pub outbound_listen: SocketAddr,
    /// Address of the inbound listener (other proxies); `None`: no
    /// inbound listener, so this proxy fronts no target.
    pub inbound_listen: Option<SocketAddr>,
    /// Inbound address told to the control plane (what other proxies
    /// connect to); default: the bound inbound address, with an
    /// unspecified IP replaced by loopback.
    pub inbound_advertise: Option<SocketAddr>,
    /// Address of the admin listener (`/live`, `/ready`, `/config`).
    pub admin_listen: SocketAddr,
    /// Directory for the last good snapshot (`snapshot.json`), loaded at
    /// start when the control plane cannot be reached.
    pub data_dir: PathBuf,
    /// Service networks (by name) this proxy joins when it registers.
    pub service_networks: Vec<String>,
    /// See [`DEFAULT_UPSTREAM_TIMEOUT`].
    pub upstream_timeout: Duration,
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`DEFAULT_MAX_REQUEST_HEADER_BYTES`].
    pub max_request_header_bytes: usize,
    /// See [`DEFAULT_MAX_REQUEST_HEADERS`].
    pub max_request_headers: usize,
    /// See [`DEFAULT_MAX_REQUEST_BODY_BYTES`].
    pub max_request_body_bytes: u64,
    /// See [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// See [`DEFAULT_WATCH_IDLE_TIMEOUT`].
    pub watch_idle_timeout: Duration,
    /// OpenTelemetry traces; off without an endpoint. [`ProxyConfig::new`]
    /// reads the `OTEL_*` variables ([`TraceConfig::from_env`]);
    /// [`ProxyConfig::loopback`] leaves tracing off.
    pub traces: TraceConfig,
    /// Join token (`tjt_...`) used once to get a mesh certificate from the
    /// control plane when the data directory holds no valid one. With a
    /// token or a saved identity the proxy speaks mTLS only; with neither
    /// it runs in plaintext (development against a fake control plane).
    pub join_token: Option<Secret>,
}

impl ProxyConfig {
    /// Production defaults: outbound on 127.0.0.1:15001, no inbound
    /// listener, admin on 127.0.0.1:15000, data in
    /// `<tmp>/trellis-proxy/<name>`.
    pub fn new(name: impl Into<String>, control_url: impl Into<String>) -> Self {
        let name = name.into();
        let data_dir = std::env::temp_dir().join("trellis-proxy").join(&name);
        Self {
            name,
            group: None,
            account: None,
            control_url: control_url.into(),
            outbound_listen: DEFAULT_OUTBOUND_LISTEN,
            inbound_listen: None,
            inbound_advertise: None,
            admin_listen: DEFAULT_ADMIN_LISTEN,
            data_dir,
            service_networks: Vec::new(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            watch_idle_timeout: DEFAULT_WATCH_IDLE_TIMEOUT,
            traces: TraceConfig::from_env(),
            join_token: None,
        }
    }

    /// Every listener (inbound included) on 127.0.0.1 with a port picked
    /// by the OS, and a short drain: what tests and `trellis dev` want.
    pub fn loopback(
        name: impl Into<String>,
        control_url: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self {
            outbound_listen: any,
            inbound_listen: Some(any),
            admin_listen: any,
            data_dir: data_dir.into(),
            drain_timeout: Duration::from_secs(1),
            traces: TraceConfig::default(),
            ..Self::new(name, control_url)
        }
    }

    /// What the proxy registers with; `inbound_address` is filled in by
    /// `start` once the inbound listener is bound.
    pub fn registration(&self, inbound_address: Option<SocketAddr>) -> ProxyRegistration {
        ProxyRegistration {
            name: self.name.clone(),
            account: self.account.clone(),
            group: self.group.clone(),
            inbound_address: inbound_address.map(|a| a.to_string()),
            service_networks: self.service_networks.clone(),
        }
    }

    /// Check the settings; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Err(e) = self.registration(None).validate() {
            return Err(e.to_string());
        }
        let uri: http::Uri = self
            .control_url
            .parse()
            .map_err(|e| format!("control_url '{}': {e}", self.control_url))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "control_url '{}': expected http://host:port (TLS to the control plane arrives with the identity work)",
                self.control_url
            ));
        }
        if self.max_request_header_bytes < 1024 {
            return Err("max_request_header_bytes: at least 1024".into());
        }
        if self.max_request_headers == 0 {
            return Err("max_request_headers: at least 1".into());
        }
        for (field, d) in [
            ("upstream_timeout", self.upstream_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("watch_idle_timeout", self.watch_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{field}: must be above zero"));
            }
        }
        self.traces.validate()?;
        Ok(())
    }

    /// The request limits the listeners enforce.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.max_request_header_bytes,
            max_headers: self.max_request_headers,
            max_body_bytes: self.max_request_body_bytes,
            header_read_timeout: self.header_read_timeout,
        }
    }
}

/// Header fields a calling proxy may add to a request (`x-forwarded-for`,
/// `x-forwarded-proto`, `x-request-id`, `x-trellis-target`, `host` made
/// from `:authority`, the route for auth policies: `x-trellis-service`,
/// `x-trellis-network`, `x-trellis-port`, ...), with room to spare: the inbound listener
/// accepts this many more than the outbound one, so that a request within
/// the limits at the caller's proxy is within them at the target's.
pub const INBOUND_EXTRA_HEADERS: usize = 12;

/// Bytes of head a calling proxy may add (those fields, a longer
/// `x-forwarded-for`); see [`INBOUND_EXTRA_HEADERS`].
pub const INBOUND_EXTRA_HEADER_BYTES: usize = 1024;

/// Request limits, copied out of [`ProxyConfig`] for the request path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
}

impl Limits {
    /// The limits of the inbound listener: those of the outbound one plus
    /// what the calling proxy adds.
    pub(crate) fn for_inbound(self) -> Self {
        Self {
            max_header_bytes: self
                .max_header_bytes
                .saturating_add(INBOUND_EXTRA_HEADER_BYTES),
            max_headers: self.max_headers.saturating_add(INBOUND_EXTRA_HEADERS),
            ..self
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert_eq!(
            ProxyConfig::new("p-1", DEFAULT_CONTROL_URL).validate(),
            Ok(())
        );
        let c = ProxyConfig::loopback("p-1", "http://127.0.0.1:1", "/tmp/x");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.outbound_listen.port(), 0);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut c = ProxyConfig::new("p-1", "https://cp:7070");
        assert!(c.validate().unwrap_err().contains("control_url"));
        c.control_url = DEFAULT_CONTROL_URL.into();
        c.name = "Not A Label".into();
        assert!(c.validate().unwrap_err().contains("name"));
    }
}
