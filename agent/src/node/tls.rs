//! The agent's TLS to the server: the server must present `spiffe://<td>/spire/server`
//! chaining to the trust bundle the agent holds (from `--trustBundle`, then from sync), or,
//! only for the first attestation with `--insecureBootstrap`, anything at all.

use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tessera_identity::{verify_x509_svid, Bundle, TrustDomain, SERVER_PATH};
use tonic::transport::{Channel, Endpoint};

/// What the agent trusts the server by.
#[derive(Debug)]
pub enum ServerTrust {
    /// The trust domain's bundle (replaced as it rotates).
    Bundle(RwLock<Arc<Bundle>>),
    /// No verification: only for the bootstrap attestation, when asked explicitly.
    InsecureBootstrap,
}

impl ServerTrust {
    /// Trust by `bundle`.
    pub fn bundle(bundle: Bundle) -> Arc<Self> {
        Arc::new(ServerTrust::Bundle(RwLock::new(Arc::new(bundle))))
    }

    /// Replaces the bundle (no effect on an insecure bootstrap trust).
    pub fn set_bundle(&self, bundle: Bundle) {
        if let ServerTrust::Bundle(slot) = self {
            *slot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(bundle);
        }
    }
}

#[derive(Debug)]
struct Verifier {
    trust: Arc<ServerTrust>,
    trust_domain: TrustDomain,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = match self.trust.as_ref() {
            ServerTrust::InsecureBootstrap => return Ok(ServerCertVerified::assertion()),
            ServerTrust::Bundle(b) => b
                .read()
                .map(|b| b.clone())
                .unwrap_or_else(|p| p.into_inner().clone()),
        };
        let mut chain: Vec<&[u8]> = vec![end_entity.as_ref()];
        chain.extend(intermediates.iter().map(|c| c.as_ref()));
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let verified = verify_x509_svid(&chain, bundle.as_ref(), now).map_err(|e| {
            rustls::Error::General(format!(
                "server SVID does not verify against the trust bundle: {e}"
            ))
        })?;
        let id = verified.spiffe_id();
        if id.trust_domain() != &self.trust_domain || id.path() != SERVER_PATH {
            return Err(rustls::Error::General(format!(
                "server presented {id}; expected spiffe://{}{SERVER_PATH}",
                self.trust_domain
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The agent's own X.509-SVID and key, presented as the TLS client certificate.
#[derive(Clone)]
pub struct ClientIdentity {
    /// Chain, leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key_pkcs8: Arc<zeroize::Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_len", &self.cert_chain.len())
            .finish()
    }
}

/// A lazily connecting channel to `host:port` (the agent starts, and serves its cache, while
/// the server is down).
pub fn channel(
    host: &str,
    port: u16,
    trust: Arc<ServerTrust>,
    trust_domain: TrustDomain,
    identity: Option<&ClientIdentity>,
) -> Result<Channel, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            trust,
            trust_domain,
            provider,
        }));
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                id.cert_chain
                    .iter()
                    .map(|d| CertificateDer::from(d.clone()))
                    .collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.as_slice().to_vec())),
            )
            .map_err(|e| format!("agent SVID unusable as a TLS client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = format!("{host}:{port}");
    let server_name = ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
        ServerName::try_from("tessera-server")
            .map(|n| n.to_owned())
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
    });
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("server address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let connector = connector.clone();
            let addr = addr.clone();
            let server_name = server_name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })),
    )
}
