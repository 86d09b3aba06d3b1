//! Errors of bundle building, JWKS decoding and PEM decoding.

use thiserror::Error;

use super::key::KeyError;

/// Why a bundle, or a document meant to become one, is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Bytes given as an X.509 authority are not one DER certificate.
    #[error("X.509 authority is not a valid DER certificate: {reason}")]
    InvalidCertificate {
        /// The parser's complaint.
        reason: String,
    },
    /// An X.509 authority's key cannot be written as a JWK (only EC and RSA keys can).
    #[error("X.509 authority's public key cannot be published in a JWKS: {0}")]
    AuthorityKey(#[source] KeyError),
    /// A JWT authority's key ID is unusable.
    #[error(transparent)]
    KeyId(#[from] KeyIdError),
    /// The JWKS document is larger than `max_jwks_bytes`.
    #[error("JWKS document is {len} bytes, over the limit of {max} bytes (max_jwks_bytes)")]
    JwksTooLarge {
        /// Its size in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The JWKS document is not JSON.
    #[error("JWKS document is not valid JSON: {reason}")]
    InvalidJson {
        /// The JSON parser's complaint.
        reason: String,
    },
    /// The JWKS document is JSON but not an object.
    #[error("JWKS document is not a JSON object")]
    NotAnObject,
    /// The JWKS document has no `keys` array, which the standard requires.
    #[error(
        "JWKS document has no \"keys\" array; a SPIFFE bundle must have one (it may be empty)"
    )]
    MissingKeys,
    /// The JWKS document has more keys than `max_keys`.
    #[error("JWKS document has {count} keys, over the limit of {max} (max_keys)")]
    TooManyKeys {
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// `spiffe_sequence` or `spiffe_refresh_hint` is not a non-negative integer.
    #[error("\"{field}\" must be a non-negative integer")]
    InvalidNumber {
        /// The field.
        field: &'static str,
    },
    /// A key of the JWKS is malformed.
    #[error("keys[{index}]: {error}")]
    Jwk {
        /// Position of the key in `keys`.
        index: usize,
        /// What is wrong with it.
        #[source]
        error: JwkError,
    },
    /// The PEM text is malformed.
    #[error("PEM is malformed: {reason}")]
    InvalidPem {
        /// The PEM parser's complaint.
        reason: String,
    },
    /// A PEM block is not a certificate.
    #[error("PEM block {index} is labelled {label:?}, not \"CERTIFICATE\"")]
    PemNotCertificate {
        /// Position of the block.
        index: usize,
        /// Its label.
        label: String,
    },
    /// The PEM text has no blocks at all.
    #[error("no PEM \"CERTIFICATE\" block found")]
    NoPemCertificates,
}

/// Why a JWT authority's key ID is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyIdError {
    /// The key ID is empty; JWT-SVID validation finds keys by ID, so every key needs one.
    #[error("JWT authority has an empty key ID; every JWT key needs a \"kid\"")]
    Empty,
    /// The key ID is longer than [`MAX_KEY_ID_LEN`](crate::MAX_KEY_ID_LEN).
    #[error("JWT authority key ID is {len} bytes long, over the limit of {max} bytes")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The key ID holds a control character.
    #[error("JWT authority key ID {kid:?} contains control characters")]
    ControlChar {
        /// The key ID.
        kid: String,
    },
    /// Another key with this ID but different key material is already in the bundle.
    #[error("JWT authority key ID {kid:?} is already in the bundle with a different key; key IDs must be unique")]
    Duplicate {
        /// The key ID.
        kid: String,
    },
}

/// What is wrong with one key of a JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JwkError {
    /// The element of `keys` is not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A required parameter is missing or is not a string.
    #[error("\"{param}\" is missing or not a string")]
    MissingParam {
        /// The parameter.
        param: &'static str,
    },
    /// An `x509-svid` entry does not have exactly one certificate in `x5c`.
    #[error("an x509-svid key must carry exactly one certificate in \"x5c\", found {count}")]
    X5cCount {
        /// How many it has.
        count: usize,
    },
    /// A parameter is not valid base64 (base64url for key parameters, base64 for `x5c`).
    #[error("\"{param}\" is not valid base64: {reason}")]
    BadBase64 {
        /// The parameter.
        param: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The `x5c` certificate does not parse.
    #[error("\"x5c\" is not a valid DER certificate: {reason}")]
    InvalidCertificate {
        /// The parser's complaint.
        reason: String,
    },
    /// `crv` names a curve this crate does not support.
    #[error("unsupported \"crv\" {crv:?}; use P-256, P-384 or P-521")]
    UnsupportedCurve {
        /// The curve's name.
        crv: String,
    },
    /// The key parameters are malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key parameters of an `x509-svid` entry differ from the key of its certificate.
    #[error("the key parameters do not match the public key of the \"x5c\" certificate")]
    KeyMismatch,
    /// The `kid` of a `jwt-svid` entry is unusable.
    #[error(transparent)]
    KeyId(#[from] KeyIdError),
}
