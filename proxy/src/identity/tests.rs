//! Real TLS over loopback sockets: the configs of this module against each
//! other, against foreign certificates and against plaintext.

use super::test_ca::{EXPIRED, TestCa, VALID};
use super::verify::MeshServerVerifier;
use super::*;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TD: &str = "trellis.local";
const WAIT: Duration = Duration::from_secs(10);

/// What the server saw of one connection.
#[derive(Debug)]
struct Accepted {
    peer: Option<WorkloadIdentity>,
    peer_cert: Vec<u8>,
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

/// Why the server refused one connection.
#[derive(Debug)]
struct Refused {
    tls: Option<rustls::Error>,
    text: String,
}

struct Server {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Result<Accepted, Refused>>,
}

impl Server {
    /// Serve `config` on 127.0.0.1:0: report each handshake, then echo.
    async fn start(config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let (_, conn) = tls.get_ref();
                            let certs = conn.peer_certificates().unwrap_or_default();
                            let _ = tx.send(Ok(Accepted {
                                peer: peer_identity(certs),
                                peer_cert: certs.first().map(|c| c.to_vec()).unwrap_or_default(),
                                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                                version: conn.protocol_version(),
                            }));
                            let mut buf = [0u8; 1024];
                            while let Ok(n @ 1..) = tls.read(&mut buf).await {
                                if tls.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            let tls = e
                                .get_ref()
                                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                                .cloned();
                            let _ = tx.send(Err(Refused {
                                tls,
                                text: e.to_string(),
                            }));
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    async fn next(&mut self) -> Result<Accepted, Refused> {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("the server saw no connection")
            .expect("server gone")
    }
}

async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(MESH_SERVER_NAME).unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("client handshake hung")
}

/// Send `msg` and read the echo.
async fn round_trip(tls: &mut TlsStream<TcpStream>, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    tls.write_all(msg).await?;
    tls.flush().await?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, tls.read_exact(&mut back))
        .await
        .expect("echo hung")?;
    Ok(back)
}

fn server_cert(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A client config that checks the server like ours (against `TD`) but
/// presents what `store` holds, or nothing.
fn hand_made_client(trust: &TrustBundle, store: Option<&IdentityStore>) -> Arc<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier {
            roots: trust.roots(),
            algorithms: provider.signature_verification_algorithms,
            trust_domain: TD.into(),
        }));
    Arc::new(match store {
        Some(store) => builder.with_client_cert_resolver(store.resolver()),
        None => builder.with_no_client_auth(),
    })
}

/// A server and a client config from one CA, with their stores.
fn pair(
    ca: &TestCa,
) -> (
    IdentityStore,
    Arc<ServerConfig>,
    IdentityStore,
    Arc<ClientConfig>,
) {
    let trust = TrustBundle::from_pem(&ca.root_pem).unwrap();
    let server_store = IdentityStore::new(ca.identity("inbound", VALID));
    let client_store = IdentityStore::new(ca.identity("outbound", VALID));
    let server = server_config(&trust, &server_store).unwrap();
    let client = client_config(&trust, &client_store).unwrap();
    (server_store, server, client_store, client)
}

#[tokio::test]
async fn mtls_handshake_succeeds_and_each_side_knows_the_other() {
    let ca = TestCa::new(TD);
    let (_, server_cfg, _, client_cfg) = pair(&ca);
    let mut server = Server::start(server_cfg).await;

    let mut tls = connect(client_cfg, server.addr).await.unwrap();
    assert_eq!(
        round_trip(&mut tls, b"hello mesh").await.unwrap(),
        b"hello mesh"
    );

    let seen = server.next().await.unwrap();
    assert_eq!(seen.peer, Some(ca.id("111111111111", "outbound")));
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(seen.version, Some(rustls::ProtocolVersion::TLSv1_3));

    let client_side = tls.get_ref().1;
    assert_eq!(
        peer_identity(client_side.peer_certificates().unwrap()),
        Some(ca.id("111111111111", "inbound"))
    );
    assert_eq!(client_side.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn client_with_a_foreign_ca_certificate_is_rejected_at_the_handshake() {
    let ca = TestCa::new(TD);
    let (_, server_cfg, _, _) = pair(&ca);
    let mut server = Server::start(server_cfg).await;

    // A client that accepts our server but presents a certificate from
    // another mesh's CA (another name, another key).
    let foreign = TestCa::new("evil.example");
    let trust = TrustBundle::from_pem(&ca.root_pem).unwrap();
    let impostor = IdentityStore::new(foreign.identity("outbound", VALID));
    let outcome = match connect(hand_made_client(&trust, Some(&impostor)), server.addr).await {
        Ok(mut tls) => round_trip(&mut tls, b"let me in").await,
        Err(e) => Err(e),
    };
    assert!(
        outcome.is_err(),
        "a foreign client got through: {outcome:?}"
    );
    let refused = server.next().await.unwrap_err();
    assert_eq!(
        refused.tls,
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        )),
        "{refused:?}"
    );

    // A CA with our CA's very name but another key: the signature fails.
    let lookalike = TestCa::new(TD);
    let impostor = IdentityStore::new(lookalike.identity("outbound", VALID));
    let outcome = match connect(hand_made_client(&trust, Some(&impostor)), server.addr).await {
        Ok(mut tls) => round_trip(&mut tls, b"let me in").await,
        Err(e) => Err(e),
    };
    assert!(
        outcome.is_err(),
        "a lookalike client got through: {outcome:?}"
    );
    let refused = server.next().await.unwrap_err();
    assert_eq!(
        refused.tls,
        Some(rustls::Error::InvalidCertificate(
            CertificateError::BadSignature
        )),
        "{refused:?}"
    );
}

