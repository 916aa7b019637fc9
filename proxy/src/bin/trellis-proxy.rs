//! `trellis-proxy`: run one Trellis proxy until SIGTERM or Ctrl-C.
//!
//! On the signal the proxy drains: it reports not ready, stops accepting
//! connections, lets requests in flight finish within `--drain-timeout`,
//! and exits 0. A second signal during the drain cuts it short (exit 0 as
//! well: the drain was asked for and then hurried, nothing failed).
//!
//! Every flag has an environment variable (`TRELLIS_...`); logs go to
//! stderr, filtered by `RUST_LOG` (default `info`).

use anyhow::Context as _;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use trellis_proxy::ProxyConfig;
use trellis_proxy::config::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_CONTROL_URL, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_REQUEST_BODY_BYTES, DEFAULT_MAX_REQUEST_HEADER_BYTES,
    DEFAULT_MAX_REQUEST_HEADERS, DEFAULT_OUTBOUND_LISTEN, DEFAULT_UPSTREAM_TIMEOUT,
    DEFAULT_WATCH_IDLE_TIMEOUT,
};
use trellis_proxy::config::{OtlpProtocol, Sampler, TraceConfig};

/// The Trellis data plane: routes local applications' requests to the
/// services of the mesh, and fronts local targets for other proxies.
#[derive(Debug, Parser)]
#[command(name = "trellis-proxy", version)]
struct Args {
    /// Unique name of this proxy (a DNS label, e.g. the pod or node name).
    #[arg(long, env = "TRELLIS_PROXY_NAME")]
    name: String,
    /// Group for proxy associations (e.g. a node pool).
    #[arg(long, env = "TRELLIS_PROXY_GROUP")]
    group: Option<String>,
    /// Account the proxy runs for (the control plane's default when unset).
    #[arg(long, env = "TRELLIS_ACCOUNT")]
    account: Option<String>,
    /// Join token from the control plane (POST /v1/join-tokens), used when
    /// the data directory holds no valid certificate yet.
    #[arg(long, env = "TRELLIS_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Base URL of the control plane.
    #[arg(long, env = "TRELLIS_CONTROL_URL", default_value = DEFAULT_CONTROL_URL)]
    control_url: String,
    /// Listener for local applications (keep it on loopback).
    #[arg(long, env = "TRELLIS_OUTBOUND_LISTEN", default_value_t = DEFAULT_OUTBOUND_LISTEN)]
    outbound_listen: SocketAddr,
    /// Listener for other proxies (e.g. 0.0.0.0:15006); none when unset,
    /// and then this proxy fronts no target.
    #[arg(long, env = "TRELLIS_INBOUND_LISTEN")]
    inbound_listen: Option<SocketAddr>,
    /// Address other proxies use to reach the inbound listener (default:
    /// the bound address).
    #[arg(long, env = "TRELLIS_INBOUND_ADVERTISE")]
    inbound_advertise: Option<SocketAddr>,
    /// Listener for /live, /ready and /config.
    #[arg(long, env = "TRELLIS_ADMIN_LISTEN", default_value_t = DEFAULT_ADMIN_LISTEN)]
    admin_listen: SocketAddr,
    /// Directory for the last good snapshot (default: <tmp>/trellis-proxy/<name>).
    #[arg(long, env = "TRELLIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Service network to join (repeat, or comma-separate in the variable).
    #[arg(
        long = "service-network",
        env = "TRELLIS_SERVICE_NETWORKS",
        value_delimiter = ','
    )]
    service_networks: Vec<String>,
    /// Time a target has to send its response head (then 504).
    #[arg(long, env = "TRELLIS_UPSTREAM_TIMEOUT", default_value_t = DEFAULT_UPSTREAM_TIMEOUT.into())]
    upstream_timeout: humantime::Duration,
    /// Time a client has to send a request head on a new connection (then 408).
    #[arg(long, env = "TRELLIS_HEADER_READ_TIMEOUT", default_value_t = DEFAULT_HEADER_READ_TIMEOUT.into())]
    header_read_timeout: humantime::Duration,
    /// Time a kept-alive client connection may idle between requests.
    #[arg(long, env = "TRELLIS_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT.into())]
    idle_timeout: humantime::Duration,
    /// Largest request head in bytes (then 431).
    #[arg(long, env = "TRELLIS_MAX_REQUEST_HEADER_BYTES", default_value_t = DEFAULT_MAX_REQUEST_HEADER_BYTES)]
    max_request_header_bytes: usize,
    /// Most header fields in a request (then 431).
    #[arg(long, env = "TRELLIS_MAX_REQUEST_HEADERS", default_value_t = DEFAULT_MAX_REQUEST_HEADERS)]
    max_request_headers: usize,
    /// Largest request body in bytes (then 413).
    #[arg(long, env = "TRELLIS_MAX_REQUEST_BODY_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BODY_BYTES)]
    max_request_body_bytes: u64,
    /// Time requests in flight get to finish at shutdown (SIGTERM); the
    /// proxy answers `/ready` 503 and refuses new connections meanwhile.
    #[arg(long, env = "TRELLIS_DRAIN_TIMEOUT", default_value_t = DEFAULT_DRAIN_TIMEOUT.into())]
    drain_timeout: humantime::Duration,
    /// A watch stream silent this long is treated as dead.
    #[arg(long, env = "TRELLIS_WATCH_IDLE_TIMEOUT", default_value_t = DEFAULT_WATCH_IDLE_TIMEOUT.into())]
    watch_idle_timeout: humantime::Duration,
    /// OTLP endpoint for traces, used as is: http://HOST:4317 (grpc) or
    /// http://HOST:4318/v1/traces (http/protobuf). Overrides
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and OTEL_EXPORTER_OTLP_ENDPOINT;
    /// without an endpoint there is no tracing.
    #[arg(long)]
    trace_endpoint: Option<String>,
    /// OTLP protocol: grpc or http/protobuf (overrides OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(long, value_parser = parse_protocol)]
    trace_protocol: Option<String>,
    /// service.name of the spans (overrides OTEL_SERVICE_NAME; default trellis-proxy).
    #[arg(long)]
    trace_service_name: Option<String>,
    /// Sampler (overrides OTEL_TRACES_SAMPLER): parentbased_always_on (the
    /// default), parentbased_traceidratio, traceidratio, always_on, ...
    #[arg(long, value_parser = parse_sampler)]
    trace_sampler: Option<String>,
    /// Fraction of new traces a ratio sampler keeps, 0 to 1 (overrides
    /// OTEL_TRACES_SAMPLER_ARG).
    #[arg(long, value_parser = parse_ratio)]
    trace_sampler_arg: Option<String>,
}

