//! SPIFFE authentication for rustls, as the SPIFFE X.509-SVID standard describes it: a peer is
//! named by the one `spiffe://` URI SAN of its leaf certificate, and its chain must verify
//! against the X.509 authorities of *that ID's* trust domain (so a federated peer is checked
//! against its own domain's bundle, never ours). DNS names play no part.
//!
//! Both directions present the workload's current SVID from [`Material`] on every handshake.
//! TLS 1.3 only.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use webpki::KeyUsage;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::material::Material;

/// What the examples print about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The `spiffe://` URI SAN, if there is exactly one.
    pub spiffe_id: Option<String>,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

/// A certificate that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("not a readable X.509 certificate: {0}")]
pub struct CertInfoError(String);

/// Reads the SPIFFE ID, serial and expiry of `der`.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, CertInfoError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertInfoError(e.to_string()))?;
    let mut ids = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if uri.starts_with("spiffe://") {
                    ids.push((*uri).to_owned());
                }
            }
        }
    }
    let spiffe_id = if ids.len() == 1 { ids.pop() } else { None };
    let serial = cert.tbs_certificate.raw_serial();
    let serial = serial.iter().map(|b| format!("{b:02x}")).collect();
    Ok(CertInfo {
        spiffe_id,
        serial,
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Why a peer's certificate was refused. Each message names the peer when it could be read.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The leaf is not an X.509-SVID (no single spiffe:// URI SAN, or unparsable).
    #[error("the peer's certificate is not an X.509-SVID: {0}")]
    NotSvid(String),
    /// No bundle for the peer's trust domain: not ours and not federated with us.
    #[error(
        "{id} (serial {serial}): no bundle for trust domain {trust_domain}: this workload does \
         not federate with it (register it with --federatesWith spiffe://{trust_domain})"
    )]
    UnknownTrustDomain {
        /// The peer.
        id: String,
        /// Its leaf serial.
        serial: String,
        /// Its trust domain.
        trust_domain: String,
    },
    /// The leaf's validity has ended.
    #[error("{id} (serial {serial}): SVID expired {ago} s ago")]
    Expired {
        /// The peer.
        id: String,
        /// Its leaf serial.
        serial: String,
        /// Seconds since expiry.
        ago: i64,
    },
    /// The chain does not verify against the trust domain's authorities.
    #[error("{id} (serial {serial}): does not chain to the {trust_domain} bundle: {reason}")]
    Untrusted {
        /// The peer.
        id: String,
        /// Its leaf serial.
        serial: String,
        /// Its trust domain.
        trust_domain: String,
        /// webpki's reason.
        reason: String,
    },
    /// A valid SVID, but not the ID this side expected to talk to.
    #[error("{id} (serial {serial}): expected {expected}")]
    UnexpectedId {
        /// The peer.
        id: String,
        /// Its leaf serial.
        serial: String,
        /// Whom we meant to reach.
        expected: String,
    },
}

impl PeerError {
    /// Finds a `PeerError` inside an I/O error from a TLS handshake, if that is what failed.
    pub fn from_io(e: &std::io::Error) -> Option<&PeerError> {
        let rustls::Error::InvalidCertificate(CertificateError::Other(other)) =
            e.get_ref()?.downcast_ref::<rustls::Error>()?
        else {
            return None;
        };
        other.0.downcast_ref::<PeerError>()
    }

    fn into_rustls(self) -> rustls::Error {
        let other = rustls::OtherError(Arc::new(self));
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
    }
}

/// Verifies a peer's chain against the bundle of its own trust domain, for `usage`.
pub fn verify_peer(
    material: &Material,
    provider: &CryptoProvider,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: KeyUsage,
) -> Result<CertInfo, PeerError> {
    let info = cert_info(end_entity).map_err(|e| PeerError::NotSvid(e.to_string()))?;
    let id = info
        .spiffe_id
        .clone()
        .ok_or_else(|| PeerError::NotSvid("it has no single spiffe:// URI SAN".to_owned()))?;
    let serial = info.serial.clone();
    let trust_domain = id
        .trim_start_matches("spiffe://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let trust = material.trust();
    let Some(cas) = trust.get(&trust_domain) else {
        return Err(PeerError::UnknownTrustDomain {
            id,
            serial,
            trust_domain,
        });
    };
    let anchors: Vec<_> = cas
        .iter()
        .filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok())
        .collect();
    let leaf = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| PeerError::NotSvid(e.to_string()))?;
    let verified = leaf.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    );
    match verified {
        Ok(_) => Ok(info),
        Err(webpki::Error::CertExpired { .. }) => Err(PeerError::Expired {
            ago: i64::try_from(now.as_secs()).unwrap_or(i64::MAX) - info.not_after,
            id,
            serial,
        }),
        Err(e) => Err(PeerError::Untrusted {
            id,
            serial,
            trust_domain,
            reason: format!("{e:?}"),
        }),
    }
}

/// A TLS 1.3 server config: presents the current SVID, requires a client SVID that verifies
/// against its trust domain's bundle. Which IDs may talk is the service's decision, after the
/// handshake (so it can tell a refused caller why). No session resumption: every connection
/// shows a certificate and is verified now (a resumed session would carry the identity, and
/// the expiry, of the connection that made it).
pub fn server_config(material: Arc<Material>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = crate::provider();
    let verifier = Arc::new(SvidClientVerifier {
        material: material.clone(),
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentSvid(material)));
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A TLS 1.3 client config: presents the current SVID, accepts only a server whose SVID
/// verifies and whose SPIFFE ID is `server_id`. No session resumption (see [`server_config`]):
/// a new connection after a rotation presents the new SVID.
pub fn client_config(
    material: Arc<Material>,
    server_id: String,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = crate::provider();
    let verifier = Arc::new(SvidServerVerifier {
        material: material.clone(),
        provider: provider.clone(),
        server_id,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentSvid(material)));
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The name given to rustls when connecting: ignored by the SPIFFE verifier, required by TLS.
pub fn server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

// === Verifiers ===

#[derive(Debug)]
struct SvidClientVerifier {
    material: Arc<Material>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for SvidClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let usage = KeyUsage::client_auth();
        verify_peer(
            &self.material,
            &self.provider,
            end_entity,
            intermediates,
            now,
            usage,
        )
        .map_err(PeerError::into_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct SvidServerVerifier {
    material: Arc<Material>,
    provider: Arc<CryptoProvider>,
    server_id: String,
}

impl ServerCertVerifier for SvidServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let usage = KeyUsage::server_auth();
        let info = verify_peer(
            &self.material,
            &self.provider,
            end_entity,
            intermediates,
            now,
            usage,
        )
        .map_err(PeerError::into_rustls)?;
        if info.spiffe_id.as_deref() != Some(self.server_id.as_str()) {
            let error = PeerError::UnexpectedId {
                id: info.spiffe_id.unwrap_or_default(),
                serial: info.serial,
                expected: self.server_id.clone(),
            };
            return Err(error.into_rustls());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// === The current SVID, on both sides ===

#[derive(Debug)]
struct CurrentSvid(Arc<Material>);

impl ResolvesServerCert for CurrentSvid {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.identity().map(|i| i.key.clone())
    }
}

impl ResolvesClientCert for CurrentSvid {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.identity().map(|i| i.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.identity().is_some()
    }
}

#[cfg(test)]
mod tests;
