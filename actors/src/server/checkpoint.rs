//! Signed checkpoints of the log: every so many records or minutes the server signs the head
//! (seq, hash) with its active JWT key (a key of the trust domain's authority, published in
//! the bundle) and appends the result as a
//! [`ServerEvent::CheckpointSigned`](crate::server::events::ServerEvent::CheckpointSigned)
//! record, so an auditor who keeps one checkpoint elsewhere (an *anchor*) can later prove the
//! log still holds it, unaltered: a log cut short before the anchor's seq, or rewritten at or
//! before it, no longer has the anchored hash at that seq.
//!
//! **Signed bytes** (stable: a new layout gets a new tag), UTF-8, fields joined by `\n`, no
//! trailing newline:
//!
//! ```text
//! tessera-log-checkpoint-v1
//! <trust domain>               example.org
//! <server id>                  empty on a single server's own log
//! <seq>                        decimal
//! <hash>                       the record's SHA-256, 64 lowercase hex digits
//! <signed_at>                  Unix seconds, decimal
//! <kid>                        the signing key's ID
//! ```
//!
//! The signature is the one the key makes for a JWS (`ES256`/`ES384`: fixed-size `r || s`;
//! `RS256`: RSA PKCS#1 v1.5 SHA-256). The record carries the public key (SPKI DER), so it
//! verifies on its own after the key has left the bundle; [`scan::audit`] also checks that
//! key against the key of that `kid` the log recorded when it was prepared.
//!
//! Parts: [`cadence`] (pure: when a checkpoint is due), [`actor`] (the checkpointer the
//! supervisor starts), [`scan`] (finding the latest checkpoint, auditing every one).

pub mod actor;
pub mod cadence;
pub mod scan;

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use tessera_identity::{EcCurve, PublicKey, TrustDomain};

pub use self::actor::{
    checkpoint_once, Checkpointer, CheckpointerArgs, CheckpointerMsg, TickOutcome,
};
pub use self::cadence::{Cadence, CheckpointSettings};
use crate::server::events::der_text;

/// First line of the signed bytes: names the layout, and keeps a checkpoint signature from
/// passing for any other message the key signs (JWTs start with `ey`).
pub const SIGNED_BYTES_TAG: &str = "tessera-log-checkpoint-v1";

/// Length of a record hash, in bytes.
pub const HASH_LEN: usize = 32;

/// Longest `kid` or server id a checkpoint may carry, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// One signed checkpoint, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The server that signed it (`None` on a single server's own log).
    pub server_id: Option<String>,
    /// The seq of the record it covers (the log head when it was signed).
    pub seq: u64,
    /// That record's hash (SHA-256, 32 bytes); hex in JSON.
    #[serde(with = "hex_text")]
    pub hash: Vec<u8>,
    /// When it was signed, Unix seconds.
    pub signed_at: i64,
    /// The signing key's ID (a JWT key of the authority, published in the bundle).
    pub kid: String,
    /// The signing key's public key, SubjectPublicKeyInfo DER (base64 in JSON), so the record
    /// verifies on its own after the key has left the bundle.
    #[serde(with = "der_text")]
    pub public_key_der: Vec<u8>,
    /// The signature over the checkpoint's signed bytes (base64 in JSON).
    #[serde(with = "der_text")]
    pub signature: Vec<u8>,
}

/// Why a checkpoint does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A field cannot be part of a checkpoint (wrong hash length, a name with control
    /// characters or too long).
    #[error("checkpoint of seq {seq}: {field} {reason}")]
    Malformed {
        /// The covered seq.
        seq: u64,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The public key is not a DER SPKI of a key Tessera signs with.
    #[error("checkpoint of seq {seq}: public key of kid {kid:?} is unusable: {reason}")]
    BadPublicKey {
        /// The covered seq.
        seq: u64,
        /// The key's ID.
        kid: String,
        /// Why.
        reason: String,
    },
    /// The signature does not verify with the record's public key over its signed bytes.
    #[error("checkpoint of seq {seq}: signature does not verify with key {kid:?} for trust domain {trust_domain}: the checkpoint was altered, signed with another key, or belongs to another trust domain")]
    BadSignature {
        /// The covered seq.
        seq: u64,
        /// The key's ID.
        kid: String,
        /// The trust domain it was checked for.
        trust_domain: TrustDomain,
    },
}

