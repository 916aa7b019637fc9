//! The proxy's HTTP client to the control plane: register, watch, ack.

use super::lines::LineTooLong;
use crate::forward::connect::{MeshConnector, Purpose};
use crate::identity::MeshTls;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Time to connect to the control plane.
pub const CONTROL_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Time a register or ack call, or the head of a watch, may take.
pub const CONTROL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Most of an error answer's body quoted in a log line.
const ERROR_BODY_LIMIT: usize = 1024;

/// Why talking to the control plane failed. Each ends a watch session;
/// the proxy keeps serving and reconnects after a backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error("cannot reach the control plane at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url} timed out after {after:?}")]
    Timeout {
        method: Method,
        url: String,
        after: Duration,
    },
    #[error("the watch stream was silent for {0:?} (no heartbeat); reconnecting")]
    Silent(Duration),
    #[error("the control plane ended the watch stream")]
    Ended,
    #[error("reading the watch stream failed: {0}")]
    Stream(String),
    #[error(transparent)]
    Line(#[from] LineTooLong),
    #[error("cannot build a request to the control plane: {0}")]
    Request(String),
}

/// Client for one control plane URL.
#[derive(Debug, Clone)]
pub(crate) struct ControlClient {
    http: Client<MeshConnector, Full<Bytes>>,
    base: String,
    /// `https://` + the authority of `base`: the proxy-facing endpoints,
    /// when this proxy speaks mesh TLS.
    tls_base: Option<String>,
}

impl ControlClient {
    /// A client for `base` (`http://host:port`, trailing `/` ignored) in
    /// plaintext mode (no mesh identity).
    #[cfg(test)]
    pub(crate) fn new(base: &str) -> Self {
        Self::with_mesh(base, &MeshTls::new(false))
    }

    /// A client that reaches the proxy-facing endpoints with mesh TLS when
    /// `mesh` requires it (the join itself is plain HTTP).
    pub(crate) fn with_mesh(base: &str, mesh: &MeshTls) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONTROL_CONNECT_TIMEOUT));
        let connector = MeshConnector::new(connector, mesh.clone(), Purpose::Control);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let base = base.trim_end_matches('/').to_string();
        let tls_base = if mesh.is_required() {
            base.strip_prefix("http://")
                .map(|rest| format!("https://{rest}"))
        } else {
            None
        };
        Self {
            http,
            base,
            tls_base,
        }
    }

    /// The base URL of proxy-facing endpoints.
    fn proxy_base(&self) -> &str {
        self.tls_base.as_deref().unwrap_or(&self.base)
    }

    /// POST `value` to the plain API at `path` with a bearer token, and
    /// read a JSON answer (the join).
    pub(crate) async fn post_plain_for<T: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        value: &T,
        bearer: &str,
    ) -> Result<R, SyncError> {
        let url = format!("{}{path}", self.base);
        self.exchange_json(url, value, Some(bearer)).await
    }

    /// POST `value` to a proxy-facing endpoint and read a JSON answer.
    pub(crate) async fn post_for<T: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        value: &T,
    ) -> Result<R, SyncError> {
        let url = format!("{}{path}", self.proxy_base());
        self.exchange_json(url, value, None).await
    }

    async fn exchange_json<T: Serialize, R: DeserializeOwned>(
        &self,
        url: String,
        value: &T,
        bearer: Option<&str>,
    ) -> Result<R, SyncError> {
        let body = serde_json::to_vec(value).map_err(|e| SyncError::Request(e.to_string()))?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(token) = bearer {
            let v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                SyncError::Request("the join token is not a valid header value".into())
            })?;
            req = req.header(http::header::AUTHORIZATION, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SyncError::Request(e.to_string()))?;
        let resp = self.send(Method::POST, &url, req).await?;
        if !resp.status().is_success() {
            return Err(status_error(Method::POST, url, resp).await);
        }
        let bytes = match tokio::time::timeout(
            CONTROL_REQUEST_TIMEOUT,
            Limited::new(resp.into_body(), ERROR_BODY_LIMIT * 64).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            _ => {
                return Err(SyncError::Stream(format!(
                    "cannot read the answer of {url}"
                )));
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            SyncError::Stream(format!("the answer of {url} is not what was expected: {e}"))
        })
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `POST {base}{path}` with a JSON body; any 2xx is success.
    pub(crate) async fn post_json<T: Serialize>(
        &self,
        path: &str,
        value: &T,
    ) -> Result<(), SyncError> {
        let url = format!("{}{path}", self.proxy_base());
        let body = serde_json::to_vec(value).map_err(|e| SyncError::Request(e.to_string()))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SyncError::Request(e.to_string()))?;
        let resp = self.send(Method::POST, &url, req).await?;
        if resp.status().is_success() {
            // Drain the small body so the connection goes back to the pool.
            let _ = tokio::time::timeout(
                CONTROL_REQUEST_TIMEOUT,
                Limited::new(resp.into_body(), ERROR_BODY_LIMIT * 64).collect(),
            )
            .await;
            return Ok(());
        }
        Err(status_error(Method::POST, url, resp).await)
    }

    /// `GET {base}/v1/proxies/{name}/watch?version={version}`: the
    /// NDJSON body once the head says 200.
    pub(crate) async fn watch(&self, name: &str, version: u64) -> Result<Incoming, SyncError> {
        let url = format!(
            "{}/v1/proxies/{name}/watch?version={version}",
            self.proxy_base()
        );
        let req = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(ACCEPT, HeaderValue::from_static("application/x-ndjson"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| SyncError::Request(e.to_string()))?;
        let resp = self.send(Method::GET, &url, req).await?;
        if resp.status() == StatusCode::OK {
            return Ok(resp.into_body());
        }
        Err(status_error(Method::GET, url, resp).await)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, SyncError> {
        match tokio::time::timeout(CONTROL_REQUEST_TIMEOUT, self.http.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(SyncError::Unreachable {
                url: self.base.clone(),
                detail: crate::forward::source_chain(&e),
            }),
            Err(_) => Err(SyncError::Timeout {
                method,
                url: url.to_string(),
                after: CONTROL_REQUEST_TIMEOUT,
            }),
        }
    }
}

async fn status_error(method: Method, url: String, resp: http::Response<Incoming>) -> SyncError {
    let status = resp.status();
    let body = match tokio::time::timeout(
        CONTROL_REQUEST_TIMEOUT,
        Limited::new(resp.into_body(), ERROR_BODY_LIMIT).collect(),
    )
    .await
    {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        _ => String::from("(body unreadable or too long)"),
    };
    SyncError::Status {
        method,
        url,
        status,
        body,
    }
}
