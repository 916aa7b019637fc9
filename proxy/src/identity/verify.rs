//! Certificate verifiers for mesh mTLS: chain to the mesh CA, and name a
//! workload of our trust domain.
//!
//! Mesh certificates carry no DNS names, only a SPIFFE URI, so the usual
//! server-name check cannot apply: the client side checks the chain
//! (with the server-auth usage) and then the SPIFFE id instead. The server
//! side is rustls' WebPKI client verifier (chain, client-auth usage,
//! mandatory) with the same SPIFFE check added, so a certificate from the
//! mesh CA that names no workload of this mesh fails at the handshake.

use super::peer::peer_identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};
use std::sync::Arc;

/// Why a verified chain is still refused. rustls prints certificate
/// errors with `Debug`, so `Debug` is the message.
#[derive(thiserror::Error)]
#[error(
    "the peer certificate names no workload of trust domain '{0}' \
     (spiffe://{0}/account/<id>/workload/<name>)"
)]
struct NotOurTrustDomain(String);

impl std::fmt::Debug for NotOurTrustDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn check_spiffe(end_entity: &CertificateDer<'_>, trust_domain: &str) -> Result<(), Error> {
    match peer_identity(std::slice::from_ref(end_entity)) {
        Some(id) if id.trust_domain() == trust_domain => Ok(()),
        _ => Err(Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(NotOurTrustDomain(trust_domain.to_owned()))),
        ))),
    }
}

/// Client side: the server's chain leads to the mesh CA and names a
/// workload of `trust_domain`. The server name the connector passes is
/// not checked (mesh certificates have no DNS names).
#[derive(Debug)]
pub(crate) struct MeshServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
    pub(crate) trust_domain: String,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        check_spiffe(end_entity, &self.trust_domain)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Unreachable with TLS 1.3 only configs; correct if ever reached.
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server side: rustls' WebPKI client verifier (client certificate
/// required, chain to the mesh CA, client-auth usage) plus the SPIFFE
/// trust-domain check.
#[derive(Debug)]
pub(crate) struct MeshClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) trust_domain: String,
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_spiffe(end_entity, &self.trust_domain)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
