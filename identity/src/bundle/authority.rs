//! The two kinds of trust material in a bundle: [`X509Authority`] (a CA certificate) and
//! [`JwtAuthority`] (a JWT signing key).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use x509_parser::parse_x509_certificate;

use super::encoding;
use super::error::{BundleError, KeyIdError};
use super::key::{KeyError, PublicKey};

/// Longest JWT key ID accepted, in bytes.
pub const MAX_KEY_ID_LEN: usize = 256;

const PEM_LABEL: &str = "CERTIFICATE";

/// An X.509 authority: one DER certificate that X.509-SVIDs of the trust domain chain to.
///
/// Construction checks that the bytes are exactly one well-formed certificate. Serializes
/// (serde) as the DER: base64 in human-readable formats, bytes otherwise.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct X509Authority(Vec<u8>);

impl X509Authority {
    /// Wraps a DER certificate.
    ///
    /// # Errors
    /// [`BundleError::InvalidCertificate`] if `der` is not exactly one parseable certificate.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Result<Self, BundleError> {
        let der = der.into();
        match parse_x509_certificate(&der) {
            Ok(([], _)) => Ok(Self(der)),
            Ok((rest, _)) => Err(BundleError::InvalidCertificate {
                reason: format!("{} bytes of trailing data", rest.len()),
            }),
            Err(e) => Err(BundleError::InvalidCertificate {
                reason: e.to_string(),
            }),
        }
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.0
    }

    /// The certificate's public key, as needed for its JWKS entry.
    ///
    /// # Errors
    /// A [`KeyError`] if the key is not a supported EC or RSA key.
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        match parse_x509_certificate(&self.0) {
            Ok((_, cert)) => PublicKey::from_spki(cert.public_key()),
            // Checked in from_der; kept total rather than panicking.
            Err(e) => Err(KeyError::InvalidSpki {
                reason: e.to_string(),
            }),
        }
    }

    /// The certificate as one PEM `CERTIFICATE` block.
    pub fn to_pem(&self) -> String {
        // LF line endings (pem's default is CRLF): these end up in files on Unix hosts.
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        pem::encode_config(&pem::Pem::new(PEM_LABEL, self.0.clone()), config)
    }

    /// Reads every `CERTIFICATE` block of a PEM text (e.g. an `upstream_bundle` file).
    ///
    /// # Errors
    /// A [`BundleError`] if the PEM is malformed, a block is not a certificate, a certificate
    /// does not parse, or there is no block at all.
    pub fn parse_pem(text: &str) -> Result<Vec<Self>, BundleError> {
        let blocks = pem::parse_many(text).map_err(|e| BundleError::InvalidPem {
            reason: e.to_string(),
        })?;
        if blocks.is_empty() {
            return Err(BundleError::NoPemCertificates);
        }
        blocks
            .into_iter()
            .enumerate()
            .map(|(index, block)| {
                if block.tag() != PEM_LABEL {
                    return Err(BundleError::PemNotCertificate {
                        index,
                        label: block.tag().to_owned(),
                    });
                }
                Self::from_der(block.into_contents())
            })
            .collect()
    }
}

impl fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = parse_x509_certificate(&self.0)
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_default();
        f.debug_struct("X509Authority")
            .field("subject", &subject)
            .field("der_len", &self.0.len())
            .finish()
    }
}

impl Serialize for X509Authority {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        encoding::serialize_bytes(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for X509Authority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let der = encoding::deserialize_bytes(deserializer)?;
        Self::from_der(der).map_err(serde::de::Error::custom)
    }
}

/// A JWT authority: a public key that JWT-SVIDs of the trust domain are signed with, found by
/// the `kid` in the token header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JwtAuthority {
    /// The key ID (`kid`): non-empty, at most [`MAX_KEY_ID_LEN`] bytes, unique in its bundle.
    pub key_id: String,
    /// The public key.
    pub public_key: PublicKey,
    /// When the key stops being valid, in Unix seconds (not part of the JWKS format).
    pub expires_at: Option<i64>,
}

/// Checks a key ID on its own (uniqueness is the bundle's business).
pub(crate) fn check_key_id(kid: &str) -> Result<(), KeyIdError> {
    if kid.is_empty() {
        return Err(KeyIdError::Empty);
    }
    if kid.len() > MAX_KEY_ID_LEN {
        return Err(KeyIdError::TooLong {
            len: kid.len(),
            max: MAX_KEY_ID_LEN,
        });
    }
    if kid.chars().any(char::is_control) {
        return Err(KeyIdError::ControlChar {
            kid: crate::id_error::shown(kid),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_certificates() {
        assert!(matches!(
            X509Authority::from_der(b"not a cert".to_vec()),
            Err(BundleError::InvalidCertificate { .. })
        ));
        assert!(matches!(
            X509Authority::from_der(Vec::new()),
            Err(BundleError::InvalidCertificate { .. })
        ));
    }

    #[test]
    fn pem_errors() {
        assert_eq!(
            X509Authority::parse_pem(""),
            Err(BundleError::NoPemCertificates)
        );
        let key_block = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        assert!(matches!(
            X509Authority::parse_pem(&key_block),
            Err(BundleError::PemNotCertificate { index: 0, .. })
        ));
        let bad_cert = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert!(matches!(
            X509Authority::parse_pem(&bad_cert),
            Err(BundleError::InvalidCertificate { .. })
        ));
        assert!(matches!(
            X509Authority::parse_pem(
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"
            ),
            Err(BundleError::InvalidPem { .. })
        ));
    }

    #[test]
    fn key_id_checks() {
        assert_eq!(check_key_id("k1"), Ok(()));
        assert_eq!(check_key_id(""), Err(KeyIdError::Empty));
        assert!(matches!(
            check_key_id(&"k".repeat(257)),
            Err(KeyIdError::TooLong { .. })
        ));
        assert!(matches!(
            check_key_id("a\nb"),
            Err(KeyIdError::ControlChar { .. })
        ));
    }
}
