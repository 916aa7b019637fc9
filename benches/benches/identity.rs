//! Mesh identity: naming a peer from its certificate, and the mTLS
//! handshake between two proxies, with certificates from the real mesh CA.
//!
//! - `peer_identity`: the SPIFFE id out of a verified peer certificate (one
//!   x509-parser parse), paid once per accepted connection;
//! - `handshake/in_memory`: a full TLS 1.3 mTLS handshake (ECDSA P-256,
//!   both chains verified, SPIFFE checks) with the bytes passed in memory:
//!   the CPU cost of one new mesh connection for both sides together;
//! - `handshake/loopback_tcp`: the same over a real loopback socket with
//!   tokio-rustls, connect to first echoed byte;
//! - `ca/new_csr` and `ca/sign_csr`: a proxy making a key and CSR, and the
//!   control plane signing it (join and renewal cost).
//!
//! `cargo bench -p trellis-benches --bench identity`; about half a minute.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trellis_config::identity::{DEFAULT_CERT_TTL, DEFAULT_TRUST_DOMAIN, WorkloadIdentity};
use trellis_control::ca::MeshCa;
use trellis_proxy::identity::{
    Identity, IdentityStore, MESH_SERVER_NAME, TrustBundle, client_config, new_csr, peer_identity,
    server_config,
};

const ACCOUNT: &str = "123456789012";

fn join(ca: &MeshCa, workload: &str) -> Identity {
    let id = WorkloadIdentity::new(ca.trust_domain(), ACCOUNT, workload).unwrap();
    let (key, csr) = new_csr(&id).unwrap();
    let issued = ca
        .sign_csr(&csr, ACCOUNT, workload, DEFAULT_CERT_TTL)
        .unwrap();
    Identity::new(key, &issued.cert_pem).unwrap()
}

/// One complete handshake, bytes passed in memory until both sides are done.
fn handshake_in_memory(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) {
    let name = ServerName::try_from(MESH_SERVER_NAME).unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets().unwrap();
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets().unwrap();
    }
    assert!(s.peer_certificates().is_some());
}

fn identity(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let trust = TrustBundle::from_pem(ca.root_pem()).unwrap();
    let inbound = IdentityStore::new(join(&ca, "inbound"));
    let outbound = IdentityStore::new(join(&ca, "outbound"));
    let server = server_config(&trust, &inbound).unwrap();
    let client = client_config(&trust, &outbound).unwrap();

    let chain = outbound.current().chain().to_vec();
    // The input must give the answer the name says, or the number lies.
    assert_eq!(
        peer_identity(&chain).unwrap().to_string(),
        "spiffe://trellis.local/account/123456789012/workload/outbound"
    );
    let mut g = c.benchmark_group("identity");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("peer_identity", |b| {
        b.iter(|| peer_identity(black_box(&chain)))
    });
    g.finish();

    let mut g = c.benchmark_group("handshake");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.bench_function("in_memory", |b| {
        b.iter(|| handshake_in_memory(&server, &client))
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut byte = [0u8; 1];
                        if tls.read_exact(&mut byte).await.is_ok() {
                            let _ = tls.write_all(&byte).await;
                        }
                    }
                });
            }
        });
        addr
    });
    let connector = TlsConnector::from(client.clone());
    g.bench_function("loopback_tcp", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let name = ServerName::try_from(MESH_SERVER_NAME).unwrap();
                let mut tls = connector.connect(name, tcp).await.unwrap();
                tls.write_all(b"x").await.unwrap();
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).await.unwrap();
            })
        })
    });
    g.finish();

    let id = WorkloadIdentity::new(DEFAULT_TRUST_DOMAIN, ACCOUNT, "web").unwrap();
    let (_, csr) = new_csr(&id).unwrap();
    let mut g = c.benchmark_group("ca");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("new_csr", |b| b.iter(|| new_csr(black_box(&id)).unwrap()));
    g.bench_function("sign_csr", |b| {
        b.iter(|| {
            ca.sign_csr(black_box(&csr), ACCOUNT, "web", DEFAULT_CERT_TTL)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
