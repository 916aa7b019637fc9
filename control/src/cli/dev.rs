//! `trellis dev [--demo]`: a control plane and one node proxy in one
//! process, like `consul agent -dev`, for trying Trellis on one machine.
//!
//! With `--demo` it also starts two demo backends, applies
//! `examples/demo.yaml` through the REST API, and waits until the proxy
//! runs that configuration, so the curl commands it prints work at once.

use super::apply::apply_documents;
use super::demo::{DEMO_NETWORK, DemoBackend, demo_documents, file_port, start_backends};
use super::error::{CliError, Exit};
use super::table::Table;
use crate::accounts::IssuedToken;
use crate::client::Client;
use crate::server::{self, ControlConfig, ControlError, RunningControl};
use anyhow::Context as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trellis_config::ProxyStatus;
use trellis_config::limits::DEFAULT_ACCOUNT;
use trellis_proxy::{ProxyConfig, RunningProxy};

/// Name given to the default account when `trellis dev` creates it.
pub const DEV_ACCOUNT_NAME: &str = "default";
/// Description of the API token `trellis dev` makes.
pub const DEV_TOKEN_DESCRIPTION: &str = "trellis dev";
/// Lifetime of the join token `trellis dev` makes for its proxy (used at
/// once; a restart with the same data directory reuses the certificate).
const DEV_JOIN_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Name of the node proxy `trellis dev` runs.
pub const DEV_PROXY_NAME: &str = "dev-node";
/// Its group; the demo's proxy association names it.
pub const DEV_PROXY_GROUP: &str = "dev";
/// Default REST API address (the CLI's default server).
pub const DEFAULT_API: &str = "127.0.0.1:7070";
/// Default outbound listener: where applications (and curl) send requests.
pub const DEFAULT_PROXY: &str = "127.0.0.1:15001";
/// Default inbound listener: where other proxies reach targets this one fronts.
pub const DEFAULT_INBOUND: &str = "127.0.0.1:15006";
/// Default admin listener (`/live`, `/ready`, `/config`).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
/// How long `--demo` waits for the proxy to run the demo configuration.
/// Push is immediate; this only bounds a broken setup.
pub const DEMO_SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests in flight get this long to finish when `trellis dev` stops:
/// a development loop wants a quick ctrl-c.
pub const DEV_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of `trellis dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Start the demo backends and apply the demo configuration.
    pub demo: bool,
    /// Where the store lives; a fresh temporary directory (removed at
    /// exit) when `None`.
    pub data_dir: Option<PathBuf>,
    /// REST API address.
    pub api: SocketAddr,
    /// Proxy outbound address.
    pub proxy: SocketAddr,
    /// Proxy inbound address.
    pub inbound: SocketAddr,
    /// Proxy admin address.
    pub admin: SocketAddr,
    /// Start the demo backends on the ports of `examples/demo.yaml` when
    /// they are free (so the file can be re-applied by hand); otherwise on
    /// ports the OS picks.
    pub demo_file_ports: bool,
}

impl DevOptions {
    /// Everything on 127.0.0.1 with OS-picked ports: for tests.
    pub fn ephemeral(demo: bool) -> Self {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            demo,
            data_dir: None,
            api: any,
            proxy: any,
            inbound: any,
            admin: any,
            demo_file_ports: false,
        }
    }
}

/// A running `trellis dev`.
#[derive(Debug)]
pub struct DevEnv {
    /// The control plane.
    pub control: RunningControl,
    /// The node proxy.
    pub proxy: RunningProxy,
    /// The demo backends (empty without `--demo`).
    pub backends: Vec<DemoBackend>,
    /// The store directory.
    pub data_dir: PathBuf,
    /// After `--demo`: the proxy's status once it ran the demo.
    pub demo_status: Option<ProxyStatus>,
    /// The API token made for the default account (printed once, in the banner).
    pub token: IssuedToken,
    temp: Option<tempfile::TempDir>,
}

impl DevEnv {
    /// Start everything, print what was started to `out`.
    pub async fn start(opts: &DevOptions, out: &mut impl Write) -> Result<DevEnv, CliError> {
        let (data_dir, temp) = match &opts.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("trellis-dev-")
                    .tempdir()
                    .context("creating a temporary data directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let control = server::start(ControlConfig {
            listen: opts.api,
            data_dir: data_dir.join("control"),
            admin_token: None,
        })
        .await
        .map_err(|e| match e {
            ControlError::Bind { addr, source } => CliError::new(
                Exit::Failure,
                format!(
                    "the REST API cannot listen on {addr}: {source}; is another `trellis dev` running? Choose another address with --api (127.0.0.1:0 picks a free port)"
                ),
            ),
            other => CliError::new(Exit::Failure, other.to_string()),
        })?;

        let token = match control
            .bootstrap_account(DEFAULT_ACCOUNT, DEV_ACCOUNT_NAME, DEV_TOKEN_DESCRIPTION)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                control.shutdown().await;
                return Err(CliError::new(
                    Exit::Failure,
                    format!("creating the default account's API token: {e}"),
                ));
            }
        };
        let join_token = match control
            .create_join_token(
                DEFAULT_ACCOUNT,
                DEV_JOIN_TOKEN_TTL,
                Some(1),
                "trellis dev: the dev proxy",
            )
            .await
        {
            Ok(t) => t,
            Err(e) => {
                control.shutdown().await;
                return Err(CliError::new(
                    Exit::Failure,
                    format!("creating the dev proxy's join token: {e}"),
                ));
            }
        };
        let mut pc = ProxyConfig::new(DEV_PROXY_NAME, control.url());
        pc.join_token = Some(join_token.into());
        pc.group = Some(DEV_PROXY_GROUP.to_string());
        pc.outbound_listen = opts.proxy;
        pc.inbound_listen = Some(opts.inbound);
        pc.admin_listen = opts.admin;
        pc.data_dir = data_dir.join("proxy");
        pc.drain_timeout = DEV_DRAIN_TIMEOUT;
        let proxy = match trellis_proxy::start(pc).await {
            Ok(p) => p,
            Err(e) => {
                control.shutdown().await;
                return Err(CliError::new(
                    Exit::Failure,
                    format!(
                        "starting the proxy: {e}; if a port is taken, choose others with --proxy, --inbound and --admin (127.0.0.1:0 picks a free port)"
                    ),
                ));
            }
        };
        let mut env = DevEnv {
            control,
            proxy,
            backends: Vec::new(),
            data_dir,
            demo_status: None,
            token,
            temp,
        };
        if opts.demo
            && let Err(e) = env.start_demo(opts, out).await
        {
            env.shutdown().await;
            return Err(e);
        }
        Ok(env)
    }

    async fn start_demo(
        &mut self,
        opts: &DevOptions,
        out: &mut impl Write,
    ) -> Result<(), CliError> {
        self.backends = start_backends(opts.demo_file_ports)
            .await
            .context("starting the demo backends")?;
        let ports: Vec<(String, u16)> = self
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.addr.port()))
            .collect();
        let docs = demo_documents(&ports)?;
        let client = Client::new(&self.control.url())?.with_token(&self.token.token);
        let before = client
            .proxy(DEV_PROXY_NAME)
            .await
            .map(|s| s.applied_version)
            .unwrap_or(0);
        writeln!(out, "Applying the demo configuration (examples/demo.yaml):")?;
        let mut lines = Vec::new();
        apply_documents(&client, "examples/demo.yaml", docs, &mut lines).await?;
        for line in String::from_utf8_lossy(&lines).lines() {
            writeln!(out, "  {line}")?;
        }
        wait_in_sync(
            &client,
            DEV_PROXY_NAME,
            DEMO_NETWORK,
            before,
            DEMO_SYNC_TIMEOUT,
        )
        .await?;
        // The proxy reported the snapshot applied; check a request really
        // goes through before telling the user it does.
        let proxy = Client::new(&self.proxy.outbound_addr.to_string())?;
        let host = format!("catalog.{DEMO_NETWORK}.trellis.internal");
        let deadline = Instant::now() + DEMO_SYNC_TIMEOUT;
        loop {
            match proxy
                .send(http::Method::GET, "/", None, &[("host", host.as_str())])
                .await
            {
                Ok(r) if r.status.is_success() => break,
                other if Instant::now() > deadline => {
                    return Err(CliError::new(
                        Exit::Failure,
                        format!(
                            "the proxy runs the demo configuration but a request to {host} failed: {}",
                            match other {
                                Ok(r) => format!("{} {}", r.status, r.body),
                                Err(e) => e.to_string(),
                            }
                        ),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let status = client.proxy(DEV_PROXY_NAME).await?;
        writeln!(
            out,
            "  proxy {DEV_PROXY_NAME} runs configuration version {} and routes the demo",
            status.applied_version
        )?;
        self.demo_status = Some(status);
        Ok(())
    }

    /// Stop the proxy (draining requests), then the control plane and the
    /// demo backends; remove a temporary data directory.
    pub async fn shutdown(self) {
        self.proxy.shutdown().await;
        self.control.shutdown().await;
        for b in self.backends {
            b.shutdown().await;
        }
        drop(self.temp);
    }

    /// What to print once everything runs: addresses, how to point the CLI
    /// here, and (with the demo) curl commands that work now.
    pub fn banner(&self, opts: &DevOptions) -> String {
        let api = self.control.url();
        let proxy = self.proxy.outbound_addr;
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(String::new());
        line("Trellis dev: a control plane and one node proxy, in this process.".into());
        line(String::new());
        let mut t = Table::new(["", "", ""]);
        t.row([
            "REST API".to_string(),
            api.clone(),
            format!("OpenAPI: {api}/v1/openapi.json"),
        ]);
        t.row([
            "proxy".to_string(),
            format!("http://{proxy}"),
            format!(
                "outbound: point HTTP clients here (proxy {DEV_PROXY_NAME}, group {DEV_PROXY_GROUP})"
            ),
        ]);
        if let Some(i) = self.proxy.inbound_addr {
            t.row([
                "inbound".to_string(),
                i.to_string(),
                "for other proxies".into(),
            ]);
        }
        t.row([
            "proxy admin".to_string(),
            format!("http://{}", self.proxy.admin_addr),
            "/live, /ready, /config".into(),
        ]);
        t.row([
            "data".to_string(),
            self.data_dir.display().to_string(),
            if self.temp.is_some() {
                "removed on exit; --data-dir keeps it".into()
            } else {
                String::new()
            },
        ]);
        for b in &self.backends {
            t.row([
                "demo backend".to_string(),
                b.addr.to_string(),
                b.name.clone(),
            ]);
        }
        // Skip the (empty) header row.
        for l in t.render().lines().skip(1) {
            line(format!("  {l}"));
        }
        for b in self.backends.iter().filter(|_| opts.demo_file_ports) {
            if let Some(p) = file_port(&b.name).filter(|p| *p != b.addr.port()) {
                line(format!(
                    "  note: port {p} was taken, so {} listens on {}; examples/demo.yaml names {p}, edit it before applying it by hand",
                    b.name,
                    b.addr.port()
                ));
            }
        }
        line(String::new());
        if api == format!("http://{DEFAULT_API}") {
            line("The CLI talks to this control plane by default:".into());
        } else {
            line(format!(
                "Point the CLI at it: export TRELLIS_SERVER={api}  (or pass --server {api})"
            ));
        }
        line(format!(
            "Every API call needs a token; this one is for the default account {DEFAULT_ACCOUNT} (shown once):"
        ));
        line(format!("  export TRELLIS_TOKEN={}", self.token.token));
        line(format!(
            "  (the admin token, for accounts and tokens, is in {})",
            self.data_dir
                .join("control")
                .join(crate::accounts::ADMIN_TOKEN_FILE)
                .display()
        ));
        line("  trellis get services".into());
        line("  trellis proxies".into());
        line(format!(
            "  curl -s -H \"Authorization: Bearer $TRELLIS_TOKEN\" {api}/v1/services"
        ));
        line(String::new());
        if opts.demo {
            let host = format!("catalog.{DEMO_NETWORK}.trellis.internal");
            line("Try the demo (the proxy routes on the Host header, or on the URI when used as an HTTP proxy):".into());
            line(format!("  curl -s -H 'host: {host}' http://{proxy}/"));
            line(format!("  curl -s -x http://{proxy} http://{host}/"));
            line(format!(
                "  curl -s -H 'host: {host}' -H 'x-canary: true' http://{proxy}/   # header rule: always catalog-v2"
            ));
            line(format!(
                "  curl -s -H 'host: {host}' http://{proxy}/v2/items   # path rule: catalog-v2"
            ));
            line(format!(
                "  curl -s -H 'host: reviews.{DEMO_NETWORK}.trellis.internal' http://{proxy}/   # reviews: catalog-v1"
            ));
            line(format!(
                "  for i in $(seq 100); do curl -s -H 'host: {host}' http://{proxy}/ | grep '\"backend\"'; done | sort | uniq -c   # 80/20 split"
            ));
            line("  trellis describe service catalog".into());
        } else {
            line("Nothing is configured yet: apply a file with `trellis apply -f FILE`, or restart with --demo.".into());
        }
        line(String::new());
        line(
            "(`trellis` here is `cargo run --release --bin trellis --` when it is not installed.)"
                .into(),
        );
        line("Press Ctrl-C to stop.".into());
        s
    }
}

/// Wait until `proxy` reports a configuration newer than `before` applied,
/// in sync, with `network` in its scope.
pub async fn wait_in_sync(
    client: &Client,
    proxy: &str,
    network: &str,
    before: u64,
    timeout: Duration,
) -> Result<ProxyStatus, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = client.proxy(proxy).await;
        if let Ok(s) = &last
            && s.in_sync
            && s.applied_version > before
            && s.scope.iter().any(|n| n == network)
        {
            return Ok(s.clone());
        }
        if Instant::now() > deadline {
            let what = match last {
                Ok(s) => format!(
                    "applied version {}, desired {}, scope [{}], last error: {}",
                    s.applied_version,
                    s.desired_version,
                    s.scope.join(", "),
                    s.last_error.as_deref().unwrap_or("none")
                ),
                Err(e) => e.to_string(),
            };
            return Err(CliError::new(
                Exit::Failure,
                format!(
                    "proxy {proxy} did not run a configuration with network {network} within {}s ({what})",
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves on ctrl-c, or SIGTERM on Unix.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Run until `stop` resolves, then shut everything down.
pub async fn run(
    opts: &DevOptions,
    out: &mut impl Write,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    let env = DevEnv::start(opts, out).await?;
    write!(out, "{}", env.banner(opts))?;
    out.flush()?;
    stop.await;
    writeln!(out, "Stopping: draining the proxy, then the control plane.")?;
    out.flush()?;
    env.shutdown().await;
    writeln!(out, "Stopped.")?;
    Ok(())
}
