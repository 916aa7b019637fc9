//! `trellis-control`: the control-plane server.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use trellis_config::identity::DEFAULT_TRUST_DOMAIN;
use trellis_control::mesh::IdentitySettings;
use trellis_control::server::{ControlConfig, start_with};

/// Default API address: loopback, so a fresh install exposes nothing.
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

#[derive(Debug, Parser)]
#[command(
    name = "trellis-control",
    version,
    about = "Trellis control plane: REST API, embedded store, config push to proxies"
)]
struct Args {
    /// Address of the REST API and the proxies' watch streams.
    #[arg(long, env = "TRELLIS_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory of the embedded store (one file, trellis.redb).
    #[arg(long, env = "TRELLIS_DATA_DIR", default_value = "./trellis-data")]
    data_dir: PathBuf,
    /// File holding the admin token (it creates accounts and their API
    /// tokens). Without it and TRELLIS_ADMIN_TOKEN, one is made on first
    /// start in <data-dir>/admin-token (mode 0600).
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// SPIFFE trust domain of the mesh (fixed when the CA in <data-dir>/ca is created).
    #[arg(long, env = "TRELLIS_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Lifetime of proxy certificates (e.g. 24h, 10m; 5s at least).
    #[arg(long, env = "TRELLIS_CERT_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    cert_ttl: std::time::Duration,
    /// Extra DNS name or IP address in the control plane's server
    /// certificate (repeatable); loopback names are always in it.
    #[arg(
        long = "server-name",
        env = "TRELLIS_SERVER_NAMES",
        value_delimiter = ','
    )]
    server_names: Vec<String>,
}

/// The admin token from the file or the environment, if given.
fn admin_token(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.admin_token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading --admin-token-file {}: {e}", path.display()))?;
        return Ok(Some(text.trim().to_string()));
    }
    Ok(std::env::var("TRELLIS_ADMIN_TOKEN")
        .ok()
        .filter(|v| !v.trim().is_empty()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let running = start_with(
        ControlConfig {
            listen: args.listen,
            data_dir: args.data_dir.clone(),
            admin_token: admin_token(&args)?,
        },
        IdentitySettings {
            trust_domain: args.trust_domain.clone(),
            cert_ttl: args.cert_ttl,
            server_names: args.server_names.clone(),
        },
    )
    .await?;
    tracing::info!(api = %running.url(), data_dir = %args.data_dir.display(), "trellis-control ready");
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
