//! Push latency: time from a REST write's start to the changed snapshot
//! arriving on a proxy's watch stream, through a real control plane
//! (embedded store, fsync on every write) over loopback HTTP.
//!
//! Prints p50 / p99 / max over 200 changes, for a scope of 10 services and
//! of 1,000 services. `cargo bench -p trellis-benches --bench push`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::time::{Duration, Instant};
use trellis_control::server::{ControlConfig, start};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// The default account's API token, made when the control plane starts.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn call(client: &HttpClient, method: &str, url: &str, body: serde_json::Value) -> u16 {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .header(
            "authorization",
            format!("Bearer {}", TOKEN.get().map_or("", String::as_str)),
        )
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(services: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        admin_token: None,
    })
    .await
    .unwrap();
    let issued = cp
        .bootstrap_account(trellis_config::limits::DEFAULT_ACCOUNT, "default", "bench")
        .await
        .unwrap();
    let _ = TOKEN.set(issued.token);
    let base = cp.url();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    call(
        &client,
        "PUT",
        &format!("{base}/v1/service-networks/net"),
        json!({"name": "net"}),
    )
    .await;
    for tg in ["blue", "green"] {
        call(
            &client,
            "PUT",
            &format!("{base}/v1/target-groups/{tg}"),
            json!({"name": tg, "port": 8080, "targets": [{"address": "127.0.0.1"}]}),
        )
        .await;
    }
    let listener = |w: u32| json!({"name": "http", "defaultAction": {"forward": {"targetGroups": [{"targetGroup": "blue", "weight": w}, {"targetGroup": "green", "weight": 1}]}}});
    for i in 0..services {
        call(
            &client,
            "PUT",
            &format!("{base}/v1/services/s{i}"),
            json!({"name": format!("s{i}"), "listeners": [listener(1)]}),
        )
        .await;
        call(
            &client,
            "PUT",
            &format!("{base}/v1/service-associations/a{i}"),
            json!({"name": format!("a{i}"), "serviceNetwork": "net", "service": format!("s{i}")}),
        )
        .await;
    }
    assert_eq!(
        call(
            &client,
            "POST",
            &format!("{base}/v1/proxies"),
            json!({"name": "bench", "serviceNetworks": ["net"]})
        )
        .await
            / 100,
        2
    );

    // The watch stream, read line by line.
    let req = hyper::Request::get(format!("{base}/v1/proxies/bench/watch"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let mut buf = Vec::new();
    let mut next_snapshot = async move || -> u64 {
        loop {
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                if v["type"] == "snapshot" {
                    return v["snapshot"]["version"].as_u64().unwrap();
                }
                continue;
            }
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(d) = frame.into_data() {
                buf.extend_from_slice(&d);
            }
        }
    };
    let mut version = next_snapshot().await;
    let mut samples = Vec::new();
    for i in 0..200u32 {
        let t = Instant::now();
        call(
            &client,
            "PUT",
            &format!("{base}/v1/services/s0"),
            json!({"name": "s0", "listeners": [listener(2 + i)]}),
        )
        .await;
        let v = tokio::time::timeout(Duration::from_secs(10), next_snapshot())
            .await
            .expect("snapshot within 10 s");
        samples.push(t.elapsed());
        assert!(v > version);
        version = v;
    }
    samples.sort();
    println!(
        "push latency, {services:>5} services in scope, 200 changes: p50 {:>7.2?}  p99 {:>7.2?}  max {:>7.2?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
    cp.shutdown().await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it once too.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        run(10).await;
        run(1000).await;
    });
}
