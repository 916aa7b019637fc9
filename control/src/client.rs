//! A small client of the control plane's REST API, used by the `trellis`
//! CLI and by the end-to-end tests.
//!
//! It speaks plain HTTP/1.1 through hyper's pooled client and works on JSON
//! values, so it keeps working when the server adds fields. Every failure is
//! a [`ClientError`] that says who is to blame: the connection (the control
//! plane is not reachable), the server's answer (an [`ApiError`] with its
//! status, code and field errors), or an answer that is not the API's shape.

use crate::target_health::TargetList;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::time::Duration;
use trellis_config::{FieldError, Kind, ProxyStatus};

/// The address the CLI talks to when neither `--server` nor
/// `TRELLIS_SERVER` says otherwise: where `trellis dev` serves its API.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// How long one request may take, connection included. The API answers
/// from memory or a local file, so anything slower means it is stuck.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Response header set by `PUT` when the stored spec already equalled the
/// one sent (nothing was written, the version did not change).
pub const UNCHANGED_HEADER: &str = "x-trellis-unchanged";

/// The error body of the API: `{"error", "message", "fieldErrors"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// Machine-readable code: `validation_failed`, `not_found`, `conflict`,
    /// `precondition_failed`, `bad_request`, ...
    #[serde(default)]
    pub error: String,
    /// What went wrong, in words.
    #[serde(default)]
    pub message: String,
    /// For `validation_failed`: every problem with its field path.
    #[serde(default)]
    pub field_errors: Vec<FieldError>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL cannot be used.
    #[error("invalid server URL '{url}': {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made (nothing listens there, or the network
    /// is in the way).
    #[error(
        "cannot reach the control plane at {server}: {reason}; is it running? Start one with `trellis dev`, or point the CLI elsewhere with --server or TRELLIS_SERVER"
    )]
    Unreachable {
        /// Base URL of the server.
        server: String,
        /// The cause, e.g. "connection refused".
        reason: String,
    },
    /// The server did not answer within [`REQUEST_TIMEOUT`].
    #[error("the control plane at {server} did not answer {method} {path} within {secs}s")]
    Timeout {
        /// Base URL of the server.
        server: String,
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The timeout in seconds.
        secs: u64,
    },
    /// The connection broke during the exchange.
    #[error("{method} {path}: {reason}")]
    Transport {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The cause.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{}", api_error_text(*.status, .body))]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error body (empty fields when the body was not JSON).
        body: ApiError,
    },
    /// The server answered something that is not the API's shape.
    #[error("{method} {path}: unexpected answer ({status}): {reason}")]
    Unexpected {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The HTTP status.
        status: StatusCode,
        /// What did not fit.
        reason: String,
    },
}

fn api_error_text(status: StatusCode, body: &ApiError) -> String {
    let mut s = if body.message.is_empty() {
        format!("the control plane answered {status}")
    } else {
        body.message.clone()
    };
    for fe in &body.field_errors {
        s.push_str("\n  ");
        s.push_str(&fe.to_string());
    }
    s
}

impl ClientError {
    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// Whether the server said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }
}

/// A raw answer: status, headers and the body parsed as JSON (`Null` when
/// empty).
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Parsed body.
    pub body: serde_json::Value,
}

impl Response {
    /// The resource version from the `ETag` header (`"3"` -> 3).
    pub fn etag_version(&self) -> Option<u64> {
        self.headers
            .get(header::ETAG)?
            .to_str()
            .ok()?
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .ok()
    }
}

/// What a `PUT` upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The resource did not exist (201).
    Created,
    /// The stored spec changed; the version grew by one (200).
    Configured,
    /// The stored spec was already equal; nothing was written (200 with
    /// `x-trellis-unchanged: true`).
    Unchanged,
}

impl PutOutcome {
    /// The word `trellis apply` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            PutOutcome::Created => "created",
            PutOutcome::Configured => "configured",
            PutOutcome::Unchanged => "unchanged",
        }
    }
}

