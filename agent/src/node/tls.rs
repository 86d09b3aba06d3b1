//! The agent's TLS to the servers: each server, whatever address it is reached at, must
//! present `spiffe://<td>/spire/server` chaining to the trust bundle the agent holds (from
//! `--trustBundle`, then from sync; with several servers it holds every server's CA), or,
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

use super::servers::Target;
use crate::config::{ServerAddress, ServerHost};

/// Longest TCP and TLS connection set-up to one server before trying another.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 pings on an idle connection: how a server that vanished without closing the
/// connection is noticed (the sync stream is otherwise quiet for long periods).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A ping unanswered this long ends the connection, so the agent fails over.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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

/// The TLS client configuration the agent uses with every server: the server must present
/// `spiffe://<trust_domain>/spire/server` chaining to `trust` (the synced bundle, which holds
/// every server's CA), whichever address it was reached at; `identity` is the client
/// certificate (none while attesting).
pub fn client_config(
    trust: Arc<ServerTrust>,
    trust_domain: TrustDomain,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, String> {
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
    Ok(Arc::new(config))
}

/// The TLS server name (SNI) for `address`: its DNS name, or its IP address. The server is
/// verified by its SPIFFE ID, not by this name; a name rustls cannot send (e.g. with '_')
/// is replaced by a neutral one.
pub(crate) fn server_name(address: &ServerAddress) -> ServerName<'static> {
    match address.host() {
        ServerHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
        ServerHost::Name(name) => ServerName::try_from(name.clone()).unwrap_or_else(|_| {
            ServerName::try_from("tessera-server")
                .map(|n| n.to_owned())
                .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
        }),
    }
}

/// A lazily connecting channel to one server: TCP to `target.socket` (the address it
/// resolved to), TLS with `target`'s server name, HTTP/2 with its configured `host:port` as
/// the authority. The agent starts, and serves its cache, while the server is down.
pub fn channel(target: &Target, config: Arc<rustls::ClientConfig>) -> Result<Channel, String> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let socket = target.socket;
    let server_name = server_name(&target.address);
    let authority = target.address.to_string();
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| format!("server address {authority:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(socket).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })),
    )
}

#[cfg(test)]
mod tests {
    use rcgen::string::Ia5String;
    use rcgen::{
        BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use tessera_identity::X509Authority;

    use super::*;

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: Vec<u8>,
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(Ia5String::try_from(u).unwrap())
    }

    impl Ca {
        fn new() -> Self {
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.subject_alt_names = vec![uri("spiffe://example.org")];
            let key = KeyPair::generate().unwrap();
            let der = params.self_signed(&key).unwrap().der().to_vec();
            Self { params, key, der }
        }

        fn issue(&self, spiffe_id: &str) -> Vec<u8> {
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.subject_alt_names = vec![uri(spiffe_id)];
            let key = KeyPair::generate().unwrap();
            params
                .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
                .unwrap()
                .der()
                .to_vec()
        }
    }

    fn verifier(cas: &[&Ca]) -> Verifier {
        let td = TrustDomain::new("example.org").unwrap();
        let mut bundle = Bundle::new(td.clone());
        for ca in cas {
            bundle.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
        }
        Verifier {
            trust: ServerTrust::bundle(bundle),
            trust_domain: td,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    fn check(v: &Verifier, leaf: Vec<u8>, name: &str) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        v.verify_server_cert(
            &CertificateDer::from(leaf),
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
        )
    }

    #[test]
    fn each_server_verifies_by_its_spiffe_id_against_the_bundle_of_all_cas() {
        let (a, b, stranger) = (Ca::new(), Ca::new(), Ca::new());
        let v = verifier(&[&a, &b]);
        // Whatever address or name the server was reached by.
        for (ca, name) in [(&a, "10.0.0.1"), (&b, "server-b.example.org"), (&b, "::1")] {
            check(&v, ca.issue("spiffe://example.org/spire/server"), name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = check(&v, a.issue("spiffe://example.org/web"), "10.0.0.1").unwrap_err();
        assert!(
            err.to_string()
                .contains("expected spiffe://example.org/spire/server"),
            "{err}"
        );
        let err = check(
            &v,
            stranger.issue("spiffe://example.org/spire/server"),
            "10.0.0.1",
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        // Until the bundle holds B's CA, B is refused; once synced, accepted.
        let only_a = verifier(&[&a]);
        let leaf_b = b.issue("spiffe://example.org/spire/server");
        assert!(check(&only_a, leaf_b.clone(), "10.0.0.2").is_err());
        let mut both = Bundle::new(TrustDomain::new("example.org").unwrap());
        both.add_x509_authority(X509Authority::from_der(a.der.clone()).unwrap());
        both.add_x509_authority(X509Authority::from_der(b.der.clone()).unwrap());
        only_a.trust.set_bundle(both);
        check(&only_a, leaf_b, "10.0.0.2").unwrap();
    }

    #[test]
    fn server_names_follow_the_configured_host() {
        let name = |a: &str| server_name(&ServerAddress::parse(a, 8081).unwrap());
        assert_eq!(
            name("server.example.org"),
            ServerName::try_from("server.example.org").unwrap()
        );
        assert!(matches!(name("10.0.0.1:9"), ServerName::IpAddress(_)));
        assert!(matches!(name("[2001:db8::1]:9"), ServerName::IpAddress(_)));
        assert_eq!(
            name("tessera_server"),
            ServerName::try_from("tessera_server").unwrap()
        );
    }
}
