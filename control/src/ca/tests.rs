//! The CA through its public interface: files on disk, CSRs in, PEM out.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, SanType};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use trellis_config::identity::{
    DEFAULT_CERT_TTL, DEFAULT_TRUST_DOMAIN, MAX_CERT_TTL, MIN_CERT_TTL,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const ACCOUNT: &str = "123456789012";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A CSR for a fresh key that asks for far more than it may get.
fn greedy_csr() -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![
        "evil.example.com".to_string(),
        "127.0.0.1".to_string(),
    ])
    .unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://trellis.local/account/999999999999/workload/admin"
            .try_into()
            .unwrap(),
    ));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn parse(pem: &str) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => u.to_string(),
                    other => format!("other:{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn creates_key_0600_and_cert_then_reloads_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("data").join("ca");
    let ca = MeshCa::load_or_create(&ca_dir, DEFAULT_TRUST_DOMAIN).unwrap();
    assert_eq!(mode(&ca_dir.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&ca_dir.join(CERT_FILE)) & 0o022, 0);
    assert_eq!(mode(&ca_dir) & 0o077, 0);
    assert_eq!(ca.trust_domain(), "trellis.local");
    assert_eq!(
        fs::read_to_string(ca_dir.join(CERT_FILE)).unwrap(),
        ca.root_pem()
    );

    let again = MeshCa::load_or_create(&ca_dir, DEFAULT_TRUST_DOMAIN).unwrap();
    assert_eq!(again.root_pem(), ca.root_pem());
    assert_eq!(again.root_der(), ca.root_der());

    // The root: a CA, naming the trust domain, for leaves only.
    let (_, root) = X509Certificate::from_der(ca.root_der()).unwrap();
    assert!(root.is_ca());
    assert_eq!(uris(&root), vec!["spiffe://trellis.local".to_string()]);
    let bc = root.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(0));

    // A leaf from the first instance verifies under the reloaded root.
    let issued = ca
        .sign_csr(&greedy_csr(), ACCOUNT, "web", DEFAULT_CERT_TTL)
        .unwrap();
    let leaf_der = parse(&issued.cert_pem);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, reloaded_root) = X509Certificate::from_der(again.root_der()).unwrap();
    leaf.verify_signature(Some(reloaded_root.public_key()))
        .unwrap();
}

#[test]
fn debug_never_shows_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let key_pem = fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let debug = format!("{ca:?} {ca:#?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line), "{debug}");
    }
    assert!(body.len() > 100);
}

/// Env var that makes [`log_probe`] do its work (in a child process).
const LOG_PROBE_DIR: &str = "TRELLIS_CA_LOG_PROBE_DIR";

#[test]
fn logs_of_creating_loading_and_signing_contain_no_key() {
    // tracing's per-callsite interest cache is process-wide, so capturing
    // logs beside tests running in parallel loses events. Run the probe
    // alone in a child process with a global subscriber instead.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ca::tests::log_probe",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOG_PROBE_DIR, dir.path())
        .output()
        .unwrap();
    let logs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{logs}");
    assert!(logs.contains("created a new CA key"), "{logs}");
    assert!(logs.contains("issued the root certificate"), "{logs}");
    assert!(logs.contains("issued a workload certificate"), "{logs}");
    assert!(logs.contains("<redacted>"), "{logs}");
    let key_pem = fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!logs.contains(line), "key material in logs: {logs}");
    }
    assert!(!logs.contains("PRIVATE KEY"), "{logs}");
}

/// Does nothing unless [`LOG_PROBE_DIR`] is set (by the test above).
#[test]
fn log_probe() {
    let Some(dir) = std::env::var_os(LOG_PROBE_DIR) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .init();
    let ca = MeshCa::load_or_create(&dir, DEFAULT_TRUST_DOMAIN).unwrap();
    tracing::debug!(?ca, "loaded");
    ca.sign_csr(&greedy_csr(), ACCOUNT, "web", DEFAULT_CERT_TTL)
        .unwrap();
    MeshCa::load_or_create(&dir, DEFAULT_TRUST_DOMAIN).unwrap();
}

#[test]
fn leaf_names_only_the_spiffe_id_whatever_the_csr_asks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), "prod.example").unwrap();
    let before = SystemTime::now();
    let issued = ca
        .sign_csr(&greedy_csr(), ACCOUNT, "checkout", DEFAULT_CERT_TTL)
        .unwrap();
    assert_eq!(
        issued.identity.to_string(),
        "spiffe://prod.example/account/123456789012/workload/checkout"
    );
    assert_eq!(issued.chain_pem, ca.root_pem());

    let der = parse(&issued.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    // Exactly one SAN: the SPIFFE id (no DNS, IP or the requested URI).
    assert_eq!(uris(&cert), vec![issued.identity.to_string()]);
    assert!(!cert.is_ca(), "the CSR's CA request must be ignored");
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert!(!eku.any && !eku.code_signing && eku.other.is_empty());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());

    // Validity: a little backdated, then exactly the TTL from issuance.
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let secs = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(secs(issued.not_before), nb);
    assert_eq!(secs(issued.not_after), na);
    assert_eq!(na - nb, DEFAULT_CERT_TTL.as_secs() as i64 + 60);
    assert!((na - secs(before) - DEFAULT_CERT_TTL.as_secs() as i64).abs() <= 2);

    // Signed by the root; random serials.
    let (_, root) = X509Certificate::from_der(ca.root_der()).unwrap();
    cert.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(cert.issuer(), root.subject());
    let other = ca
        .sign_csr(&greedy_csr(), ACCOUNT, "checkout", DEFAULT_CERT_TTL)
        .unwrap();
    assert_ne!(issued.serial, other.serial);
    assert_eq!(issued.serial.len(), 32);
    assert_eq!(
        cert.raw_serial_as_string().replace(':', "").to_uppercase(),
        issued.serial
    );
}

