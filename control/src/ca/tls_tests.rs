//! The mesh CA and the proxy's identity library together: certificates the
//! CA issues for proxy CSRs make a real mTLS handshake over loopback.

use super::MeshCa;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trellis_config::identity::{DEFAULT_CERT_TTL, DEFAULT_TRUST_DOMAIN, WorkloadIdentity};
use trellis_proxy::identity::{
    Identity, IdentityStore, MESH_SERVER_NAME, TrustBundle, client_config, new_csr, peer_identity,
    server_config,
};

const ACCOUNT: &str = "123456789012";
const WAIT: Duration = Duration::from_secs(10);

/// What a proxy does to join: key, CSR, certificate from the CA.
fn join(ca: &MeshCa, workload: &str, now: SystemTime) -> Identity {
    let id = WorkloadIdentity::new(ca.trust_domain(), ACCOUNT, workload).unwrap();
    let (key, csr) = new_csr(&id).unwrap();
    let issued = ca
        .sign_csr_at(&csr, ACCOUNT, workload, DEFAULT_CERT_TTL, now)
        .unwrap();
    assert_eq!(issued.identity, id);
    Identity::new(key, &issued.cert_pem).unwrap()
}

/// Accept one connection; the caller's identity, or the handshake error.
async fn serve_one(
    config: Arc<ServerConfig>,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<Option<WorkloadIdentity>, String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let caller = peer_identity(tls.get_ref().1.peer_certificates().unwrap_or_default());
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok(caller)
    });
    (addr, task)
}

async fn call(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(MESH_SERVER_NAME).unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    tls.write_all(b"hello").await?;
    let mut back = vec![0u8; 5];
    tls.read_exact(&mut back).await?;
    Ok(back)
}

#[tokio::test]
async fn ca_issued_certificates_make_an_mtls_handshake_and_name_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let trust = TrustBundle::from_pem(ca.root_pem()).unwrap();
    let now = SystemTime::now();
    let inbound = IdentityStore::new(join(&ca, "inbound", now));
    let outbound = IdentityStore::new(join(&ca, "outbound", now));

    let (addr, server) = serve_one(server_config(&trust, &inbound).unwrap()).await;
    let client = client_config(&trust, &outbound).unwrap();
    let echoed = tokio::time::timeout(WAIT, call(client, addr))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"hello");
    let caller = server.await.unwrap().unwrap();
    assert_eq!(
        caller.unwrap().to_string(),
        "spiffe://trellis.local/account/123456789012/workload/outbound"
    );
}

#[tokio::test]
async fn certificates_of_another_mesh_ca_or_expired_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = MeshCa::load_or_create(other_dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let trust = TrustBundle::from_pem(ca.root_pem()).unwrap();
    let now = SystemTime::now();
    let inbound = IdentityStore::new(join(&ca, "inbound", now));

    // Issued two days ago for a day: expired.
    let expired = join(&ca, "outbound", now - 2 * DEFAULT_CERT_TTL);
    assert!(!expired.is_valid_now());
    // Issued by another mesh's CA (same trust domain name, another key).
    let foreign = join(&other, "outbound", now);
    assert!(foreign.is_valid_now());

    for (what, identity, reason) in [
        // An expired certificate is not even presented.
        ("expired", expired, "peer sent no certificates"),
        ("foreign", foreign, "invalid peer certificate: BadSignature"),
    ] {
        let (addr, server) = serve_one(server_config(&trust, &inbound).unwrap()).await;
        // The client trusts our CA, so only the server's check can stop it.
        let client = client_config(&trust, &IdentityStore::new(identity)).unwrap();
        let outcome = tokio::time::timeout(WAIT, call(client, addr))
            .await
            .unwrap();
        assert!(outcome.is_err(), "{what} client got through");
        let refused = server.await.unwrap().unwrap_err();
        assert!(refused.contains(reason), "{what}: {refused}");
    }
}