/// The bytes a checkpoint's signature covers (layout in the module doc).
///
/// # Errors
/// [`CheckpointError::Malformed`] if the hash is not 32 bytes or a name has control
/// characters or is longer than [`MAX_NAME_LEN`].
pub fn signed_bytes(
    trust_domain: &TrustDomain,
    server_id: Option<&str>,
    seq: u64,
    hash: &[u8],
    signed_at: i64,
    kid: &str,
) -> Result<Vec<u8>, CheckpointError> {
    let malformed = |field, reason: String| CheckpointError::Malformed { seq, field, reason };
    if hash.len() != HASH_LEN {
        return Err(malformed(
            "hash",
            format!("is {} bytes; a record hash is {HASH_LEN}", hash.len()),
        ));
    }
    for (field, value) in [("kid", kid), ("server_id", server_id.unwrap_or(""))] {
        if value.len() > MAX_NAME_LEN {
            return Err(malformed(
                field,
                format!("is {} bytes, over {MAX_NAME_LEN}", value.len()),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(malformed(field, "has control characters".into()));
        }
    }
    if kid.is_empty() {
        return Err(malformed("kid", "is empty".into()));
    }
    Ok(format!(
        "{SIGNED_BYTES_TAG}\n{trust_domain}\n{}\n{seq}\n{}\n{signed_at}\n{kid}",
        server_id.unwrap_or(""),
        hex::encode(hash)
    )
    .into_bytes())
}

impl CheckpointRecord {
    /// The bytes its signature covers, for `trust_domain`.
    ///
    /// # Errors
    /// As [`signed_bytes`].
    pub fn signed_bytes(&self, trust_domain: &TrustDomain) -> Result<Vec<u8>, CheckpointError> {
        signed_bytes(
            trust_domain,
            self.server_id.as_deref(),
            self.seq,
            &self.hash,
            self.signed_at,
            &self.kid,
        )
    }

    /// Checks the signature with the record's own public key, for `trust_domain`.
    ///
    /// # Errors
    /// A [`CheckpointError`] naming the seq and what is wrong.
    pub fn verify(&self, trust_domain: &TrustDomain) -> Result<(), CheckpointError> {
        let message = self.signed_bytes(trust_domain)?;
        let bad_key = |reason: String| CheckpointError::BadPublicKey {
            seq: self.seq,
            kid: self.kid.clone(),
            reason,
        };
        let key =
            PublicKey::from_spki_der(&self.public_key_der).map_err(|e| bad_key(e.to_string()))?;
        let verified = match &key {
            PublicKey::Ec { curve, x, y } => {
                let alg: &'static dyn signature::VerificationAlgorithm = match curve {
                    EcCurve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    EcCurve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                    other => {
                        return Err(bad_key(format!(
                            "curve {} is not one the server signs with (P-256, P-384)",
                            other.jwk_name()
                        )))
                    }
                };
                let point = [&[0x04][..], x, y].concat();
                UnparsedPublicKey::new(alg, point).verify(&message, &self.signature)
            }
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                &message,
                &self.signature,
            ),
        };
        verified.map_err(|_| CheckpointError::BadSignature {
            seq: self.seq,
            kid: self.kid.clone(),
            trust_domain: trust_domain.clone(),
        })
    }
}

/// A hash field: raw bytes in the log's binary encoding, lowercase hex in JSON.
mod hex_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[allow(clippy::ptr_arg)] // serde's `with` passes the field as it is declared.
    pub fn serialize<S: Serializer>(bytes: &Vec<u8>, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(bytes))
        } else {
            bytes.serialize(serializer)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            hex::decode(&text)
                .map_err(|e| serde::de::Error::custom(format!("hash is not hex: {e}")))
        } else {
            Vec::<u8>::deserialize(deserializer)
        }
    }
}

#[cfg(test)]
mod tests;
