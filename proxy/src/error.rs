//! Every error the proxy answers itself, and the one shape they all take.
//!
//! A proxy-made error is a status code, a reason code in the
//! `x-trellis-error` response header, a short JSON body
//! `{"error":"<reason>","message":"...","requestId":"..."}` and the same
//! reason in the logs. A client can tell a proxy-made `502` from one its
//! target sent by the header alone.
//!
//! | reason                       | status | blame    | when |
//! |------------------------------|--------|----------|------|
//! | `bad_request`                | 400    | client   | malformed head, conflicting `Content-Length`/`Transfer-Encoding`, missing or bad `Host`, missing `x-trellis-target` on the inbound listener |
//! | `unauthenticated`            | 401    | client   | an auth policy admits only authenticated callers and the request has no mesh identity; `x-trellis-auth-denied` names the level |
//! | `access_denied`              | 403    | client   | an auth policy denied the request (a Deny statement, no Allow statement, or auth type IAM without a policy), or a calling proxy named a route (`x-trellis-service`, ...) that does not reach the target; `x-trellis-auth-denied` names the level and the statement, e.g. `service; Statement[1] (DenyPost)` |
//! | `target_not_fronted`         | 403    | client   | inbound: `x-trellis-target` names a target this proxy does not front (no open relay) |
//! | `no_service`                 | 404    | client   | no service answers to the host |
//! | `no_listener`                | 404    | client   | the service has no listener on the addressed port |
//! | `request_timeout`            | 408    | client   | the request head did not arrive within the header read timeout |
//! | `body_too_large`             | 413    | client   | `Content-Length` over the limit, or a streamed body crossed it before the target answered |
//! | `headers_too_large`          | 431    | client   | request head over the byte or header-count limit |
//! | `rate_limited`               | 429    | client   | a service's or rule's rate limit is used up; `Retry-After` says when to try again (limits are local to each proxy) |
//! | `upstream_connect_failed`    | 502    | upstream | the target (or its fronting proxy) refused or did not accept the connection |
//! | `upstream_reset`             | 502    | upstream | the target closed or reset the connection before a full response head |
//! | `upstream_protocol_error`    | 502    | upstream | the target sent something that is not a valid HTTP response |
//! | `no_healthy_target`          | 503    | proxy    | the chosen target group is unknown or has no target to pick |
//! | `not_ready`                  | 503    | proxy    | no snapshot loaded yet (control plane never reached, nothing on disk) |
//! | `overflow`                   | 503    | proxy    | a circuit breaker of the target group is full (connections, pending requests, requests or retries), answered at once without queueing |
//! | `upstream_timeout`           | 504    | upstream | no response head within the request timeout (the rule's `timeoutMs`, else the listener's, else the proxy's upstream timeout; retries included), or within `perTryTimeoutMs` on the last attempt |
//! | `http_version_not_supported` | 505    | client   | the request line names a version other than HTTP/1.0 or 1.1 |
//! | `fixed_response`             | any    | —        | a rule's fixed-response action (no `x-trellis-error` header for 2xx) |

use crate::body::ProxyBody;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use std::borrow::Cow;
use std::fmt;

/// `Retry-After`, on a 429 `rate_limited`.
pub const RETRY_AFTER: HeaderName = http::header::RETRY_AFTER;

/// Response header that carries the reason of a proxy-made answer.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-trellis-error");

/// Request id header: kept when the client sent a sane one, generated
/// otherwise, and returned on the response.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Who caused a failure; decides how it is logged now, and whether a retry
/// may help once retries exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The downstream client sent something wrong or too slowly.
    Client,
    /// The target (or the proxy fronting it) failed.
    Upstream,
    /// This proxy, or its configuration, cannot serve the request.
    Proxy,
}

/// Why the proxy answered a request itself. See the module table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 400: malformed request.
    BadRequest,
    /// 401: an auth policy wants an authenticated caller.
    Unauthenticated,
    /// 403: an auth policy denied the request.
    AccessDenied,
    /// 403: inbound request for a target this proxy does not front.
    TargetNotFronted,
    /// 404: no service for the host.
    NoService,
    /// 404: the service has no listener on the port.
    NoListener,
    /// 408: request head too slow.
    RequestTimeout,
    /// 413: request body over the limit.
    BodyTooLarge,
    /// 431: request head over the limits.
    HeadersTooLarge,
    /// 502: connection to the target refused or failed.
    UpstreamConnectFailed,
    /// 502: the target closed or reset the connection.
    UpstreamReset,
    /// 502: the target answered with something that is not HTTP.
    UpstreamProtocolError,
    /// 503: no target to send to.
    NoHealthyTarget,
    /// 503: no configuration loaded yet.
    NotReady,
    /// 503: a circuit breaker of the target group is full.
    Overflow,
    /// 429: a rate limit is used up.
    RateLimited,
    /// 504: the target did not answer in time.
    UpstreamTimeout,
    /// 505: unsupported HTTP version.
    HttpVersionNotSupported,
}

