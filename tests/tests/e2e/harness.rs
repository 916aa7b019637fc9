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
    /// An API token of `DEFAULT_ACCOUNT`, which [`Control::api`] sends.
    pub token: &'static str,
}

impl Control {
    /// Start one on a free port with the store in `data_dir`.
    pub async fn start_in(data_dir: &Path) -> Control {
        let running = trellis_control::server::start(ControlConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            admin_token: None,
        })
        .await
        .expect("control plane starts");
        let token = default_token(&running).await;
        Control {
            addr: running.addr,
            running: Some(running),
            token,
        }
    }

    /// The REST client for it.
    pub fn api(&self) -> Api {
        Api {
            addr: self.addr,
            token: Some(self.token),
        }
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
    /// Sent as `Authorization: Bearer`; `None` sends no token.
    pub token: Option<&'static str>,
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
        let bearer;
        if let Some(t) = self.token
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            bearer = format!("Bearer {t}");
            h.push(("authorization", &bearer));
        }
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

/// A proxy in this process.
pub struct Proxy {
    pub running: Option<trellis_proxy::RunningProxy>,
    pub outbound: SocketAddr,
    pub inbound: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl Proxy {
    /// Settings for a proxy on loopback ports joined to `networks`.
    pub fn config(
        name: &str,
        control: &str,
        data_dir: &Path,
        networks: &[&str],
    ) -> trellis_proxy::ProxyConfig {
        let mut cfg = trellis_proxy::ProxyConfig::loopback(name, control, data_dir);
        cfg.service_networks = networks.iter().map(|s| s.to_string()).collect();
        cfg
    }

    /// Start one. Without a join token in `cfg`, one is made on its
    /// control plane first (every test proxy joins the mesh and speaks
    /// mTLS), unless the control plane is down.
    pub async fn start(mut cfg: trellis_proxy::ProxyConfig) -> Proxy {
        if cfg.join_token.is_none() {
            cfg.join_token = join_token_for(&cfg.control_url).await.map(Into::into);
        }
        let running = trellis_proxy::start(cfg).await.expect("proxy starts");
        Proxy {
            outbound: running.outbound_addr,
            inbound: running.inbound_addr,
            admin: running.admin_addr,
            running: Some(running),
        }
    }

    /// Stop it and release its ports.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// GET through the outbound listener with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> HttpResponse {
        http1_request(self.outbound, host, "GET", path, &[], Vec::new())
            .await
            .expect("request through the proxy")
    }
}

