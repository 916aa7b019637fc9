//! `trellis-bench-backend`: the smallest useful HTTP/1.1 server, the
//! baseline the load harness (`benches/load.sh`) measures the proxy
//! against.
//!
//! Every request gets `200` with the body `ok\n` and a `content-length`,
//! on keep-alive connections, from a multi-threaded tokio runtime. The
//! request body, if any, is drained. Nothing is logged per request.
//!
//! ```text
//! trellis-bench-backend --listen 127.0.0.1:18080
//! ```
#![forbid(unsafe_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use tokio::net::TcpListener;

/// The answer to every request.
const BODY: &[u8] = b"ok\n";

const USAGE: &str = "usage: trellis-bench-backend --listen IP:PORT";

fn parse_args() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().ok_or("--listen needs IP:PORT")?;
                listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--listen {v:?}: {e}"))?,
                );
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => {
                if let Some(v) = other.strip_prefix("--listen=") {
                    listen = Some(
                        v.parse::<SocketAddr>()
                            .map_err(|e| format!("--listen {v:?}: {e}"))?,
                    );
                } else {
                    return Err(format!("unknown argument {other:?}\n{USAGE}"));
                }
            }
        }
    }
    listen.ok_or_else(|| USAGE.into())
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Drain a request body so the connection stays usable.
    let mut body = req.into_body();
    while let Some(Ok(_)) = body.frame().await {}
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(BODY.len()),
    );
    Ok(resp)
}

async fn serve(listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors under heavy load: back off, go on.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

fn main() -> ExitCode {
    let listen = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("binding {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map_or(listen, |a| a);
        eprintln!("trellis-bench-backend listening on {addr}");
        tokio::select! {
            _ = serve(listener) => ExitCode::SUCCESS,
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}
