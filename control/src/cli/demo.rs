//! The demo of `trellis dev --demo`: two small backends and the
//! configuration in `examples/demo.yaml` that routes to them.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use trellis_config::{Document, Kind, parse_documents};

/// The demo configuration (also `examples/demo.yaml`).
pub const DEMO_YAML: &str = include_str!("../../../examples/demo.yaml");

/// The demo's service network.
pub const DEMO_NETWORK: &str = "demo";

/// The target groups a demo backend is started for, by name.
pub const DEMO_BACKENDS: [&str; 2] = ["catalog-v1", "catalog-v2"];

/// A demo backend: answers every request with JSON naming itself and
/// echoing the method, path and headers it received.
#[derive(Debug)]
pub struct DemoBackend {
    /// Its name (the target group it serves).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoBackend {
    /// Serve on `listener` until [`DemoBackend::shutdown`].
    pub fn serve(name: &str, listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let backend = name.to_string();
        let task = tokio::spawn(async move {
            // Dropping the set when the loop ends closes open connections.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let backend = backend.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let backend = backend.clone();
                                async move { Ok::<_, Infallible>(answer(&backend, &req)) }
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            addr,
            stop,
            task,
        })
    }

    /// Stop listening and close its connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The JSON a demo backend answers.
pub fn answer(backend: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_string(), v.into());
            }
        }
    }
    // A struct keeps the fields in reading order (a JSON map would sort them).
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        backend: &'a str,
        method: &'a str,
        path: &'a str,
        headers: serde_json::Map<String, serde_json::Value>,
    }
    let body = Answer {
        backend,
        method: req.method().as_str(),
        path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
        headers,
    };
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The demo documents, each demo target group's port being the port its
/// backend got.
pub fn demo_documents(ports: &[(String, u16)]) -> anyhow::Result<Vec<Document>> {
    let mut docs = parse_documents(DEMO_YAML)?;
    for d in &mut docs {
        if d.kind != Kind::TargetGroup {
            continue;
        }
        if let Some((_, port)) = ports.iter().find(|(n, _)| *n == d.name) {
            d.body["port"] = (*port).into();
        }
    }
    Ok(docs)
}

/// The port `examples/demo.yaml` gives a demo target group.
pub fn file_port(target_group: &str) -> Option<u16> {
    parse_documents(DEMO_YAML)
        .ok()?
        .into_iter()
        .find(|d| d.kind == Kind::TargetGroup && d.name == target_group)?
        .body
        .get("port")?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

/// Start the demo backends on loopback: on the ports of the demo file when
/// `prefer_file_ports` and they are free (so that applying the file by
/// hand keeps working), on ports the OS picks otherwise.
pub async fn start_backends(prefer_file_ports: bool) -> std::io::Result<Vec<DemoBackend>> {
    let mut out = Vec::new();
    for name in DEMO_BACKENDS {
        let wanted = if prefer_file_ports {
            file_port(name).unwrap_or(0)
        } else {
            0
        };
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, wanted)).await {
            Ok(l) => l,
            Err(_) => TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?,
        };
        out.push(DemoBackend::serve(name, listener)?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn demo_file_has_what_the_demo_promises() {
        let docs = parse_documents(DEMO_YAML).unwrap();
        let names: Vec<String> = docs
            .iter()
            .map(|d| format!("{}/{}", d.kind, d.name))
            .collect();
        for want in [
            "ServiceNetwork/demo",
            "TargetGroup/catalog-v1",
            "TargetGroup/catalog-v2",
            "Service/catalog",
            "Service/reviews",
            "ServiceAssociation/catalog-demo",
            "ServiceAssociation/reviews-demo",
            "ProxyAssociation/dev-demo",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert_eq!(file_port("catalog-v1"), Some(18081));
        assert_eq!(file_port("catalog-v2"), Some(18082));
    }

    #[test]
    fn ports_are_rewritten_for_backends_on_other_ports() {
        let docs = demo_documents(&[("catalog-v2".into(), 4242)]).unwrap();
        let port = |n: &str| docs.iter().find(|d| d.name == n).unwrap().body["port"].clone();
        assert_eq!(port("catalog-v1"), 18081);
        assert_eq!(port("catalog-v2"), 4242);
    }

    #[tokio::test]
    async fn a_backend_echoes_method_path_and_headers() {
        let backends = start_backends(false).await.unwrap();
        let client = crate::client::Client::new(&backends[1].addr.to_string()).unwrap();
        let r = client
            .send(
                http::Method::POST,
                "/v2/items?x=1",
                None,
                &[("x-canary", "true")],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body["backend"], "catalog-v2");
        assert_eq!(r.body["method"], "POST");
        assert_eq!(r.body["path"], "/v2/items?x=1");
        assert_eq!(r.body["headers"]["x-canary"], "true");
        for b in backends {
            b.shutdown().await;
        }
    }
}
