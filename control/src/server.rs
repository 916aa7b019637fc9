//! Starting and stopping a control plane: used by the `trellis-control`
//! binary, by `trellis dev`, and by the end-to-end tests.

use crate::accounts::{AccountError, Accounts, AdminToken, IssuedToken};
use crate::api::{self, AppState};
use crate::join::JoinTokens;
use crate::mesh::{IdentitySettings, Mesh};
use crate::metrics::{ControlMetrics, TimedStore};
use crate::push::Hub;
use crate::repo::Repo;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// How long a stopping control plane lets API requests in flight finish
/// (watch streams end at once; proxies reconnect).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// File name of the embedded store inside the data directory.
pub const STORE_FILE: &str = "trellis.redb";

/// What a control plane needs to run.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Address of the REST API (and the proxies' watch streams); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the embedded store file (`trellis.redb`), created if missing.
    pub data_dir: PathBuf,
    /// The admin token (it bootstraps accounts and their API tokens).
    /// `None`: read `<data_dir>/admin-token`, made on first start (0600).
    pub admin_token: Option<String>,
}

/// Why a control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The store could not be opened.
    #[error("opening the store in {path}: {message}")]
    Store {
        /// The data directory.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The admin token could not be read or made.
    #[error("admin token: {0}")]
    AdminToken(#[from] crate::accounts::admin::AdminTokenError),
    /// The mesh CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    /// The API address could not be bound.
    #[error(
        "binding {addr}: {source} (is another trellis-control running? choose another address with --listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running control plane.
#[derive(Debug)]
pub struct RunningControl {
    /// The bound API address.
    pub addr: SocketAddr,
    accounts: Accounts,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    tokens: JoinTokens,
}

impl RunningControl {
    /// `http://<addr>`, the base URL for clients and proxies.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Make sure `account` exists and issue an API token for it, in
    /// process: how `trellis dev` and the tests get their first token.
    pub async fn bootstrap_account(
        &self,
        account: &str,
        name: &str,
        description: &str,
    ) -> Result<IssuedToken, AccountError> {
        self.accounts.bootstrap(account, name, description).await
    }

    /// Create a join token for `account` (what `trellis dev` gives its own
    /// proxy); its value is returned once and never logged.
    pub async fn create_join_token(
        &self,
        account: &str,
        ttl: std::time::Duration,
        max_uses: Option<u32>,
        description: &str,
    ) -> Result<String, crate::join::JoinError> {
        let new = self
            .tokens
            .create(
                &crate::audit::Actor::new(account, crate::audit::BOOTSTRAP_ACTOR),
                ttl,
                max_uses,
                Some(description.to_owned()),
            )
            .await?;
        Ok(new.value)
    }

    /// Stop serving, close watch streams and release the store file.
    /// Requests in flight get [`SHUTDOWN_GRACE`] to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.server)
            .await
            .is_err()
        {
            tracing::warn!("requests still running after the shutdown grace period; cutting them");
            self.server.abort();
            let _ = (&mut self.server).await;
        }
    }
}

/// Open the store, start the API, the compiler and the push loop, with the
/// default identity settings.
pub async fn start(cfg: ControlConfig) -> Result<RunningControl, ControlError> {
    start_with(cfg, IdentitySettings::default()).await
}

/// [`start`] with identity settings (trust domain, certificate lifetime,
/// server names).
pub async fn start_with(
    cfg: ControlConfig,
    identity: IdentitySettings,
) -> Result<RunningControl, ControlError> {
    let store_err = |message: String| ControlError::Store {
        path: cfg.data_dir.clone(),
        message,
    };
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| store_err(e.to_string()))?;
    let store: Arc<dyn Store> = EmbeddedStore::open(&cfg.data_dir.join(STORE_FILE))
        .map_err(|e| store_err(e.to_string()))?;
    let admin = match &cfg.admin_token {
        Some(value) => AdminToken::from_value(value)?,
        None => AdminToken::load_or_create(&cfg.data_dir)?,
    };
    start_with_store(cfg, identity, store, admin).await
}

/// Start over any store (the embedded one, or etcd); the mesh CA lives in
/// `cfg.data_dir` whatever the store.
pub async fn start_with_store(
    cfg: ControlConfig,
    identity: IdentitySettings,
    store: Arc<dyn Store>,
    admin: AdminToken,
) -> Result<RunningControl, ControlError> {
    let listen = cfg.listen;
    let mesh = Mesh::open(&cfg.data_dir, &identity)?;
    let tls = mesh.server_config()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(ControlMetrics::new());
    let store = TimedStore::wrap(store, Arc::clone(&metrics));
    let hub = Hub::start(
        Arc::clone(&store),
        shutdown_rx.clone(),
        Arc::clone(&metrics),
    )
    .await
    .map_err(|e| ControlError::Store {
        path: PathBuf::new(),
        message: e.to_string(),
    })?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ControlError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ControlError::Bind {
        addr: listen,
        source,
    })?;
    let accounts = Accounts::new(Arc::clone(&store), admin);
    let tokens = JoinTokens::new(Arc::clone(&store));
    let state = AppState {
        tokens: tokens.clone(),
        accounts: accounts.clone(),
        repo: Repo::new(store),
        hub,
        shutdown: shutdown_rx.clone(),
        metrics,
        mesh,
    };
    let app = api::router(state.clone());
    let proxy_app = api::proxy_router(state);
    let server = tokio::spawn(crate::mesh::serve(
        listener,
        app,
        proxy_app,
        tls,
        shutdown_rx,
    ));
    tracing::info!(%addr, trust_domain = %identity.trust_domain, "control plane listening");
    Ok(RunningControl {
        addr,
        accounts,
        shutdown,
        server,
        tokens,
    })
}
