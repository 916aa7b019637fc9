//! Sending a request to a target and bringing its response back.
//!
//! One pooled client per upstream protocol (HTTP/1.1, and HTTP/2 with
//! prior knowledge for `HTTP2` and `GRPC` groups), shared by every
//! listener; connections are reused across requests and snapshot pushes.
//! Bodies stream both ways, trailers included. Both the outbound and the
//! inbound listener go through [`Forwarder::forward`]; they differ only in
//! the [`Destination`] they pass.
//!
//! Under failure: a refused or failed connect is 502
//! `upstream_connect_failed`; a reset or close before the response head is
//! 502 `upstream_reset`; garbage instead of HTTP is 502
//! `upstream_protocol_error`; no head within the upstream timeout is 504
//! `upstream_timeout` (the timer covers connect and head); a request body
//! that crosses the limit before the target answered is 413
//! `body_too_large`. Once the head is passed on, a failure can only abort
//! the response body, and the client sees its connection or stream reset.

pub mod headers;
mod upgrade;

use crate::body::{BodyTooLarge, RequestBody};
use crate::error::{Failure, Reason};
use headers::{X_TRELLIS_TARGET, is_upgrade_request, set_forwarded, strip_hop_by_hop};
use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::watch;
use trellis_config::ProtocolVersion;

/// Time to establish a TCP connection to a target. A target that does not
/// accept within it is treated as down (502), well before the upstream
/// timeout would answer 504.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle pooled connections are closed after this. Shorter than the idle
/// timeouts of common servers' keep-alive (nginx 75 s, Go 90 s) would be
/// ideal, but some (Node.js: 5 s) are shorter still; 30 s is a compromise
/// until retries on reused connections exist.
pub const UPSTREAM_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP keepalive on upstream connections, so a vanished peer is noticed
/// on long-lived (gRPC, WebSocket) connections.
pub const UPSTREAM_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// HTTP/2 PING interval on upstream connections, for the same reason.
pub const UPSTREAM_H2_KEEPALIVE: Duration = Duration::from_secs(30);

/// Where a request goes.
#[derive(Debug, Clone)]
pub(crate) struct Destination<'a> {
    /// `host:port` to connect to: the target, or the proxy fronting it.
    pub connect: &'a str,
    /// HTTP version spoken to it.
    pub version: ProtocolVersion,
    /// When `connect` is a fronting proxy: the target's `address:port`,
    /// sent as `x-trellis-target`.
    pub fronted_target: Option<HeaderValue>,
}

/// The pooled clients and the settings of forwarding.
#[derive(Debug)]
pub(crate) struct Forwarder {
    h1: Client<HttpConnector, RequestBody>,
    h2: Client<HttpConnector, RequestBody>,
    upstream_timeout: Duration,
    max_body_bytes: u64,
}

impl Forwarder {
    pub fn new(upstream_timeout: Duration, max_body_bytes: u64) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(UPSTREAM_CONNECT_TIMEOUT));
        connector.set_keepalive(Some(UPSTREAM_TCP_KEEPALIVE));
        connector.enforce_http(true);
        let h1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(UPSTREAM_POOL_IDLE_TIMEOUT)
            .build(connector.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(UPSTREAM_POOL_IDLE_TIMEOUT)
            .http2_only(true)
            .http2_keep_alive_interval(UPSTREAM_H2_KEEPALIVE)
            .build(connector);
        Self {
            h1,
            h2,
            upstream_timeout,
            max_body_bytes,
        }
    }

    /// Forward `req` from a client at `client_ip` to `dest` and return the
    /// target's response head with its body streaming. Hop-by-hop fields
    /// are dropped both ways; `x-forwarded-for`/`-proto` are set; the
    /// client's `Host` is kept (and made from `:authority` for an HTTP/2
    /// client going to an HTTP/1.1 target); the target's address becomes
    /// the URI authority (and so `:authority` to an HTTP/2 target). An HTTP/1.1 upgrade
    /// (WebSocket) to an HTTP/1.1 target is tunnelled after a 101 until
    /// either side closes or `shutdown` fires.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        dest: Destination<'_>,
        client_ip: IpAddr,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Response<Incoming>, Failure> {
        let (mut parts, body) = req.into_parts();
        let h2 = dest.version.is_h2();
        let upgrading = !h2 && is_upgrade_request(parts.version, &parts.headers);
        let client_upgrade = if upgrading {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };

        strip_hop_by_hop(&mut parts.headers, true, upgrading);
        set_forwarded(&mut parts.headers, client_ip);
        match dest.fronted_target {
            Some(target) => {
                parts.headers.insert(X_TRELLIS_TARGET, target);
            }
            None => {
                parts.headers.remove(X_TRELLIS_TARGET);
            }
        }
        // An HTTP/2 client sends no Host; an HTTP/1.1 target needs the
        // name it asked for (the URI's authority becomes the target's
        // address below). An HTTP/2 target gets only what the client sent:
        // a Host differing from `:authority` is malformed to strict
        // servers (RFC 9113 §8.3.1).
        if !h2
            && !parts.headers.contains_key(HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(HOST, host);
        }
        parts.uri = upstream_uri(&parts.uri, dest.connect)?;
        parts.version = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        // A recorded request (access log) counts its body.
        let tally = crate::observe::record::Tally::of(&parts.extensions);
        let body = RequestBody::new(body, self.max_body_bytes).tally(tally);
        let req = Request::from_parts(parts, body);
        let client = if h2 { &self.h2 } else { &self.h1 };
        let mut resp = match tokio::time::timeout(self.upstream_timeout, client.request(req)).await
        {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(classify(&e, dest.connect, self.max_body_bytes)),
            Err(_) => {
                return Err(Failure::new(
                    Reason::UpstreamTimeout,
                    format!(
                        "{} did not send a response head within {:?}",
                        dest.connect, self.upstream_timeout
                    ),
                ));
            }
        };

        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        match (switched, client_upgrade) {
            (true, Some(client_side)) => {
                let target_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(upgrade::tunnel(client_side, target_side, shutdown.clone()));
                strip_hop_by_hop(resp.headers_mut(), false, true);
            }
            (true, None) => {
                return Err(Failure::new(
                    Reason::UpstreamProtocolError,
                    format!("{} switched protocols without being asked to", dest.connect),
                ));
            }
            (false, _) => strip_hop_by_hop(resp.headers_mut(), false, false),
        }
        Ok(resp)
    }
}