/// One page of a collection.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// Resources in API form.
    pub items: Vec<serde_json::Value>,
    /// Token of the next page, `None` on the last one.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// A client of one control plane.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// API token sent as `Authorization: Bearer` (never printed by Debug).
    token: Option<std::sync::Arc<str>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// A client of the control plane at `server` (`http://host:port`; a
    /// bare `host:port` is taken as http). HTTPS is not served yet.
    pub fn new(server: &str) -> Result<Self, ClientError> {
        let base = normalize_server(server)?;
        let http = HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new());
        Ok(Self {
            base,
            http,
            timeout: REQUEST_TIMEOUT,
            token: None,
        })
    }

    /// Send `token` as `Authorization: Bearer` on every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(std::sync::Arc::from(token));
        self
    }

    /// Use another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL, e.g. `http://127.0.0.1:7070`.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// Send one request and return whatever the server answered, error
    /// statuses included (only transport problems are errors here).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let uri = format!("{}{}", self.base, path);
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ClientError::BadUrl {
                url: uri.clone(),
                reason: e.to_string(),
            })?;

        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                if e.is_connect() {
                    ClientError::Unreachable {
                        server: self.base.clone(),
                        reason: root_cause(&e),
                    }
                } else {
                    ClientError::Transport {
                        method: method.clone(),
                        path: path.to_string(),
                        reason: root_cause(&e),
                    }
                }
            })?;
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| ClientError::Transport {
                    method: method.clone(),
                    path: path.to_string(),
                    reason: root_cause(&e),
                })?
                .to_bytes();
            Ok::<_, ClientError>((parts, bytes))
        };
        let (parts, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                server: self.base.clone(),
                method: method.clone(),
                path: path.to_string(),
                secs: self.timeout.as_secs(),
            })??;

        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                // A plain-text answer (`/healthz`) is kept as a string.
                Err(_) if parts.status.is_success() => {
                    serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                }
                // An error page that is not JSON: keep its text as the message.
                Err(_) => serde_json::json!({
                    "message": String::from_utf8_lossy(&bytes).trim().to_string()
                }),
            }
        };
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Like [`Client::send`], but an error status becomes
    /// [`ClientError::Api`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let resp = self.send(method, path, body, headers).await?;
        if resp.status.is_success() {
            return Ok(resp);
        }
        let body = serde_json::from_value::<ApiError>(resp.body.clone()).unwrap_or(ApiError {
            error: String::new(),
            message: String::new(),
            field_errors: Vec::new(),
        });
        Err(ClientError::Api {
            status: resp.status,
            body,
        })
    }

    /// `PUT /v1/{collection}/{name}`: create or update by name.
    pub async fn put(
        &self,
        kind: Kind,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<(PutOutcome, serde_json::Value), ClientError> {
        let resp = self
            .call(Method::PUT, &item_path(kind, name), Some(spec), &[])
            .await?;
        let unchanged = resp
            .headers
            .get(UNCHANGED_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let outcome = if resp.status == StatusCode::CREATED {
            PutOutcome::Created
        } else if unchanged {
            PutOutcome::Unchanged
        } else {
            PutOutcome::Configured
        };
        Ok((outcome, resp.body))
    }

    /// `POST /v1/{collection}`: create; 409 when the name is taken.
    pub async fn create(
        &self,
        kind: Kind,
        spec: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let path = format!("/v1/{}", kind.collection());
        Ok(self.call(Method::POST, &path, Some(spec), &[]).await?.body)
    }

    /// `GET /v1/{collection}/{idOrName}`.
    pub async fn get(
        &self,
        kind: Kind,
        id_or_name: &str,
    ) -> Result<serde_json::Value, ClientError> {
        Ok(self
            .call(Method::GET, &item_path(kind, id_or_name), None, &[])
            .await?
            .body)
    }

    /// One page of `GET /v1/{collection}`.
    pub async fn list_page(
        &self,
        kind: Kind,
        limit: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<Page, ClientError> {
        let mut path = format!("/v1/{}", kind.collection());
        let mut sep = '?';
        if let Some(l) = limit {
            path.push_str(&format!("{sep}limit={l}"));
            sep = '&';
        }
        if let Some(t) = page_token {
            path.push_str(&format!("{sep}pageToken={}", encode(t)));
        }
        let resp = self.call(Method::GET, &path, None, &[]).await?;
        serde_json::from_value(resp.body).map_err(|e| ClientError::Unexpected {
            method: Method::GET,
            path,
            status: resp.status,
            reason: e.to_string(),
        })
    }

    /// Every resource of a kind, following `nextPageToken` to the end.
    pub async fn list(&self, kind: Kind) -> Result<Vec<serde_json::Value>, ClientError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(kind, None, token.as_deref()).await?;
            out.extend(page.items);
            match page.next_page_token {
                Some(t) if !t.is_empty() && Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// `DELETE /v1/{collection}/{idOrName}`.
    pub async fn delete(&self, kind: Kind, id_or_name: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &item_path(kind, id_or_name), None, &[])
            .await?;
        Ok(())
    }

    /// `GET /v1/proxies`.
    pub async fn proxies(&self) -> Result<Vec<ProxyStatus>, ClientError> {
        let path = "/v1/proxies";
        let resp = self.call(Method::GET, path, None, &[]).await?;
        #[derive(Deserialize)]
        struct Items {
            items: Vec<ProxyStatus>,
        }
        serde_json::from_value::<Items>(resp.body)
            .map(|i| i.items)
            .map_err(|e| ClientError::Unexpected {
                method: Method::GET,
                path: path.into(),
                status: resp.status,
                reason: e.to_string(),
            })
    }

    /// `GET /v1/proxies/{name}`.
    pub async fn proxy(&self, name: &str) -> Result<ProxyStatus, ClientError> {
        let path = format!("/v1/proxies/{}", encode(name));
        let resp = self.call(Method::GET, &path, None, &[]).await?;
        serde_json::from_value(resp.body).map_err(|e| ClientError::Unexpected {
            method: Method::GET,
            path,
            status: resp.status,
            reason: e.to_string(),
        })
    }

    /// `GET /v1/target-groups/{idOrName}/targets`: the group's targets with
    /// their aggregated health.
    pub async fn targets(&self, target_group: &str) -> Result<TargetList, ClientError> {
        let path = format!("{}/targets", item_path(Kind::TargetGroup, target_group));
        let resp = self.call(Method::GET, &path, None, &[]).await?;
        serde_json::from_value(resp.body).map_err(|e| ClientError::Unexpected {
            method: Method::GET,
            path,
            status: resp.status,
            reason: e.to_string(),
        })
    }

    /// `GET /healthz`: `Ok` when the control plane answers 2xx.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.call(Method::GET, "/healthz", None, &[]).await?;
        Ok(())
    }
}

/// `/v1/{collection}/{idOrName}`, the name percent-encoded.
pub fn item_path(kind: Kind, id_or_name: &str) -> String {
    format!("/v1/{}/{}", kind.collection(), encode(id_or_name))
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Turn a user-given server into `http://host:port` without a trailing
/// slash.
fn normalize_server(server: &str) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: server.to_string(),
        reason: reason.to_string(),
    };
    let s = server.trim().trim_end_matches('/');
    let s = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let uri: http::Uri = s
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("https is not served yet; use http://")),
        _ => return Err(bad("expected http://host:port")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad("expected no path, just http://host:port"));
    }
    Ok(s)
}

