//! Connections to upstreams: plain TCP, or mutual TLS to a peer proxy.
//!
//! The scheme of the URI says which: `http` is a target itself (plain),
//! `https` is the inbound listener of the proxy fronting a target. For
//! `https` a proxy with a mesh identity makes an mTLS handshake (TLS 1.3,
//! the peer must be a mesh proxy); a proxy in plaintext mode (no identity
//! configured at all) connects in plain TCP; a proxy that requires an
//! identity but has none yet fails the connection. The same connector
//! reaches the control plane's proxy-facing endpoints
//! ([`Purpose::Control`]), verified by host name against the mesh CA.

use crate::identity::{MESH_SERVER_NAME, MeshTls};
use futures_util::future::BoxFuture;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What a TLS connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A peer proxy's inbound, speaking HTTP/1.1 or HTTP/2.
    Peer { h2: bool },
    /// The control plane.
    Control,
}

/// Why an `https` connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The proxy requires mesh TLS but has not joined yet.
    #[error("this proxy has no mesh certificate yet (it has not joined the mesh)")]
    NoIdentity,
    /// The URI has no host usable as a TLS server name.
    #[error("'{0}' cannot be a TLS server name")]
    ServerName(String),
    /// The peer is a mesh proxy, but not the one the snapshot says fronts
    /// that address.
    #[error(
        "{addr} is proxy '{found}', but the snapshot says proxy '{expected}' fronts it; refusing it"
    )]
    WrongPeer {
        /// The peer.
        addr: String,
        /// Who the snapshot names.
        expected: String,
        /// Who presented a certificate (`?`: no workload).
        found: String,
    },
    /// The handshake failed (certificate refused, not a mesh proxy, ...).
    #[error("mTLS handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer.
        addr: String,
        /// The cause.
        source: io::Error,
    },
}

/// An HTTP connector that does mesh TLS for `https` URIs.
#[derive(Debug, Clone)]
pub(crate) struct MeshConnector {
    http: HttpConnector,
    mesh: MeshTls,
    purpose: Purpose,
}

impl MeshConnector {
    /// Over `http` (its settings: timeouts, keepalive), which must not
    /// enforce the `http` scheme.
    pub(crate) fn new(mut http: HttpConnector, mesh: MeshTls, purpose: Purpose) -> Self {
        http.enforce_http(false);
        Self {
            http,
            mesh,
            purpose,
        }
    }
}

impl tower_service::Service<http::Uri> for MeshConnector {
    type Response = MeshIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<MeshIo, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut http = self.http.clone();
        let mesh = self.mesh.clone();
        let purpose = self.purpose;
        Box::pin(async move {
            let tls = uri.scheme_str() == Some("https");
            let state = if tls && mesh.is_required() {
                Some(mesh.state().ok_or(ConnectError::NoIdentity)?)
            } else {
                None
            };
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let expected = match purpose {
                Purpose::Peer { .. } => {
                    uri.authority().and_then(|a| mesh.expected_peer(a.as_str()))
                }
                Purpose::Control => None,
            };
            let tcp = tower_service::Service::call(&mut http, uri).await?;
            let Some(state) = state else {
                return Ok(MeshIo::Plain(tcp));
            };
            let (config, name) = match purpose {
                Purpose::Peer { h2 } => (
                    if h2 {
                        Arc::clone(&state.peer_h2)
                    } else {
                        Arc::clone(&state.peer_h1)
                    },
                    ServerName::try_from(MESH_SERVER_NAME)
                        .map_err(|_| ConnectError::ServerName(MESH_SERVER_NAME.into()))?,
                ),
                Purpose::Control => (
                    Arc::clone(&state.control),
                    ServerName::try_from(host.clone())
                        .map_err(|_| ConnectError::ServerName(host.clone()))?,
                ),
            };
            let addr = tcp
                .inner()
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or(host);
            let tls = TlsConnector::from(config)
                .connect(name, tcp.into_inner())
                .await
                .map_err(|source| ConnectError::Handshake {
                    addr: addr.clone(),
                    source,
                })?;
            if let Some(expected) = expected {
                let found = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(crate::identity::peer_identity)
                    .map(|id| id.workload().to_owned());
                if found.as_deref() != Some(expected.as_str()) {
                    return Err(ConnectError::WrongPeer {
                        addr,
                        expected,
                        found: found.unwrap_or_else(|| "?".into()),
                    }
                    .into());
                }
            }
            Ok(MeshIo::Tls(Box::new(TokioIo::new(tls))))
        })
    }
}

/// A plain or TLS connection.
#[derive(Debug)]
pub(crate) enum MeshIo {
    /// Plain TCP.
    Plain(TokioIo<TcpStream>),
    /// Mutual TLS.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for MeshIo {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(s) => s.connected(),
            Self::Tls(s) => {
                let (tcp, session) = s.inner().get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl Read for MeshIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for MeshIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}
