//! The admin listener (loopback by default): `GET /live` is 200 while the
//! process serves; `GET /ready` is 200 once a snapshot is loaded, 503
//! before; `GET /config` is the snapshot in use as JSON (503 before one
//! is loaded); `GET /stats` is runtime counters as JSON (`accessLog`:
//! lines written and dropped, per destination and in total; `traces`:
//! spans exported, failed and dropped and failed exports, `null` without
//! tracing). Anything else is 404.
//!
//! `GET /targets` is every target group and target as this proxy sees
//! them: health, ejection, requests in flight, circuit breakers, fail-open
//! ([`crate::balance::TargetsStatus`]).
//!
//! `GET /metrics` is the Prometheus metrics in the OpenMetrics text
//! format (`crate::observe::metrics`).

use crate::body::ProxyBody;
use crate::run::signalled;
use crate::state::Shared;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Serve one admin connection.
pub(crate) async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, &req)) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        _ = signalled(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
    }
}

fn handle(shared: &Shared, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        // Not ready while draining, so load balancers and Kubernetes stop
        // sending new connections before the listeners close.
        "/ready" if shared.is_draining() => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "message": "draining"}),
        ),
        "/ready" if !shared.mesh.is_ready() => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "message": "no valid mesh certificate (not joined yet, or expired and not renewed)"}),
        ),
        "/ready" => match shared.current_version() {
            Some(v) => json(
                StatusCode::OK,
                serde_json::json!({"ready": true, "version": v}),
            ),
            None => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"ready": false, "message": "no snapshot loaded yet"}),
            ),
        },
        "/config" => match shared.current.load_full() {
            Some(p) => match serde_json::to_vec_pretty(&p.snapshot) {
                Ok(body) => with_type(StatusCode::OK, body, "application/json"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            },
            None => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"message": "no snapshot loaded yet"}),
            ),
        },
        "/targets" => match serde_json::to_vec_pretty(&crate::balance::TargetsStatus {
            version: shared.current_version(),
            target_groups: shared.balancer.status(),
        }) {
            Ok(body) => with_type(StatusCode::OK, body, "application/json"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        "/stats" => json(
            StatusCode::OK,
            serde_json::json!({
                "accessLog": shared.access_log.stats(),
                "traces": shared.traces.as_ref().map(|t| {
                    let s = t.stats();
                    serde_json::json!({
                        "spansExported": s.spans_exported,
                        "spansFailed": s.spans_failed,
                        "spansDropped": s.spans_dropped,
                        "failedExports": s.failed_exports,
                    })
                }),
            }),
        ),
        "/metrics" => match shared.metrics.render(shared) {
            Ok(body) => with_type(
                StatusCode::OK,
                body.into_bytes(),
                crate::observe::metrics::CONTENT_TYPE,
            ),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /config, /targets, /stats or /metrics\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    with_type(
        status,
        body.as_bytes().to_vec(),
        "text/plain; charset=utf-8",
    )
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ProxyBody> {
    with_type(status, value.to_string().into_bytes(), "application/json")
}

fn with_type(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
