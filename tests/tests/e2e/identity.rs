//! Mesh identity end to end: join tokens, the join, renewal under load,
//! mTLS on the inbound listener (what it refuses at the handshake), the
//! caller-identity headers, the proxy-facing endpoints and the secrets that
//! must never reach a log.

use crate::harness::{
    Api, Control, PUSH_WAIT, Proxy, forward, join_mesh, proxy_call, wait_for_backend, wait_in_sync,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use trellis_control::mesh::IdentitySettings;
use trellis_control::server::ControlConfig;
use trellis_tests::prom;
use trellis_tests::{EchoBackend, Http1Connection, http1_request, https1_request};

const HOST: &str = "svc.net.trellis.internal";

/// A control plane whose certificates live `ttl`.
async fn control_with_ttl(data_dir: &Path, ttl: Duration) -> Control {
    let running = trellis_control::server::start_with(
        ControlConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            admin_token: None,
        },
        IdentitySettings {
            cert_ttl: ttl,
            ..IdentitySettings::default()
        },
    )
    .await
    .expect("control plane starts");
    let token = crate::harness::default_token(&running).await;
    Control {
        addr: running.addr,
        running: Some(running),
        token,
    }
}

/// `net` with service `svc` forwarding to `backend`, whose target is
/// fronted by proxy `front` (so callers go through `front`'s inbound).
async fn fronted_mesh(api: Api, backend: &trellis_tests::BackendHandle, front: &str) {
    api.put("service-networks", json!({"name": "net"})).await;
    api.put(
        "target-groups",
        json!({"name": "tg", "port": backend.port(), "targets": [{"address": "127.0.0.1", "proxy": front}]}),
    )
    .await;
    api.put(
        "services",
        json!({"name": "svc", "listeners": [{"name": "http", "defaultAction": forward("tg")}]}),
    )
    .await;
    api.put(
        "service-associations",
        json!({"name": "svc-net", "serviceNetwork": "net", "service": "svc"}),
    )
    .await;
}

/// Accepts any server certificate: for clients that test what the
/// *server* refuses.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client presenting `cert` (PEM chain and key), or nothing.
fn client(cert: Option<(String, String)>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn spiffe(workload: &str) -> String {
    format!("spiffe://trellis.local/account/000000000000/workload/{workload}")
}

/// A certificate for `workload` in the real mesh CA of `ca_dir`, valid
/// only in 2020 (the CA key is read as an attacker with the data
/// directory could; the proxy must still refuse the expired certificate).
fn expired_mesh_cert(ca_dir: &Path, workload: &str) -> (String, String) {
    mesh_cert(ca_dir, workload, (2020, 2021))
}

/// A certificate for `workload` signed with the CA key of `ca_dir`, valid
/// from January 1st of the first year to that of the second.
fn mesh_cert(ca_dir: &Path, workload: &str, years: (i32, i32)) -> (String, String) {
    let key_pem = std::fs::read_to_string(ca_dir.join(trellis_control::ca::KEY_FILE)).unwrap();
    let ca_pem = std::fs::read_to_string(ca_dir.join(trellis_control::ca::CERT_FILE)).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&key_pem).unwrap())
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe(workload).try_into().unwrap())];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let cert = params.signed_by(&leaf_key, &issuer).unwrap();
    (cert.pem(), leaf_key.serialize_pem())
}

fn self_signed(workload: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe(workload).try_into().unwrap())];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn handshake_failures(admin: SocketAddr) -> f64 {
    let r = http1_request(admin, "metrics", "GET", "/metrics", &[], Vec::new())
        .await
        .unwrap();
    let e = prom::parse(&r.text()).unwrap();
    e.get("trellis_tls_handshake_failures_total", &[])
        .unwrap_or(0.0)
}

/// A request over TLS with `config` straight at an inbound listener.
async fn direct(
    inbound: SocketAddr,
    config: Arc<ClientConfig>,
    target: &str,
) -> anyhow::Result<u16> {
    https1_request(
        inbound,
        config,
        HOST,
        "GET",
        "/direct",
        &[("x-trellis-target", target)],
        Vec::new(),
    )
    .await
    .map(|r| r.status.as_u16())
}

