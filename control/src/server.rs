//! Starting and stopping a control plane: used by the `trellis-control`
//! binary, by `trellis dev`, and by the end-to-end tests.
//!
//! INTERFACE STUB — being implemented.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What a control plane needs to run.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Address of the REST API (and the proxies' watch streams); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the embedded store file (`trellis.redb`), created if missing.
    pub data_dir: PathBuf,
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
    /// The API address could not be bound.
    #[error("binding {addr}: {source}")]
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
}

impl RunningControl {
    /// `http://<addr>`, the base URL for clients and proxies.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving, close watch streams and release the store file.
    pub async fn shutdown(self) {
        todo!()
    }
}

/// Open the store, start the API, the compiler and the push loop.
pub async fn start(cfg: ControlConfig) -> Result<RunningControl, ControlError> {
    let _ = cfg;
    todo!()
}