/// Name of the echo backend that answered, from its JSON body.
pub fn backend_of(r: &HttpResponse) -> String {
    r.json()
        .ok()
        .and_then(|v| v["backend"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<{} {}>", r.status, r.text()))
}

/// Wait until a GET of `host``path` through `proxy` is answered by `backend`.
pub async fn wait_for_backend(proxy: &Proxy, host: &str, path: &str, backend: &str) {
    let (outbound, host, path, backend) = (
        proxy.outbound,
        host.to_string(),
        path.to_string(),
        backend.to_string(),
    );
    let what = format!("{host}{path} routed to {backend}");
    trellis_tests::wait_until_async(&what, PUSH_WAIT, || {
        let (host, path, backend) = (host.clone(), path.clone(), backend.clone());
        async move {
            match http1_request(outbound, &host, "GET", &path, &[], Vec::new()).await {
                Ok(r) => backend_of(&r) == backend,
                Err(_) => false,
            }
        }
    })
    .await
    .unwrap();
}

/// Wait until the control plane reports `proxy` connected and in sync.
pub async fn wait_in_sync(api: Api, proxy: &str) -> Value {
    let path = format!("/v1/proxies/{proxy}");
    trellis_tests::eventually(&format!("{proxy} in sync"), PUSH_WAIT, || {
        let path = path.clone();
        async move {
            let (code, v) = api.get(&path).await;
            (code == 200 && v["inSync"] == true).then_some(v)
        }
    })
    .await
    .unwrap()
}

/// A network `net`, one target group per backend (named like the backend),
/// a service `svc` whose listener forwards to the first group by default,
/// its association with `net`. Returns the service's host.
pub async fn basic_mesh(
    api: Api,
    backends: &[&trellis_tests::BackendHandle],
    listener: Value,
) -> String {
    api.put("service-networks", serde_json::json!({"name": "net"}))
        .await;
    for b in backends {
        api.put("target-groups", serde_json::json!({"name": b.name(), "port": b.port(), "targets": [{"address": "127.0.0.1"}]})).await;
    }
    api.put("services", serde_json::json!({"name": "svc", "customDomain": "svc.example.com", "listeners": [listener]})).await;
    api.put(
        "service-associations",
        serde_json::json!({"name": "svc-net", "serviceNetwork": "net", "service": "svc"}),
    )
    .await;
    "svc.net.trellis.internal".to_string()
}

/// A forward action to one target group.
pub fn forward(tg: &str) -> Value {
    serde_json::json!({"forward": {"targetGroups": [{"targetGroup": tg, "weight": 1}]}})
}

impl Control {
    /// Start one on a given address (to come back where proxies expect it).
    pub async fn start_at(data_dir: &Path, addr: SocketAddr) -> Control {
        let running = trellis_control::server::start(ControlConfig {
            listen: addr,
            data_dir: data_dir.to_path_buf(),
            admin_token: None,
        })
        .await
        .expect("control plane starts on its old address");
        let token = default_token(&running).await;
        Control {
            addr: running.addr,
            running: Some(running),
            token,
        }
    }
}

/// Run the `trellis` CLI in process; returns the exit code and everything
/// it printed (standard output, then the error message if any).
pub async fn run_cli(args: Vec<String>) -> (u8, String) {
    let args = with_cli_token(args);
    let mut out = Vec::new();
    let result = trellis_control::cli::run(args, &mut out).await;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(()) => (0, text),
        Err(e) => {
            text.push_str(&e.message);
            (e.exit.code(), text)
        }
    }
}

/// Control planes started here and their default-account tokens, so
/// [`run_cli`] can pass the token of the control plane it talks to.
static TOKENS: std::sync::Mutex<Vec<(SocketAddr, &'static str)>> =
    std::sync::Mutex::new(Vec::new());

/// Make sure `DEFAULT_ACCOUNT` exists and make a token for it; leaked so
/// that [`Api`] stays `Copy`.
pub async fn default_token(running: &RunningControl) -> &'static str {
    let issued = running
        .bootstrap_account(
            trellis_config::limits::DEFAULT_ACCOUNT,
            "default",
            "e2e harness",
        )
        .await
        .expect("default account token");
    let token: &'static str = Box::leak(issued.token.into_boxed_str());
    TOKENS.lock().unwrap().push((running.addr, token));
    token
}

/// Add `--token` for the `--server` given, if this process started it and
/// the arguments name no token.
fn with_cli_token(mut args: Vec<String>) -> Vec<String> {
    if args
        .iter()
        .any(|a| a == "--token" || a.starts_with("--token="))
    {
        return args;
    }
    let server = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--server=").map(str::to_string).or_else(|| {
            (a == "--server")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    });
    let Some(addr) = server
        .as_deref()
        .map(|s| s.trim_start_matches("http://").trim_end_matches('/'))
        .and_then(|s| s.parse::<SocketAddr>().ok())
    else {
        return args;
    };
    let token = TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(a, _)| *a == addr)
        .map(|(_, t)| *t);
    if let Some(t) = token {
        args.insert(1.min(args.len()), format!("--token={t}"));
    }
    args
}

impl Api {
    /// The same client with another token (`None`: no token at all).
    pub fn with_token(self, token: Option<&'static str>) -> Api {
        Api { token, ..self }
    }
}