/// The innermost cause of an error, which names what actually happened
/// ("Connection refused (os error 111)") instead of hyper's wrappers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_normalized() {
        assert_eq!(
            normalize_server("http://127.0.0.1:7070/").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            normalize_server("localhost:7070").unwrap(),
            "http://localhost:7070"
        );
        assert!(normalize_server("https://x:1").is_err());
        assert!(normalize_server("http://x:1/api").is_err());
        assert!(normalize_server("ftp://x").is_err());
    }

    #[test]
    fn names_are_encoded_in_paths() {
        assert_eq!(item_path(Kind::Service, "catalog"), "/v1/services/catalog");
        assert_eq!(
            item_path(Kind::TargetGroup, "a b/c"),
            "/v1/target-groups/a%20b%2Fc"
        );
    }

    #[test]
    fn api_errors_list_every_field() {
        let e = ClientError::Api {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::from_value(serde_json::json!({
                "error": "validation_failed",
                "message": "service 'x' is invalid",
                "fieldErrors": [
                    {"field": "listeners[0].port", "message": "bad"},
                    {"field": "name", "message": "worse"}
                ]
            }))
            .unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "service 'x' is invalid\n  listeners[0].port: bad\n  name: worse"
        );
    }

    #[tokio::test]
    async fn unreachable_server_says_how_to_fix_it() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("127.0.0.1:{port}")).unwrap();
        let e = c.health().await.unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("trellis dev"), "{e}");
    }
}