#[test]
fn bad_csrs_and_requests_are_refused_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let csr = greedy_csr();

    let err = ca
        .sign_csr("hello", ACCOUNT, "web", DEFAULT_CERT_TTL)
        .unwrap_err();
    assert!(matches!(err, CaError::Csr(_)), "{err:?}");
    assert!(err.to_string().contains("CERTIFICATE REQUEST"), "{err}");

    // A certificate is not a CSR.
    let err = ca
        .sign_csr(ca.root_pem(), ACCOUNT, "web", DEFAULT_CERT_TTL)
        .unwrap_err();
    assert!(matches!(err, CaError::Csr(_)), "{err:?}");

    // A CSR whose signature no longer matches (one byte of the signature flipped).
    use rustls_pki_types::CertificateSigningRequestDer;
    use rustls_pki_types::pem::PemObject;
    let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let tampered = pem_encode("CERTIFICATE REQUEST", &der);
    let err = ca
        .sign_csr(&tampered, ACCOUNT, "web", DEFAULT_CERT_TTL)
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err:?}");

    let huge = "A".repeat(MAX_CSR_PEM_LEN + 1);
    let err = ca
        .sign_csr(&huge, ACCOUNT, "web", DEFAULT_CERT_TTL)
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");

    let err = ca
        .sign_csr(&csr, "12", "web", DEFAULT_CERT_TTL)
        .unwrap_err();
    assert!(
        matches!(err, CaError::Identity(InvalidIdentity::Account { .. })),
        "{err:?}"
    );
    let err = ca
        .sign_csr(&csr, ACCOUNT, "Web_1", DEFAULT_CERT_TTL)
        .unwrap_err();
    assert!(
        matches!(err, CaError::Identity(InvalidIdentity::Workload { .. })),
        "{err:?}"
    );

    for ttl in [
        MIN_CERT_TTL - Duration::from_secs(1),
        MAX_CERT_TTL + Duration::from_secs(1),
    ] {
        let err = ca.sign_csr(&csr, ACCOUNT, "web", ttl).unwrap_err();
        assert!(matches!(err, CaError::Ttl { .. }), "{err:?}");
        assert!(err.to_string().contains("out of range"), "{err}");
    }
    ca.sign_csr(&csr, ACCOUNT, "web", MIN_CERT_TTL).unwrap();
    ca.sign_csr(&csr, ACCOUNT, "web", MAX_CERT_TTL).unwrap();
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    // Base64 by hand keeps the test free of another dependency.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        body.join("\n")
    )
}

#[test]
fn loose_key_permissions_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let key = dir.path().join(KEY_FILE);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, CaError::KeyPermissions { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(msg.contains("0644") && msg.contains("chmod 600"), "{msg}");
    assert!(msg.contains(&key.display().to_string()), "{msg}");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
}

#[test]
fn another_trust_domain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    MeshCa::load_or_create(dir.path(), "mesh-a.example").unwrap();
    let err = MeshCa::load_or_create(dir.path(), "mesh-b.example").unwrap_err();
    assert!(
        matches!(err, CaError::TrustDomainMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("'mesh-a.example'"), "{err}");
    let err = MeshCa::load_or_create(dir.path(), "Not Valid").unwrap_err();
    assert!(matches!(err, CaError::Identity(_)), "{err:?}");
}

#[test]
fn missing_root_is_reissued_from_the_key_and_still_verifies_old_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let issued = ca
        .sign_csr(&greedy_csr(), ACCOUNT, "web", DEFAULT_CERT_TTL)
        .unwrap();
    fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
    let again = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    assert_ne!(again.root_der(), ca.root_der());
    let leaf_der = parse(&issued.cert_pem);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, root) = X509Certificate::from_der(again.root_der()).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(leaf.issuer(), root.subject());
}

#[test]
fn a_root_of_another_key_or_garbage_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    MeshCa::load_or_create(a.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let other = MeshCa::load_or_create(b.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    fs::write(a.path().join(CERT_FILE), other.root_pem()).unwrap();
    let err = MeshCa::load_or_create(a.path(), DEFAULT_TRUST_DOMAIN).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");

    fs::write(a.path().join(CERT_FILE), "not a certificate").unwrap();
    let err = MeshCa::load_or_create(a.path(), DEFAULT_TRUST_DOMAIN).unwrap_err();
    assert!(matches!(err, CaError::BadRoot { .. }), "{err:?}");

    fs::write(a.path().join(KEY_FILE), "not a key").unwrap();
    let err = MeshCa::load_or_create(a.path(), DEFAULT_TRUST_DOMAIN).unwrap_err();
    assert!(matches!(err, CaError::BadKey { .. }), "{err:?}");
    assert!(!err.to_string().contains("not a key"), "{err}");
}

#[test]
fn certificates_can_be_issued_in_the_past_for_expiry_tests() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN).unwrap();
    let past = SystemTime::now() - Duration::from_secs(3600);
    let issued = ca
        .sign_csr_at(&greedy_csr(), ACCOUNT, "web", Duration::from_secs(60), past)
        .unwrap();
    assert!(issued.not_after < SystemTime::now());
}