fn parse_protocol(s: &str) -> Result<String, String> {
    OtlpProtocol::parse(s).map(|p| p.as_str().to_string())
}

fn parse_sampler(s: &str) -> Result<String, String> {
    Sampler::parse(s, None).map(|_| s.to_string())
}

fn parse_ratio(s: &str) -> Result<String, String> {
    Sampler::parse("traceidratio", Some(s)).map(|_| s.to_string())
}

impl Args {
    fn into_config(self) -> ProxyConfig {
        let mut cfg = ProxyConfig::new(self.name, self.control_url);
        cfg.group = self.group;
        cfg.account = self.account;
        cfg.join_token = self.join_token.map(Into::into);
        cfg.outbound_listen = self.outbound_listen;
        cfg.inbound_listen = self.inbound_listen;
        cfg.inbound_advertise = self.inbound_advertise;
        cfg.admin_listen = self.admin_listen;
        if let Some(dir) = self.data_dir {
            cfg.data_dir = dir;
        }
        cfg.service_networks = self.service_networks;
        cfg.upstream_timeout = self.upstream_timeout.into();
        cfg.header_read_timeout = self.header_read_timeout.into();
        cfg.idle_timeout = self.idle_timeout.into();
        cfg.max_request_header_bytes = self.max_request_header_bytes;
        cfg.max_request_headers = self.max_request_headers;
        cfg.max_request_body_bytes = self.max_request_body_bytes;
        cfg.drain_timeout = self.drain_timeout.into();
        cfg.watch_idle_timeout = self.watch_idle_timeout.into();
        // The flags stand in for the variables they override.
        let flags = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", self.trace_endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", self.trace_protocol),
            ("OTEL_SERVICE_NAME", self.trace_service_name),
            ("OTEL_TRACES_SAMPLER", self.trace_sampler),
            ("OTEL_TRACES_SAMPLER_ARG", self.trace_sampler_arg),
        ];
        // (Flags are checked by clap; `ProxyConfig::new` has already
        // warned about invalid variables.)
        let (traces, _) =
            TraceConfig::from_vars(|name| match flags.iter().find(|(n, _)| *n == name) {
                Some((_, Some(v))) => Some(v.clone()),
                _ => std::env::var(name).ok(),
            });
        cfg.traces = traces;
        cfg
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let cfg = Args::parse().into_config();
    let proxy = trellis_proxy::start(cfg)
        .await
        .context("cannot start the proxy")?;
    stop_signal().await?;
    tracing::info!("stopping: draining requests in flight");
    tokio::select! {
        () = proxy.shutdown() => {}
        r = stop_signal() => {
            r?;
            tracing::warn!("second stop signal: not waiting for the drain to finish");
        }
    }
    Ok(())
}

/// SIGTERM (how Kubernetes and systemd stop a process) or Ctrl-C.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