impl Reason {
    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 18] = [
        Reason::BadRequest,
        Reason::Unauthenticated,
        Reason::AccessDenied,
        Reason::TargetNotFronted,
        Reason::NoService,
        Reason::NoListener,
        Reason::RequestTimeout,
        Reason::BodyTooLarge,
        Reason::HeadersTooLarge,
        Reason::UpstreamConnectFailed,
        Reason::UpstreamReset,
        Reason::UpstreamProtocolError,
        Reason::NoHealthyTarget,
        Reason::NotReady,
        Reason::Overflow,
        Reason::RateLimited,
        Reason::UpstreamTimeout,
        Reason::HttpVersionNotSupported,
    ];

    /// The reason code, as in the header and the body.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::Unauthenticated => "unauthenticated",
            Reason::AccessDenied => "access_denied",
            Reason::TargetNotFronted => "target_not_fronted",
            Reason::NoService => "no_service",
            Reason::NoListener => "no_listener",
            Reason::RequestTimeout => "request_timeout",
            Reason::BodyTooLarge => "body_too_large",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::UpstreamConnectFailed => "upstream_connect_failed",
            Reason::UpstreamReset => "upstream_reset",
            Reason::UpstreamProtocolError => "upstream_protocol_error",
            Reason::NoHealthyTarget => "no_healthy_target",
            Reason::NotReady => "not_ready",
            Reason::Overflow => "overflow",
            Reason::RateLimited => "rate_limited",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::HttpVersionNotSupported => "http_version_not_supported",
        }
    }

    /// The status code answered.
    pub const fn status(self) -> StatusCode {
        match self {
            Reason::BadRequest => StatusCode::BAD_REQUEST,
            Reason::Unauthenticated => StatusCode::UNAUTHORIZED,
            Reason::AccessDenied | Reason::TargetNotFronted => StatusCode::FORBIDDEN,
            Reason::NoService | Reason::NoListener => StatusCode::NOT_FOUND,
            Reason::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reason::UpstreamConnectFailed
            | Reason::UpstreamReset
            | Reason::UpstreamProtocolError => StatusCode::BAD_GATEWAY,
            Reason::NoHealthyTarget | Reason::NotReady | Reason::Overflow => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Reason::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::HttpVersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        }
    }

    /// Who is to blame.
    pub const fn blame(self) -> Blame {
        match self {
            Reason::BadRequest
            | Reason::Unauthenticated
            | Reason::AccessDenied
            | Reason::TargetNotFronted
            | Reason::NoService
            | Reason::NoListener
            | Reason::RequestTimeout
            | Reason::BodyTooLarge
            | Reason::HeadersTooLarge
            | Reason::RateLimited
            | Reason::HttpVersionNotSupported => Blame::Client,
            Reason::UpstreamConnectFailed
            | Reason::UpstreamReset
            | Reason::UpstreamProtocolError
            | Reason::UpstreamTimeout => Blame::Upstream,
            Reason::NoHealthyTarget | Reason::NotReady | Reason::Overflow => Blame::Proxy,
        }
    }

    /// Whether the request certainly did not reach a target, so that
    /// sending it again (to another target) cannot repeat its effect.
    pub const fn retry_safe(self) -> bool {
        matches!(
            self,
            Reason::UpstreamConnectFailed
                | Reason::NoHealthyTarget
                | Reason::NotReady
                | Reason::Overflow
                | Reason::RateLimited
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request the proxy answers itself: the reason and a message for the
/// client (and the log) that says what happened and, where it can, what
/// to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// Why.
    pub reason: Reason,
    /// Human-readable detail.
    pub message: Cow<'static, str>,
    /// Seconds for `Retry-After` (set on `rate_limited`).
    pub retry_after: Option<u32>,
    /// For `access_denied` / `unauthenticated` by a policy: the level and
    /// statement that refused (`x-trellis-auth-denied`, and the access
    /// log's `authDeniedReason`).
    pub auth_denied: Option<Box<str>>,
}

impl Failure {
    /// A failure with a message.
    pub fn new(reason: Reason, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
            auth_denied: None,
        }
    }

    /// The same failure, naming the policy level and statement that refused.
    pub fn with_auth_denied(mut self, summary: impl Into<Box<str>>) -> Self {
        self.auth_denied = Some(summary.into());
        self
    }

    /// The same failure, answered with `Retry-After: <seconds>`.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The response for this failure.
    pub(crate) fn to_response(&self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let reason = self.reason.as_str();
        let body = error_body(reason, &self.message, request_id);
        let mut resp = json_response(self.reason.status(), body, request_id);
        resp.headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(reason));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(v) = self
            .auth_denied
            .as_deref()
            .and_then(crate::authz::header_value)
        {
            resp.headers_mut()
                .insert(crate::authz::AUTH_DENIED_HEADER, v);
        }
        resp
    }

    /// The same response as raw HTTP/1.1 bytes, with `connection: close`,
    /// for answers written before hyper owns the connection.
    pub(crate) fn to_http1_bytes(&self, request_id: &HeaderValue) -> Vec<u8> {
        let status = self.reason.status();
        let body = error_body(self.reason.as_str(), &self.message, request_id);
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\nx-trellis-error: ");
        out.extend_from_slice(self.reason.as_str().as_bytes());
        out.extend_from_slice(b"\r\nx-request-id: ");
        out.extend_from_slice(request_id.as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
        out.extend_from_slice(&body);
        out
    }
}

