//! The `https_spiffe` endpoint check for the fetcher: the chain and SPIFFE ID verified by
//! `tessera_edge::tls`, with the refusal kept so that the fetch error can name the presented
//! and expected IDs (rustls carries only a string).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tessera_edge::tls::{verify_peer_svid, ExpectedId, PeerSvidError, SpiffeServerVerifier};
use tessera_identity::{Bundle, SpiffeId};

use super::FetchError;

/// `https_spiffe`: the chain and ID checked by `tessera_edge::tls` (its verifier does the
/// handshake signatures), remembering why it refused so that the error names the presented
/// and expected IDs.
#[derive(Debug)]
pub(super) struct SpiffeEndpointVerifier {
    pub(super) bundle: Bundle,
    pub(super) expected: ExpectedId,
    pub(super) inner: SpiffeServerVerifier,
    pub(super) refused: Arc<Mutex<Option<PeerSvidError>>>,
}

impl ServerCertVerifier for SpiffeEndpointVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The host name is ignored: the SPIFFE ID decides (SPIFFE Federation §5.2.2.4).
        let _ = (server_name, ocsp);
        match verify_peer_svid(
            end_entity,
            intermediates,
            &self.bundle,
            &self.expected,
            now,
            "bundle endpoint",
        ) {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(e) => {
                let reason = e.to_string();
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(rustls::Error::General(reason))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The typed reason of a failed handshake: the SPIFFE check's own error when it refused.
pub(super) fn tls_error(
    url: &str,
    e: &std::io::Error,
    refused: &Mutex<Option<PeerSvidError>>,
) -> FetchError {
    let refused = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
    match refused {
        Some(PeerSvidError::UnexpectedId { got, expected, .. }) => match SpiffeId::new(&expected) {
            Ok(expected) => FetchError::WrongEndpointId {
                url: url.to_owned(),
                presented: got,
                expected,
            },
            Err(_) => FetchError::Tls {
                url: url.to_owned(),
                reason: format!("endpoint presented {got}, expected {expected}"),
            },
        },
        Some(other) => FetchError::Tls {
            url: url.to_owned(),
            reason: other.to_string(),
        },
        None => FetchError::Tls {
            url: url.to_owned(),
            reason: e.to_string(),
        },
    }
}
