//! TLS of the agent API.
//!
//! The server presents its own X.509-SVID (`spiffe://<td>/spire/server`), swapped in place as
//! it renews and as the CA rotates. Clients are verified against the *live* trust bundle, so
//! agents whose SVIDs come from a freshly activated CA are accepted without a restart. A
//! client certificate is optional at the TLS layer, because `Attest` is how an agent gets one;
//! every other RPC requires it (checked per call from [`AgentPeer`]).

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tessera_identity::{verify_x509_svid, Bundle, SpiffeId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The trust bundle and server certificate, replaced as they change.
#[derive(Debug)]
pub struct LiveTls {
    bundle: RwLock<Arc<Bundle>>,
    server_key: RwLock<Option<Arc<CertifiedKey>>>,
}

impl LiveTls {
    /// Starts with `bundle` and no server certificate yet.
    pub fn new(bundle: Bundle) -> Self {
        Self {
            bundle: RwLock::new(Arc::new(bundle)),
            server_key: RwLock::new(None),
        }
    }

    /// The current bundle.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the bundle.
    pub fn set_bundle(&self, bundle: Bundle) {
        let mut slot = self
            .bundle
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Arc::new(bundle);
    }

    /// Replaces the server certificate and key.
    pub fn set_server_key(&self, key: Arc<CertifiedKey>) {
        let mut slot = self
            .server_key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(key);
    }
}

/// Serves the current server SVID.
#[derive(Debug)]
pub struct ServerCert(pub Arc<LiveTls>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .server_key
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// Verifies agent SVIDs against the live bundle.
#[derive(Debug)]
pub struct AgentVerifier {
    live: Arc<LiveTls>,
    provider: Arc<CryptoProvider>,
}

impl AgentVerifier {
    /// A verifier over `live`.
    pub fn new(live: Arc<LiveTls>, provider: Arc<CryptoProvider>) -> Self {
        Self { live, provider }
    }
}

impl ClientCertVerifier for AgentVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut chain: Vec<&[u8]> = vec![end_entity.as_ref()];
        chain.extend(intermediates.iter().map(|c| c.as_ref()));
        let bundle = self.live.bundle();
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let verified = verify_x509_svid(&chain, bundle.as_ref(), now).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        if !verified.spiffe_id().path().starts_with("/spire/agent/") {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Who is on the other end of a connection: an authenticated agent, or nobody yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentPeer {
    /// The agent's SPIFFE ID, if it presented a valid SVID.
    pub spiffe_id: Option<SpiffeId>,
    /// Serial (hex) of the SVID it presented.
    pub serial: Option<String>,
}

impl AgentPeer {
    fn from_certs(certs: Option<&[CertificateDer<'static>]>) -> Self {
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return AgentPeer::default();
        };
        let Ok((_, cert)) = X509Certificate::from_der(leaf.as_ref()) else {
            return AgentPeer::default();
        };
        AgentPeer {
            spiffe_id: tessera_identity::check_x509_svid_leaf(leaf.as_ref()).ok(),
            serial: Some(hex::encode(cert.raw_serial())),
        }
    }
}

/// A TLS connection with its peer, for tonic (`Connected`).
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: AgentPeer,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("peer", &self.peer).finish()
    }
}

impl TlsConn {
    /// Wraps an established TLS stream.
    pub fn new(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        let peer = AgentPeer::from_certs(stream.get_ref().1.peer_certificates());
        Self { stream, peer }
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = AgentPeer;

    fn connect_info(&self) -> AgentPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A rustls server config over `live`: TLS 1.3/1.2 with ring, optional client SVIDs, h2.
pub fn server_config(live: Arc<LiveTls>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AgentVerifier::new(live.clone(), provider.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ServerCert(live)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