#[tokio::test]
async fn inbound_refuses_plaintext_no_certificate_self_signed_and_expired_certificates_at_the_handshake()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let backend = EchoBackend::start_named("b").await.unwrap();
    fronted_mesh(api, &backend, "front").await;
    let mut front = Proxy::start(Proxy::config(
        "front",
        &cp.url(),
        &dir.path().join("front"),
        &[],
    ))
    .await;
    wait_in_sync(api, "front").await;
    let inbound = front.inbound.unwrap();
    let target = format!("127.0.0.1:{}", backend.port());

    // A mesh client passes (so the refusals below are about the certificate).
    let (_, mesh) = join_mesh(api, "tester").await;
    assert_eq!(
        direct(inbound, Arc::clone(&mesh.peer_h1), &target)
            .await
            .unwrap(),
        200
    );
    assert_eq!(backend.requests(), 1);
    let before = handshake_failures(front.admin).await;

    // Plaintext.
    let plain = http1_request(
        inbound,
        HOST,
        "GET",
        "/",
        &[("x-trellis-target", &target)],
        Vec::new(),
    )
    .await;
    assert!(
        plain.is_err(),
        "plaintext answered: {:?}",
        plain.map(|r| r.status)
    );
    // TLS without a client certificate.
    let none = direct(inbound, client(None), &target).await;
    assert!(none.is_err(), "no certificate answered: {none:?}");
    // A self-signed certificate naming a mesh workload.
    let forged = direct(inbound, client(Some(self_signed("tester"))), &target).await;
    assert!(forged.is_err(), "self-signed answered: {forged:?}");
    // A certificate of the real mesh CA that has expired.
    let expired = expired_mesh_cert(&dir.path().join("cp").join("ca"), "tester");
    let old = direct(inbound, client(Some(expired)), &target).await;
    assert!(old.is_err(), "expired certificate answered: {old:?}");

    assert_eq!(backend.requests(), 1, "nothing refused reached the backend");
    trellis_tests::wait_until_async("4 handshake failures counted", PUSH_WAIT, || async {
        handshake_failures(front.admin).await == before + 4.0
    })
    .await
    .unwrap();
    front.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn certificates_renew_twice_while_requests_flow_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(6);
    let mut cp = control_with_ttl(&dir.path().join("cp"), ttl).await;
    let api = cp.api();
    let backend = EchoBackend::start_named("b").await.unwrap();
    fronted_mesh(api, &backend, "front").await;
    let mut front = Proxy::start(Proxy::config(
        "front",
        &cp.url(),
        &dir.path().join("front"),
        &[],
    ))
    .await;
    let mut caller = Proxy::start(Proxy::config(
        "caller",
        &cp.url(),
        &dir.path().join("caller"),
        &["net"],
    ))
    .await;
    wait_for_backend(&caller, HOST, "/", "b").await;

    let expiry_of = |name: &'static str| async move {
        let (_, v) = api.get(&format!("/v1/proxies/{name}")).await;
        v["certificateNotAfter"].as_str().map(str::to_string)
    };
    let mut seen_front = std::collections::BTreeSet::new();
    let mut seen_caller = std::collections::BTreeSet::new();
    let (mut ok, mut failed) = (0u32, Vec::new());
    // One keep-alive client connection plus fresh ones, for about three
    // lifetimes of 6 s (each renewed at ~70 %).
    let mut conn = Http1Connection::connect(caller.outbound).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(16);
    let mut i = 0u32;
    while tokio::time::Instant::now() < deadline {
        i += 1;
        let r = if i.is_multiple_of(2) {
            conn.request(HOST, "GET", "/flow", &[], Vec::new()).await
        } else {
            http1_request(caller.outbound, HOST, "GET", "/flow", &[], Vec::new()).await
        };
        match r {
            Ok(r) if r.status == 200 => ok += 1,
            Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
            Err(e) => failed.push(e.to_string()),
        }
        if i.is_multiple_of(10) {
            if let Some(t) = expiry_of("front").await {
                seen_front.insert(t);
            }
            if let Some(t) = expiry_of("caller").await {
                seen_caller.insert(t);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests");
    assert!(
        seen_front.len() >= 3,
        "front renewed at least twice: {seen_front:?}"
    );
    assert!(
        seen_caller.len() >= 3,
        "caller renewed at least twice: {seen_caller:?}"
    );
    // The renewed certificate is saved with its key, owner-only.
    let key = dir.path().join("front").join("identity").join("key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    caller.stop().await;
    front.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn caller_identity_headers_come_from_the_certificate_and_cannot_be_forged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let backend = EchoBackend::start_named("b").await.unwrap();
    fronted_mesh(api, &backend, "front").await;
    let mut front = Proxy::start(Proxy::config(
        "front",
        &cp.url(),
        &dir.path().join("front"),
        &[],
    ))
    .await;
    let mut caller = Proxy::start(Proxy::config(
        "caller",
        &cp.url(),
        &dir.path().join("caller"),
        &["net"],
    ))
    .await;
    wait_for_backend(&caller, HOST, "/", "b").await;
    let forged = [
        (
            "x-trellis-caller-identity",
            "spiffe://trellis.local/account/999999999999/workload/admin",
        ),
        ("x-trellis-caller-account", "999999999999"),
    ];

    // Through the caller's outbound: the inbound names the caller proxy.
    let r = http1_request(caller.outbound, HOST, "GET", "/who", &forged, Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen: Value = r.json().unwrap();
    assert_eq!(
        seen["headers"]["x-trellis-caller-identity"],
        spiffe("caller"),
        "{seen}"
    );
    assert_eq!(
        seen["headers"]["x-trellis-caller-account"], "000000000000",
        "{seen}"
    );

    // The caller's pool keeps its mTLS connection to the front: 30 more
    // requests make no new handshake (one at most, should a pooled
    // connection have been closed meanwhile).
    let handshakes = |admin| async move {
        let r = http1_request(admin, "metrics", "GET", "/metrics", &[], Vec::new())
            .await
            .unwrap();
        prom::parse(&r.text())
            .unwrap()
            .get("trellis_tls_handshakes_total", &[])
            .unwrap()
    };
    let before = handshakes(front.admin).await;
    assert!(
        before >= 1.0,
        "the caller's connection was an mTLS handshake"
    );
    for _ in 0..30 {
        let r = http1_request(caller.outbound, HOST, "GET", "/pooled", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let made = handshakes(front.admin).await - before;
    assert!(
        made <= 1.0,
        "{made} handshakes for 30 requests: the pool does not reuse connections"
    );

    // Straight at the inbound with another mesh certificate: that one.
    let (_, mesh) = join_mesh(api, "tester").await;
    let target = format!("127.0.0.1:{}", backend.port());
    let mut h = forged.to_vec();
    h.push(("x-trellis-target", &target));
    let r = https1_request(
        front.inbound.unwrap(),
        Arc::clone(&mesh.peer_h1),
        HOST,
        "GET",
        "/who",
        &h,
        Vec::new(),
    )
    .await
    .unwrap();
    let seen: Value = r.json().unwrap();
    assert_eq!(
        seen["headers"]["x-trellis-caller-identity"],
        spiffe("tester"),
        "{seen}"
    );
    assert_eq!(
        seen["headers"]["x-trellis-caller-account"], "000000000000",
        "{seen}"
    );

    // A target no proxy fronts: the outbound strips them and nobody sets them.
    api.put(
        "target-groups",
        json!({"name": "tg", "port": backend.port(), "targets": [{"address": "127.0.0.1"}]}),
    )
    .await;
    trellis_tests::wait_until_async("direct path", PUSH_WAIT, || async {
        let r = http1_request(caller.outbound, HOST, "GET", "/who", &forged, Vec::new())
            .await
            .unwrap();
        let seen: Value = r.json().unwrap();
        seen["headers"].get("x-trellis-target").is_none()
            && seen["headers"].get("x-forwarded-for").is_some()
            && backend.requests() > 0
            && seen["headers"].get("x-trellis-caller-identity").is_none()
            && seen["headers"].get("x-trellis-caller-account").is_none()
    })
    .await
    .unwrap();
    caller.stop().await;
    front.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn proxy_endpoints_need_the_proxys_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let mut p1 = Proxy::start(Proxy::config("p1", &cp.url(), &dir.path().join("p1"), &[])).await;
    wait_in_sync(api, "p1").await;
    let (status, v) = api.get("/v1/proxies/p1").await;
    assert_eq!(status, 200);
    let not_after = v["certificateNotAfter"]
        .as_str()
        .expect("certificateNotAfter");
    assert!(humantime::parse_rfc3339(not_after).is_ok(), "{v}");

    // Plain HTTP: the proxy-facing routes answer 401 and say why.
    for (method, path) in [
        ("POST", "/v1/proxies"),
        ("GET", "/v1/proxies/p1/watch"),
        ("POST", "/v1/proxies/p1/ack"),
        ("POST", "/v1/proxies/p1/health"),
        ("POST", "/v1/proxies/p1/renew"),
    ] {
        let r = api.call(method, path, &json!({"name": "p1"}), &[]).await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        assert_eq!(r.json().unwrap()["error"], "proxy_certificate_required");
    }
    // TLS without a certificate: refused at the handshake.
    let r = Http1Connection::connect_tls_to(api.addr, client(None), "127.0.0.1").await;
    let refused = match r {
        Err(_) => true,
        Ok(mut c) => c
            .request("control", "GET", "/healthz", &[], Vec::new())
            .await
            .is_err(),
    };
    assert!(
        refused,
        "the control plane served TLS without a client certificate"
    );
    // Another proxy's certificate: 403 for p1's routes, its own work.
    let (_, other) = join_mesh(api, "p2").await;
    for (method, path) in [
        ("GET", "/v1/proxies/p1/watch"),
        ("POST", "/v1/proxies/p1/ack"),
        ("POST", "/v1/proxies/p1/health"),
        ("POST", "/v1/proxies/p1/renew"),
    ] {
        let r = proxy_call(
            api,
            &other,
            method,
            path,
            &json!({"version": 1, "targets": [], "csr": "x"}),
        )
        .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
    }
    let r = proxy_call(api, &other, "POST", "/v1/proxies", &json!({"name": "p1"})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = proxy_call(api, &other, "POST", "/v1/proxies", &json!({"name": "p2"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(api.get("/v1/proxies/p2").await.1["account"], "000000000000");
    p1.stop().await;
    cp.stop().await;
}

async fn join_with(api: Api, token: &str, name: &str) -> trellis_tests::HttpResponse {
    let id: trellis_proxy::identity::WorkloadIdentity = spiffe(name).parse().unwrap();
    let (_, csr) = trellis_proxy::identity::new_csr(&id).unwrap();
    let auth = format!("Bearer {token}");
    api.call(
        "POST",
        "/v1/join",
        &json!({"name": name, "csr": csr}),
        &[("authorization", &auth)],
    )
    .await
}

async fn new_token(api: Api, body: Value) -> (String, String) {
    let r = api.call("POST", "/v1/join-tokens", &body, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v: Value = r.json().unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn join_tokens_expired_used_up_revoked_or_unknown_get_401_without_echoing_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();

    let (_, once) = new_token(
        api,
        json!({"ttlSeconds": 600, "maxUses": 1, "description": "one proxy"}),
    )
    .await;
    let r = join_with(api, &once, "a1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = r.json().unwrap();
    assert_eq!(v["identity"], spiffe("a1"));
    assert!(
        v["caBundle"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let r = join_with(api, &once, "a2").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json().unwrap()["error"], "join_token_used_up");
    assert!(!r.text().contains(&once));

    let (_, short) = new_token(api, json!({"ttlSeconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = join_with(api, &short, "b").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json().unwrap()["error"], "join_token_expired");
    assert!(!r.text().contains(&short));

    let (id, revoked) = new_token(api, json!({"ttlSeconds": 600, "maxUses": null})).await;
    let r = api
        .call(
            "DELETE",
            &format!("/v1/join-tokens/{id}"),
            &Value::Null,
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = join_with(api, &revoked, "c").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json().unwrap()["error"], "join_token_revoked");

    let forged = format!("tjt_{}_{}", id, "0".repeat(64));
    let r = join_with(api, &forged, "d").await;
    assert_eq!(r.json().unwrap()["error"], "join_token_unknown");
    let r = api
        .call("POST", "/v1/join", &json!({"name": "e", "csr": "x"}), &[])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json().unwrap()["error"], "join_token_missing");

    // A bad CSR is a 400 naming the field, and uses nothing.
    let (_, two) = new_token(api, json!({"ttlSeconds": 600, "maxUses": 1})).await;
    let auth = format!("Bearer {two}");
    let r = api
        .call(
            "POST",
            "/v1/join",
            &json!({"name": "f", "csr": "not a csr"}),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json().unwrap()["fieldErrors"][0]["field"], "csr");
    assert_eq!(join_with(api, &two, "f").await.status, 200);

    // Bad requests name the field.
    let r = api
        .call(
            "POST",
            "/v1/join-tokens",
            &json!({"ttlSeconds": 0, "maxUses": 0}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let fields: Vec<Value> = r.json().unwrap()["fieldErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, vec![json!("ttlSeconds"), json!("maxUses")]);

    // The list shows every token's state, never a value.
    let (status, list) = api.get("/v1/join-tokens").await;
    assert_eq!(status, 200);
    let text = list.to_string();
    for t in [&once, &short, &revoked, &two] {
        assert!(!text.contains(t.as_str()), "a token value is listed");
    }
    let states: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["used_up", "expired", "revoked", "used_up"]);
    cp.stop().await;
}

#[tokio::test]
async fn a_restarted_proxy_reuses_its_saved_certificate_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let (_, token) = new_token(api, json!({"ttlSeconds": 600, "maxUses": 1})).await;
    let mut cfg = Proxy::config("p1", &cp.url(), &dir.path().join("p1"), &[]);
    cfg.join_token = Some(token.as_str().into());
    let mut p = Proxy::start(cfg.clone()).await;
    wait_in_sync(api, "p1").await;
    p.stop().await;
    let (_, first) = api.get("/v1/proxies/p1").await;
    // The token is used up (a join with it would be refused); the saved
    // identity is enough to connect again, with the same certificate.
    let mut p = Proxy::start(cfg).await;
    trellis_tests::wait_until_async("p1 back", PUSH_WAIT, || async {
        let v = api.get("/v1/proxies/p1").await.1;
        v["connected"] == true && v["lastContact"] != first["lastContact"]
    })
    .await
    .unwrap();
    let (_, again) = api.get("/v1/proxies/p1").await;
    assert_eq!(first["certificateNotAfter"], again["certificateNotAfter"]);
    let tokens = api.get("/v1/join-tokens").await.1;
    assert_eq!(tokens["items"][0]["uses"], 1, "{tokens}");
    p.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn a_proxy_whose_certificate_expired_is_not_ready_and_refuses_mesh_traffic_until_it_joins_again()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = control_with_ttl(&dir.path().join("cp"), Duration::from_secs(5)).await;
    let api = cp.api();
    let mut p = Proxy::start(Proxy::config("p1", &cp.url(), &dir.path().join("p1"), &[])).await;
    wait_in_sync(api, "p1").await;
    // A long-lived client certificate, so only the proxy's can expire.
    let tester = client(Some(mesh_cert(
        &dir.path().join("cp").join("ca"),
        "tester",
        (2020, 2100),
    )));
    let ready = |admin: SocketAddr| async move {
        http1_request(admin, "admin", "GET", "/ready", &[], Vec::new())
            .await
            .unwrap()
            .status
            .as_u16()
    };
    assert_eq!(ready(p.admin).await, 200);
    let r = https1_request(
        p.inbound.unwrap(),
        Arc::clone(&tester),
        HOST,
        "GET",
        "/",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(
        r.unwrap().status,
        400,
        "the handshake passes while the certificate is valid"
    );
    // No control plane: renewals fail until the certificate expires.
    cp.stop().await;
    trellis_tests::wait_until_async("not ready after expiry", PUSH_WAIT, || async {
        ready(p.admin).await == 503
    })
    .await
    .unwrap();
    let r = https1_request(
        p.inbound.unwrap(),
        Arc::clone(&tester),
        HOST,
        "GET",
        "/",
        &[],
        Vec::new(),
    )
    .await;
    assert!(
        r.is_err(),
        "an expired proxy served mesh traffic: {:?}",
        r.map(|r| r.status)
    );
    // The control plane is back: the proxy joins again with its token.
    let addr = cp.addr;
    let mut cp = Control::start_at(&dir.path().join("cp"), addr).await;
    trellis_tests::wait_until_async("ready again", PUSH_WAIT, || async {
        ready(p.admin).await == 200
    })
    .await
    .unwrap();
    let r = https1_request(
        p.inbound.unwrap(),
        tester,
        HOST,
        "GET",
        "/",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(r.unwrap().status, 400, "mesh traffic is accepted again");
    p.stop().await;
    cp.stop().await;
}

/// Everything traced in this test process (each test is its own process
/// under nextest, so the global subscriber is this test's).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn logs_of_joins_renewals_and_refusals_hold_no_private_key_and_no_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let installed = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    assert!(installed.is_ok(), "another subscriber is installed");

    let dir = tempfile::tempdir().unwrap();
    let mut cp = control_with_ttl(&dir.path().join("cp"), Duration::from_secs(5)).await;
    let api = cp.api();
    let backend = EchoBackend::start_named("b").await.unwrap();
    fronted_mesh(api, &backend, "front").await;
    let (_, front_token) = new_token(api, json!({"ttlSeconds": 600, "maxUses": 1})).await;
    let (_, caller_token) = new_token(api, json!({"ttlSeconds": 600})).await;
    let mut cfg = Proxy::config("front", &cp.url(), &dir.path().join("front"), &[]);
    cfg.join_token = Some(front_token.as_str().into());
    let mut front = Proxy::start(cfg).await;
    let mut cfg = Proxy::config("caller", &cp.url(), &dir.path().join("caller"), &["net"]);
    cfg.join_token = Some(caller_token.as_str().into());
    let mut caller = Proxy::start(cfg).await;
    wait_for_backend(&caller, HOST, "/", "b").await;
    // Refused joins, then at least one renewal (5 s certificates).
    assert_eq!(join_with(api, &front_token, "x").await.status, 401);
    assert_eq!(
        join_with(api, "tjt_0011223344556677_00", "y").await.status,
        401
    );
    let auth = format!("Bearer {caller_token}");
    let r = api
        .call(
            "POST",
            "/v1/join",
            &json!({"name": "bad name!", "csr": "x"}),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 400);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        http1_request(caller.outbound, HOST, "GET", "/", &[], Vec::new())
            .await
            .unwrap()
            .status,
        200
    );
    caller.stop().await;
    front.stop().await;
    cp.stop().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("joined the mesh"), "the capture works");
    assert!(
        log.contains("mesh certificate renewed"),
        "a renewal happened"
    );
    assert!(log.contains("join refused"), "refusals are logged");
    assert!(!log.contains("PRIVATE KEY"), "a private key PEM was logged");
    for token in [&front_token, &caller_token] {
        let secret = token.rsplit('_').next().unwrap();
        assert!(!log.contains(secret), "a join token value was logged");
    }
    let mut secrets = Vec::new();
    for key in [
        dir.path()
            .join("cp")
            .join("ca")
            .join(trellis_control::ca::KEY_FILE),
        dir.path().join("front").join("identity").join("key.pem"),
        dir.path().join("caller").join("identity").join("key.pem"),
    ] {
        secrets.extend(pem_body_lines(&std::fs::read_to_string(&key).unwrap()));
    }
    assert!(!secrets.is_empty());
    for line in secrets {
        assert!(!log.contains(&line), "key material was logged");
    }
}

#[tokio::test]
async fn the_caller_refuses_a_mesh_proxy_that_is_not_the_one_fronting_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let backend = EchoBackend::start_named("b").await.unwrap();
    fronted_mesh(api, &backend, "front").await;
    // "front" is registered with the inbound address of another proxy.
    let mut impostor = Proxy::start(Proxy::config(
        "impostor",
        &cp.url(),
        &dir.path().join("impostor"),
        &[],
    ))
    .await;
    wait_in_sync(api, "impostor").await;
    let (_, front) = join_mesh(api, "front").await;
    let inbound = impostor.inbound.unwrap().to_string();
    let r = proxy_call(
        api,
        &front,
        "POST",
        "/v1/proxies",
        &json!({"name": "front", "inboundAddress": inbound}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mut caller = Proxy::start(Proxy::config(
        "caller",
        &cp.url(),
        &dir.path().join("caller"),
        &["net"],
    ))
    .await;
    wait_in_sync(api, "caller").await;
    let served = |r: &trellis_tests::HttpResponse| r.header("x-trellis-error").map(str::to_string);
    let r = trellis_tests::eventually("the caller routes to the front", PUSH_WAIT, || async {
        let r = http1_request(caller.outbound, HOST, "GET", "/", &[], Vec::new())
            .await
            .unwrap();
        (r.status != 404).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        served(&r).as_deref(),
        Some("upstream_connect_failed"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("impostor"),
        "the refusal names who answered: {}",
        r.text()
    );
    assert_eq!(backend.requests(), 0);
    caller.stop().await;
    impostor.stop().await;
    cp.stop().await;
}

/// A TLS client for clients outside the mesh: trusts the mesh CA only.
fn https_client(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn an_https_listener_serves_its_host_certificate_by_sni_to_clients_outside_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Control::start_in(&dir.path().join("cp")).await;
    let api = cp.api();
    let backend = EchoBackend::start_named("b").await.unwrap();
    let log = dir.path().join("access.log");
    api.put("service-networks", json!({"name": "net"})).await;
    api.put(
        "target-groups",
        json!({"name": "tg", "port": backend.port(), "targets": [{"address": "127.0.0.1"}]}),
    )
    .await;
    api.put(
        "services",
        json!({"name": "secure", "customDomain": "secure.example.com",
               "listeners": [{"name": "https", "protocol": "HTTPS", "defaultAction": forward("tg")}]}),
    )
    .await;
    api.put(
        "service-associations",
        json!({"name": "secure-net", "serviceNetwork": "net", "service": "secure"}),
    )
    .await;
    api.put(
        "access-log-subscriptions",
        json!({"name": "log", "resource": {"serviceNetwork": "net"},
               "destination": {"file": {"path": log.to_str().unwrap()}}}),
    )
    .await;
    let mut p = Proxy::start(Proxy::config(
        "p1",
        &cp.url(),
        &dir.path().join("p1"),
        &["net"],
    ))
    .await;
    wait_in_sync(api, "p1").await;
    let r = api.call("GET", "/v1/ca", &Value::Null, &[]).await;
    assert_eq!(r.status, 200);
    let ca = r.text();
    assert!(
        ca.contains("BEGIN CERTIFICATE") && !ca.contains("PRIVATE"),
        "{ca}"
    );
    let client = https_client(&ca);

    // The proxy asks for the certificate after the snapshot arrives.
    let outbound = p.outbound;
    let r = trellis_tests::eventually("HTTPS answers", PUSH_WAIT, || {
        let client = Arc::clone(&client);
        async move {
            let mut c = Http1Connection::connect_tls_to(outbound, client, "secure.example.com")
                .await
                .ok()?;
            c.request("secure.example.com", "GET", "/tls", &[], Vec::new())
                .await
                .ok()
        }
    })
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["backend"], "b");
    // The generated name is served too; an unknown name fails the handshake.
    let mut c = Http1Connection::connect_tls_to(
        p.outbound,
        Arc::clone(&client),
        "secure.net.trellis.internal",
    )
    .await
    .unwrap();
    let r = c
        .request("secure.net.trellis.internal", "GET", "/", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let unknown =
        match Http1Connection::connect_tls_to(p.outbound, Arc::clone(&client), "nope.example.com")
            .await
        {
            Err(_) => true,
            Ok(mut c) => c
                .request("nope.example.com", "GET", "/", &[], Vec::new())
                .await
                .is_err(),
        };
    assert!(unknown, "an unknown SNI name was served");
    // Plain HTTP to the same host addresses port 80, where it has no listener.
    let r = http1_request(
        p.outbound,
        "secure.example.com",
        "GET",
        "/",
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    // The access log names the SNI and the TLS version.
    trellis_tests::wait_until_async("logged", PUSH_WAIT, || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/tls"))
    })
    .await
    .unwrap();
    let line = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find(|l| l.contains("/tls"))
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["serverNameIndication"], "secure.example.com", "{v}");
    assert_eq!(v["tlsVersion"], "TLSv1.3", "{v}");
    p.stop().await;
    cp.stop().await;
}
