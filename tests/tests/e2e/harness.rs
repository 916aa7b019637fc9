//! Starting real control planes and proxies on loopback for the tests, and
//! a small JSON client for the REST API.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trellis_control::server::{ControlConfig, RunningControl};
use trellis_tests::{HttpResponse, http1_request};

/// Generous bound for waits that depend on push and apply.
pub const PUSH_WAIT: Duration = Duration::from_secs(20);

/// A control plane in this process, with its data directory.
pub struct Control {
    pub running: Option<RunningControl>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Control {
    /// Start one on a free port with the store in `data_dir`.
    pub async fn start_in(data_dir: &Path) -> Control {
        let running = trellis_control::server::start(ControlConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
        })
        .await
        .expect("control plane starts");
        Control {
            addr: running.addr,
            running: Some(running),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The REST client for it.
    pub fn api(&self) -> Api {
        Api { addr: self.addr }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop it (the store file is released).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A REST client that returns status, headers and JSON.
#[derive(Clone, Copy)]
pub struct Api {
    pub addr: SocketAddr,
}

impl Api {
    /// One call; `body` is sent as JSON when not `Null`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body).unwrap()
        };
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        http1_request(self.addr, "control", method, path, &h, bytes)
            .await
            .expect("API call")
    }

    /// PUT (upsert) and expect success; returns the resource.
    pub async fn put(&self, collection: &str, spec: Value) -> Value {
        let name = spec["name"].as_str().unwrap().to_string();
        let r = self
            .call("PUT", &format!("/v1/{collection}/{name}"), &spec, &[])
            .await;
        assert!(
            r.status.is_success(),
            "PUT {collection}/{name}: {} {}",
            r.status,
            r.text()
        );
        r.json().unwrap()
    }

    /// GET and return status and JSON (Null for an empty body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.call("GET", path, &Value::Null, &[]).await;
        (r.status.as_u16(), r.json().unwrap_or(Value::Null))
    }
}

/// Path of a binary of this workspace (built by `cargo build --bins`,
/// which scripts/test.sh runs before the tests).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-xxxx -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}