/// `http://<connect><path?query>`: the legacy client picks the connection
/// by the URI's authority, sends origin-form to HTTP/1.1 targets and
/// `:authority` from it to HTTP/2 targets.
fn upstream_uri(uri: &Uri, connect: &str) -> Result<Uri, Failure> {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(connect)
        .path_and_query(path)
        .build()
        .map_err(|e| {
            Failure::new(
                Reason::UpstreamConnectFailed,
                format!("'{connect}' is not a usable target address: {e}"),
            )
        })
}

/// Tell apart the ways a request to a target fails, from the client
/// error's source chain.
fn classify(
    err: &hyper_util::client::legacy::Error,
    connect: &str,
    max_body_bytes: u64,
) -> Failure {
    let detail = source_chain(err);
    if err.is_connect() {
        let refused = sources(err).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        let hint = if refused {
            " (is the target listening on that port?)"
        } else {
            " (is the address reachable, or a firewall dropping the connection?)"
        };
        return Failure::new(
            Reason::UpstreamConnectFailed,
            format!("cannot connect to {connect}: {detail}{hint}"),
        );
    }
    if sources(err).any(|e| e.is::<BodyTooLarge>()) {
        return Failure::new(
            Reason::BodyTooLarge,
            format!("the request body is larger than the limit of {max_body_bytes} bytes"),
        );
    }
    let hyper_err = sources(err).find_map(|e| e.downcast_ref::<hyper::Error>());
    if let Some(h) = hyper_err {
        if h.is_user() {
            // Our request body failed: the client aborted or sent a
            // malformed body.
            return Failure::new(
                Reason::BadRequest,
                format!("reading the request body failed: {detail}"),
            );
        }
        if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
            return Failure::new(
                Reason::UpstreamProtocolError,
                format!("{connect} sent an invalid HTTP response: {detail}"),
            );
        }
    }
    Failure::new(
        Reason::UpstreamReset,
        format!("{connect} closed or reset the connection before answering: {detail}"),
    )
}

fn sources<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    fn next<'b>(e: &&'b (dyn StdError + 'static)) -> Option<&'b (dyn StdError + 'static)> {
        (*e).source()
    }
    std::iter::successors(Some(err), next)
}

/// `outer: inner: innermost`, skipping repeats.
pub(crate) fn source_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for e in sources(err) {
        let s = e.to_string();
        if s == last || last.ends_with(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        let _ = write!(out, "{s}");
        last = s;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_path_and_query() {
        let u = upstream_uri(&"/a/b?c=d".parse().unwrap(), "10.0.0.1:8080").unwrap();
        assert_eq!(u.to_string(), "http://10.0.0.1:8080/a/b?c=d");
        let u = upstream_uri(&"http://svc.example/x".parse().unwrap(), "[::1]:80").unwrap();
        assert_eq!(u.to_string(), "http://[::1]:80/x");
        let u = upstream_uri(&"*".parse().unwrap(), "h:1").unwrap();
        assert_eq!(u.path(), "*");
        assert!(upstream_uri(&"/".parse().unwrap(), "bad host:x").is_err());
    }
}
