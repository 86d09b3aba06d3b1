//! The SPIFFE glue for rustls, written once for both processes: a trust bundle that can be
//! swapped while connections are made, one check of a peer's X.509-SVID chain and SPIFFE ID,
//! and the two rustls verifiers built on it: the server verifying agents' client certificates
//! ([`SpiffeClientVerifier`]) and the agent verifying the server ([`SpiffeServerVerifier`]).
//!
//! Peers are identified by SPIFFE ID, never by DNS name: the name an agent dialled is ignored,
//! the ID in the one URI SAN decides. Time comes from rustls (`UnixTime`), so a process that
//! installs its own `TimeProvider` controls what "now" means here too.

use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tessera_identity::{
    verify_x509_svid, Bundle, SpiffeId, SvidError, TrustDomain, VerifiedX509Svid,
};

/// A trust bundle that is replaced as it rotates, read on every handshake.
#[derive(Debug)]
pub struct LiveBundle {
    current: RwLock<Arc<Bundle>>,
}

impl LiveBundle {
    /// Starts with `bundle`.
    pub fn new(bundle: Bundle) -> Self {
        Self {
            current: RwLock::new(Arc::new(bundle)),
        }
    }

    /// The bundle now.
    pub fn get(&self) -> Arc<Bundle> {
        self.current
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the bundle; handshakes from now on use it.
    pub fn set(&self, bundle: Bundle) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(bundle);
    }
}

/// Which SPIFFE IDs a verifier accepts from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedId {
    /// Exactly this ID (the agent expects `spiffe://<td>/spire/server`).
    Exact(SpiffeId),
    /// Any ID of `trust_domain` whose path starts with `prefix` (the server accepts
    /// `/spire/agent/...`).
    UnderPath {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// Path prefix, with its trailing `/`.
        prefix: String,
    },
}

impl ExpectedId {
    /// Whether `id` is acceptable.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        match self {
            ExpectedId::Exact(want) => id == want,
            ExpectedId::UnderPath {
                trust_domain,
                prefix,
            } => id.trust_domain() == trust_domain && id.path().starts_with(prefix.as_str()),
        }
    }
}

impl std::fmt::Display for ExpectedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedId::Exact(id) => write!(f, "{id}"),
            ExpectedId::UnderPath {
                trust_domain,
                prefix,
            } => write!(f, "spiffe://{trust_domain}{prefix}..."),
        }
    }
}

/// Why a peer's certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerSvidError {
    /// The chain is not a valid X.509-SVID under the bundle (unknown CA, expired, malformed).
    #[error("{role} SVID does not verify against the trust bundle: {source}")]
    Chain {
        /// `server` or `agent`.
        role: &'static str,
        /// What failed.
        source: SvidError,
    },
    /// The chain verifies but names a SPIFFE ID this side does not talk to.
    #[error("{role} presented {got}; expected {expected}")]
    UnexpectedId {
        /// `server` or `agent`.
        role: &'static str,
        /// The ID presented.
        got: SpiffeId,
        /// What was expected.
        expected: String,
    },
}

/// Verifies a peer's chain (`end_entity` then `intermediates`) against `bundle` at `now`, and
/// that its SPIFFE ID is `expected`.
pub fn verify_peer_svid(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &Bundle,
    expected: &ExpectedId,
    now: UnixTime,
    role: &'static str,
) -> Result<VerifiedX509Svid, PeerSvidError> {
    let mut chain: Vec<&[u8]> = Vec::with_capacity(1 + intermediates.len());
    chain.push(end_entity.as_ref());
    chain.extend(intermediates.iter().map(|c| c.as_ref()));
    let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
    let verified = verify_x509_svid(&chain, bundle, now)
        .map_err(|source| PeerSvidError::Chain { role, source })?;
    if !expected.accepts(verified.spiffe_id()) {
        return Err(PeerSvidError::UnexpectedId {
            role,
            got: verified.spiffe_id().clone(),
            expected: expected.to_string(),
        });
    }
    Ok(verified)
}

/// The crypto provider both processes use (ring; no C build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// === Handshake signatures (the same for both directions) ===

fn tls12(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

// === impl SpiffeClientVerifier ===

/// The server side: verifies client certificates against a live bundle. A certificate may
/// be optional at the TLS layer (agents attest over anonymous TLS to get one); the service
/// then requires it per call.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundle: Arc<LiveBundle>,
    expected: ExpectedId,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl SpiffeClientVerifier {
    /// Accepts clients whose SVID verifies under `bundle` and is `expected`; `mandatory`:
    /// whether a client without a certificate is refused at the handshake.
    pub fn new(
        bundle: Arc<LiveBundle>,
        expected: ExpectedId,
        mandatory: bool,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            bundle,
            expected,
            mandatory,
            provider,
        }
    }
}

/// A refusal as the TLS alert rustls sends: expiry gets `certificate_expired`, the rest
/// `bad_certificate` with the reason kept for the logs.
fn certificate_error(e: PeerSvidError) -> rustls::Error {
    match &e {
        PeerSvidError::Chain {
            source: SvidError::Expired { .. },
            ..
        } => return rustls::Error::InvalidCertificate(CertificateError::Expired),
        PeerSvidError::Chain {
            source: SvidError::NotYetValid { .. },
            ..
        } => return rustls::Error::InvalidCertificate(CertificateError::NotValidYet),
        _ => {}
    }
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
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
        let bundle = self.bundle.get();
        verify_peer_svid(
            end_entity,
            intermediates,
            &bundle,
            &self.expected,
            now,
            "client",
        )
        .map_err(certificate_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}

// === impl SpiffeServerVerifier ===

/// What a client trusts the server by.
#[derive(Debug)]
pub enum ServerTrust {
    /// The trust domain's bundle (replaced as it rotates).
    Bundle(LiveBundle),
    /// No verification: only for a bootstrap attestation, when the operator asked for it.
    InsecureBootstrap,
}

impl ServerTrust {
    /// Trust by `bundle`.
    pub fn bundle(bundle: Bundle) -> Arc<Self> {
        Arc::new(ServerTrust::Bundle(LiveBundle::new(bundle)))
    }

    /// Replaces the bundle (no effect on an insecure bootstrap trust).
    pub fn set_bundle(&self, bundle: Bundle) {
        if let ServerTrust::Bundle(live) = self {
            live.set(bundle);
        }
    }
}

/// The client side: the server must present `expected` chaining to the trusted bundle,
/// whatever name or address it was reached at.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    trust: Arc<ServerTrust>,
    expected: ExpectedId,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// Trusts servers presenting `expected` under `trust`.
    pub fn new(
        trust: Arc<ServerTrust>,
        expected: ExpectedId,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            trust,
            expected,
            provider,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
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
            ServerTrust::Bundle(live) => live.get(),
        };
        verify_peer_svid(
            end_entity,
            intermediates,
            &bundle,
            &self.expected,
            now,
            "server",
        )
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}

#[cfg(test)]
mod tests;