#[tokio::test]
async fn server_with_a_foreign_ca_certificate_is_rejected_by_the_client() {
    let ca = TestCa::new(TD);
    let (_, _, _, client_cfg) = pair(&ca);
    for (foreign, expected) in [
        (TestCa::new("evil.example"), CertificateError::UnknownIssuer),
        (TestCa::new(TD), CertificateError::BadSignature),
    ] {
        let (_, foreign_server, _, _) = pair(&foreign);
        let server = Server::start(foreign_server).await;
        let err = connect(client_cfg.clone(), server.addr).await.unwrap_err();
        let tls = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert_eq!(
            tls,
            Some(&rustls::Error::InvalidCertificate(expected)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn plaintext_and_certificate_less_clients_are_rejected() {
    let ca = TestCa::new(TD);
    let (_, server_cfg, _, _) = pair(&ca);
    let mut server = Server::start(server_cfg).await;

    // Plain HTTP on the mTLS port.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server kept a plaintext connection open");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    let refused = server.next().await.unwrap_err();
    assert!(
        matches!(refused.tls, Some(rustls::Error::InvalidMessage(_))),
        "{refused:?}"
    );

    // TLS that trusts the server but presents no certificate.
    let trust = TrustBundle::from_pem(&ca.root_pem).unwrap();
    let anonymous = hand_made_client(&trust, None);
    let outcome = match connect(anonymous, server.addr).await {
        Ok(mut tls) => round_trip(&mut tls, b"anonymous").await,
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "{outcome:?}");
    let refused = server.next().await.unwrap_err();
    assert_eq!(
        refused.tls,
        Some(rustls::Error::NoCertificatesPresented),
        "{refused:?}"
    );
}

#[tokio::test]
async fn mesh_ca_certificate_without_a_workload_id_is_rejected() {
    let ca = TestCa::new(TD);
    let (_, server_cfg, _, _) = pair(&ca);
    let mut server = Server::start(server_cfg).await;

    // Signed by the right CA, but naming something that is not a workload.
    let id = ca.id("111111111111", "odd");
    let (key, csr) = new_csr(&id).unwrap();
    let cert = ca.sign(&csr, "https://example.com/not-spiffe", VALID);
    assert!(matches!(
        Identity::new(key, &cert),
        Err(IdentityError::NoSpiffeId)
    ));
    // Signed by the right CA for another trust domain, presented by a
    // client that trusts our server.
    let (key, csr) = new_csr(&id).unwrap();
    let cert = ca.sign(
        &csr,
        "spiffe://other.domain/account/111111111111/workload/odd",
        VALID,
    );
    let other_domain = IdentityStore::new(Identity::new(key, &cert).unwrap());
    let trust = TrustBundle::from_pem(&ca.root_pem).unwrap();
    let client = hand_made_client(&trust, Some(&other_domain));
    let outcome = match connect(client, server.addr).await {
        Ok(mut tls) => round_trip(&mut tls, b"x").await,
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "{outcome:?}");
    let refused = server.next().await.unwrap_err();
    assert!(
        refused
            .text
            .contains("names no workload of trust domain 'trellis.local'"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn swapped_certificate_serves_new_handshakes_while_open_connections_go_on() {
    let ca = TestCa::new(TD);
    let (server_store, server_cfg, client_store, client_cfg) = pair(&ca);
    let mut server = Server::start(server_cfg).await;
    let first_server_cert = server_store.current().chain()[0].to_vec();
    let first_client_cert = client_store.current().chain()[0].to_vec();

    let mut open = connect(client_cfg.clone(), server.addr).await.unwrap();
    assert_eq!(round_trip(&mut open, b"before").await.unwrap(), b"before");
    assert_eq!(server_cert(&open), first_server_cert);
    assert_eq!(server.next().await.unwrap().peer_cert, first_client_cert);

    // Renew both sides: new keys, new certificates, same identities.
    let old = server_store.replace(ca.identity("inbound", VALID)).unwrap();
    assert_eq!(old.chain()[0].to_vec(), first_server_cert);
    client_store
        .replace(ca.identity("outbound", VALID))
        .unwrap();
    let second_server_cert = server_store.current().chain()[0].to_vec();
    let second_client_cert = client_store.current().chain()[0].to_vec();
    assert_ne!(second_server_cert, first_server_cert);

    // The open connection keeps working on its old session.
    for i in 0..3 {
        let msg = format!("still here {i}");
        assert_eq!(
            round_trip(&mut open, msg.as_bytes()).await.unwrap(),
            msg.as_bytes()
        );
    }
    // The next handshake, with the same configs, uses the new certificates.
    let mut fresh = connect(client_cfg, server.addr).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"after").await.unwrap(), b"after");
    assert_eq!(server_cert(&fresh), second_server_cert);
    let seen = server.next().await.unwrap();
    assert_eq!(seen.peer_cert, second_client_cert);
    assert_eq!(seen.peer, Some(ca.id("111111111111", "outbound")));
    assert_eq!(round_trip(&mut open, b"and now").await.unwrap(), b"and now");
}

#[test]
fn replace_refuses_another_identity() {
    let ca = TestCa::new(TD);
    let store = IdentityStore::new(ca.identity("inbound", VALID));
    let before = store.current().chain()[0].to_vec();
    let err = store.replace(ca.identity("impostor", VALID)).unwrap_err();
    assert!(
        matches!(err, IdentityError::IdentityChanged { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("workload/impostor"), "{err}");
    assert_eq!(store.current().chain()[0].to_vec(), before);
}

#[tokio::test]
async fn expired_certificate_is_reported_invalid_and_is_not_presented() {
    let ca = TestCa::new(TD);
    let expired = ca.identity("inbound", EXPIRED);
    assert!(!expired.is_valid_now());
    let not_yet = ca.identity("inbound", (2090, 2100));
    assert!(!not_yet.is_valid_now());
    let valid = ca.identity("inbound", VALID);
    assert!(valid.is_valid_now());
    assert!(valid.is_valid_at(valid.not_before()) && valid.is_valid_at(valid.not_after()));

    let (server_store, server_cfg, client_store, client_cfg) = pair(&ca);
    assert!(server_store.is_ready() && client_store.is_ready());
    let mut server = Server::start(server_cfg).await;

    // A server whose certificate expired stops accepting mesh handshakes.
    server_store.replace(expired).unwrap();
    assert!(!server_store.is_ready());
    assert!(connect(client_cfg.clone(), server.addr).await.is_err());
    let refused = server.next().await.unwrap_err();
    assert!(
        refused.text.contains("no server certificate"),
        "{refused:?}"
    );

    // A client whose certificate expired is refused by a healthy server.
    server_store.replace(ca.identity("inbound", VALID)).unwrap();
    client_store
        .replace(ca.identity("outbound", EXPIRED))
        .unwrap();
    assert!(!client_store.is_ready());
    let outcome = match connect(client_cfg.clone(), server.addr).await {
        Ok(mut tls) => round_trip(&mut tls, b"x").await,
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(
        server.next().await.unwrap_err().tls,
        Some(rustls::Error::NoCertificatesPresented)
    );

    // Renewed: both ready, handshakes work again.
    client_store
        .replace(ca.identity("outbound", VALID))
        .unwrap();
    assert!(client_store.is_ready());
    let mut tls = connect(client_cfg, server.addr).await.unwrap();
    assert_eq!(round_trip(&mut tls, b"back").await.unwrap(), b"back");
}

#[test]
fn identity_new_refuses_mismatched_keys_and_bad_pem() {
    let ca = TestCa::new(TD);
    let id = ca.id("111111111111", "web");
    let (_, csr) = new_csr(&id).unwrap();
    let cert = ca.sign(&csr, &id.uri(), VALID);
    let other_key = WorkloadKey::generate().unwrap();
    let err = Identity::new(other_key, &cert).unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch(_)), "{err:?}");

    let err = Identity::new(WorkloadKey::generate().unwrap(), "nothing here").unwrap_err();
    assert!(matches!(err, IdentityError::Pem { .. }), "{err:?}");
    assert!(err.to_string().contains("workload certificate"), "{err}");

    let err = TrustBundle::from_pem("").unwrap_err();
    assert!(err.to_string().contains("trust bundle"), "{err}");
    assert_eq!(TrustBundle::from_pem(&ca.root_pem).unwrap().len(), 1);

    let identity = ca.identity("web", VALID);
    let debug = format!("{identity:?}");
    assert!(
        debug.contains("workload/web") && debug.contains("<redacted>"),
        "{debug}"
    );
    assert!(identity.renew_at() > std::time::Instant::now());
}