/// A join token (1 h, unlimited uses) from the control plane at `url`;
/// `None` when it does not answer.
pub async fn join_token_for(url: &str) -> Option<String> {
    let addr: SocketAddr = url
        .strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()?;
    let body =
        serde_json::to_vec(&serde_json::json!({"ttlSeconds": 3600, "maxUses": null})).ok()?;
    let api_token = TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(a, _)| *a == addr)
        .map(|(_, t)| format!("Bearer {t}"))?;
    let r = http1_request(
        addr,
        "control",
        "POST",
        "/v1/join-tokens",
        &[
            ("content-type", "application/json"),
            ("authorization", &api_token),
        ],
        body,
    )
    .await
    .ok()?;
    assert_eq!(
        r.status.as_u16(),
        201,
        "creating a join token: {}",
        r.text()
    );
    r.json().ok()?["token"].as_str().map(str::to_string)
}

/// A join token (1 h, unlimited uses) of the account whose API token
/// `api` carries: what a proxy of that account joins with.
pub async fn join_token(api: Api) -> String {
    let r = api
        .call(
            "POST",
            "/v1/join-tokens",
            &serde_json::json!({"ttlSeconds": 3600, "maxUses": null}),
            &[],
        )
        .await;
    assert_eq!(
        r.status.as_u16(),
        201,
        "creating a join token: {}",
        r.text()
    );
    r.json().unwrap()["token"].as_str().unwrap().to_string()
}

/// A mesh identity made the way a proxy makes one: a key here, a CSR
/// signed through `POST /v1/join` with a fresh join token. Returns the
/// join answer and the TLS state (client configs to peer inbounds).
pub async fn join_mesh(api: Api, name: &str) -> (Value, trellis_proxy::identity::MeshState) {
    let token = join_token(api).await;
    let placeholder: trellis_proxy::identity::WorkloadIdentity =
        format!("spiffe://trellis.invalid/account/000000000000/workload/{name}")
            .parse()
            .unwrap();
    let (key, csr) = trellis_proxy::identity::new_csr(&placeholder).unwrap();
    let auth = format!("Bearer {token}");
    let r = api
        .call(
            "POST",
            "/v1/join",
            &serde_json::json!({"name": name, "csr": csr}),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "join: {}", r.text());
    let v: Value = r.json().unwrap();
    let identity =
        trellis_proxy::identity::Identity::new(key, v["certificate"].as_str().unwrap()).unwrap();
    let trust =
        trellis_proxy::identity::TrustBundle::from_pem(v["caBundle"].as_str().unwrap()).unwrap();
    let state = trellis_proxy::identity::MeshState::new(identity, trust).unwrap();
    (v, state)
}

/// One call to the control plane's proxy-facing endpoints, over TLS with
/// the proxy certificate of `mesh` (the control plane verified by IP).
pub async fn proxy_call(
    api: Api,
    mesh: &trellis_proxy::identity::MeshState,
    method: &str,
    path: &str,
    body: &Value,
) -> HttpResponse {
    let mut conn = trellis_tests::Http1Connection::connect_tls_to(
        api.addr,
        std::sync::Arc::clone(&mesh.control),
        &api.addr.ip().to_string(),
    )
    .await
    .expect("TLS to the control plane");
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    conn.request(
        "control",
        method,
        path,
        &[("content-type", "application/json")],
        bytes,
    )
    .await
    .expect("proxy call")
}

/// Join as proxy `registration["name"]` of `api`'s account and register
/// over the proxy-facing TLS endpoint, as a real proxy does; returns the
/// registration answer.
pub async fn register_proxy(api: Api, registration: Value) -> HttpResponse {
    let name = registration["name"].as_str().unwrap().to_string();
    let (_, mesh) = join_mesh(api, &name).await;
    proxy_call(api, &mesh, "POST", "/v1/proxies", &registration).await
}
