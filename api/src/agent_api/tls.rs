//! TLS of the agent API.
//!
//! The server presents its own X.509-SVID (`spiffe://<td>/spire/server`), swapped in place as
//! it renews and as the CA rotates. Clients are verified against the *live* trust bundle, so
//! agents whose SVIDs come from a freshly activated CA are accepted without a restart. A
//! client certificate is optional at the TLS layer, because `Attest` is how an agent gets one;
//! every other RPC requires it (checked per call from [`AgentPeer`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::time_provider::TimeProvider;
use tessera_edge::tls::{ExpectedId, LiveBundle, SpiffeClientVerifier};
use tessera_eventlog::Clock;
use tessera_identity::{Bundle, SpiffeId, TrustDomain};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::limits::Slot;

/// The trust bundle and server certificate, replaced as they change.
#[derive(Debug)]
pub struct LiveTls {
    bundle: Arc<LiveBundle>,
    server_key: RwLock<Option<Arc<CertifiedKey>>>,
}

impl LiveTls {
    /// Starts with `bundle` and no server certificate yet.
    pub fn new(bundle: Bundle) -> Self {
        Self {
            bundle: Arc::new(LiveBundle::new(bundle)),
            server_key: RwLock::new(None),
        }
    }

    /// The current bundle.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle.get()
    }

    /// Replaces the bundle.
    pub fn set_bundle(&self, bundle: Bundle) {
        self.bundle.set(bundle);
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

/// The server's [`Clock`] as rustls's time: certificate validity at the handshake is judged
/// by the same time as everything else the server decides.
#[derive(Debug)]
pub struct ClockTime(pub Arc<dyn Clock>);

impl TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        self.0
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(UnixTime::since_unix_epoch)
    }
}

/// Who is on the other end of a connection: an authenticated agent, or nobody yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentPeer {
    /// The agent's SPIFFE ID, if it presented a valid SVID.
    pub spiffe_id: Option<SpiffeId>,
    /// Serial (hex) of the SVID it presented.
    pub serial: Option<String>,
    /// When that SVID expires (Unix seconds): checked on every call, not only at the handshake.
    pub not_after: Option<i64>,
    /// The source address.
    pub remote: Option<SocketAddr>,
    /// When the connection reaches `limits.agent_connection_max_age` (streams end then).
    pub max_age_at: Option<tokio::time::Instant>,
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
            not_after: Some(cert.validity().not_after.timestamp()),
            ..AgentPeer::default()
        }
    }
}

/// A TLS connection with its peer, for tonic (`Connected`). It holds its place among the
/// connections counted per source IP until dropped, and is cut once it outlives its maximum
/// age plus grace, whatever the peer does.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: AgentPeer,
    cut_at: Pin<Box<tokio::time::Sleep>>,
    _slot: Slot<std::net::IpAddr>,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("peer", &self.peer).finish()
    }
}

impl TlsConn {
    /// Wraps an established TLS stream from `remote`, holding `slot`; asked to close at
    /// `max_age`, cut at `max_age + grace`.
    pub fn new(
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        remote: SocketAddr,
        slot: Slot<std::net::IpAddr>,
        max_age: std::time::Duration,
        grace: std::time::Duration,
    ) -> Self {
        let mut peer = AgentPeer::from_certs(stream.get_ref().1.peer_certificates());
        // Connection age is transport plumbing in real time, like tonic's own timers.
        #[allow(clippy::disallowed_methods)]
        let now = tokio::time::Instant::now();
        peer.remote = Some(remote);
        peer.max_age_at = Some(now + max_age);
        Self {
            stream,
            peer,
            cut_at: Box::pin(tokio::time::sleep_until(now + max_age + grace)),
            _slot: slot,
        }
    }

    fn past_max_age(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        self.cut_at.as_mut().poll(cx).is_ready().then(|| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "agent connection outlived limits.agent_connection_max_age plus its grace",
            )
        })
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
        let this = self.get_mut();
        if let Some(e) = this.past_max_age(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.past_max_age(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A rustls server config over `live`: TLS 1.3/1.2 with ring, optional client SVIDs of
/// `spiffe://<td>/spire/agent/...` verified against the live bundle at the server's `clock`,
/// h2 only.
///
/// No session resumption: a resumed session would restore the client certificate without
/// verifying it again (against the bundle of now, at the time of now), so every connection
/// makes a full handshake. Agents connect rarely (one connection per max age), so the cost is
/// small.
pub fn server_config(
    live: Arc<LiveTls>,
    trust_domain: TrustDomain,
    clock: Arc<dyn Clock>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider: Arc<CryptoProvider> = tessera_edge::tls::provider();
    let verifier = Arc::new(SpiffeClientVerifier::new(
        live.bundle.clone(),
        ExpectedId::UnderPath {
            trust_domain,
            prefix: "/spire/agent/".into(),
        },
        false,
        provider.clone(),
    ));
    let mut config =
        rustls::ServerConfig::builder_with_details(provider, Arc::new(ClockTime(clock)))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(ServerCert(live)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}