/// The answer of a fixed-response action: the error-body shape with reason
/// `fixed_response`, flagged with `x-trellis-error` unless it is a success.
/// A configured status that cannot be a final response (1xx, or out of
/// range) is answered as 500 so the client is not left hanging.
pub(crate) fn fixed_response(status: u16, request_id: &HeaderValue) -> Response<ProxyBody> {
    const REASON: &str = "fixed_response";
    let (code, message) = match StatusCode::from_u16(status) {
        Ok(s) if s.as_u16() >= 200 => (s, Cow::Borrowed("answered by a fixed-response rule")),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Cow::Owned(format!(
                "the fixed-response rule's status {status} cannot be a final response"
            )),
        ),
    };
    let body = if matches!(code.as_u16(), 204 | 304) {
        Bytes::new()
    } else {
        error_body(REASON, &message, request_id)
    };
    let mut resp = json_response(code, body, request_id);
    if !code.is_success() {
        resp.headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(REASON));
    }
    resp
}

fn json_response(status: StatusCode, body: Bytes, request_id: &HeaderValue) -> Response<ProxyBody> {
    let len = body.len();
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if len > 0 {
        h.insert(CONTENT_TYPE, APPLICATION_JSON);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(REQUEST_ID_HEADER, request_id.clone());
    resp
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// `{"error":..,"message":..,"requestId":..}`.
pub(crate) fn error_body(reason: &str, message: &str, request_id: &HeaderValue) -> Bytes {
    let body = ErrorBody {
        error: reason,
        message,
        request_id: request_id.to_str().unwrap_or(""),
    };
    // Serializing a struct of strings to JSON cannot fail; fall back to an
    // empty object rather than unwrap.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn rid() -> HeaderValue {
        HeaderValue::from_static("req-1")
    }

    async fn body_json(resp: Response<ProxyBody>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn error_response_shape() {
        let f = Failure::new(Reason::NoService, "no service answers to \"a.b\"");
        let resp = f.to_response(&rid());
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[&ERROR_HEADER], "no_service");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()[&REQUEST_ID_HEADER], "req-1");
        let json = body_json(resp).await;
        assert_eq!(
            json,
            serde_json::json!({
                "error": "no_service",
                "message": "no service answers to \"a.b\"",
                "requestId": "req-1",
            })
        );
    }

    #[test]
    fn every_reason_has_a_distinct_code_and_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "{r} twice");
            assert!(r.status().is_client_error() || r.status().is_server_error());
            let upstream = r.status().is_server_error() && r.status() != 503;
            assert_eq!(
                r.blame() == Blame::Upstream,
                upstream && r != Reason::HttpVersionNotSupported,
                "{r}"
            );
        }
    }

    #[test]
    fn raw_http1_bytes_parse_back() {
        let f = Failure::new(Reason::HeadersTooLarge, "too many");
        let raw = f.to_http1_bytes(&rid());
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = resp.parse(&raw).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(resp.code, Some(431));
        let get = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_string())
        };
        assert_eq!(get("x-trellis-error").as_deref(), Some("headers_too_large"));
        assert_eq!(get("connection").as_deref(), Some("close"));
        let len: usize = get("content-length").unwrap().parse().unwrap();
        assert_eq!(raw.len() - n, len);
        let json: serde_json::Value = serde_json::from_slice(&raw[n..]).unwrap();
        assert_eq!(json["error"], "headers_too_large");
        assert_eq!(json["requestId"], "req-1");
    }

    #[tokio::test]
    async fn fixed_response_flags_only_non_success() {
        let ok = fixed_response(200, &rid());
        assert_eq!(ok.status(), 200);
        assert!(ok.headers().get(&ERROR_HEADER).is_none());
        assert_eq!(body_json(ok).await["error"], "fixed_response");

        let not_found = fixed_response(404, &rid());
        assert_eq!(not_found.status(), 404);
        assert_eq!(not_found.headers()[&ERROR_HEADER], "fixed_response");

        let no_content = fixed_response(204, &rid());
        assert_eq!(no_content.headers()[CONTENT_LENGTH], "0");

        let bad = fixed_response(101, &rid());
        assert_eq!(bad.status(), 500);
    }
}
