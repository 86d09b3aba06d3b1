//! Building CAs and JWT keys (blocking I/O: run off the actor threads).
//!
//! An X.509 CA is self-signed by default; with an [`UpstreamDisk`], the upstream CA signs it
//! and its trust anchor is the upstream root. Either way the certificate is what SPIRE makes:
//! subject `C=US, O=SPIFFE, serialNumber=<serial>`, basicConstraints CA:true (critical),
//! keyUsage keyCertSign + cRLSign + digitalSignature (critical), URI SAN `spiffe://<td>`,
//! subject key identifier (and authority key identifier when upstream-signed), a random
//! 128-bit serial, validity `[now - 10 s, min(now + ttl, upstream expiry)]`.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyUsagePurpose, PublicKeyData};
use sha2::{Digest, Sha256};
use tessera_identity::TrustDomain;

use super::upstream::{UpstreamDisk, UpstreamError};
use super::x509::{
    random_serial, secs, serial_decimal, set_validity, uri_san, SubjectName,
    NOT_BEFORE_CUSHION_SECS,
};
use crate::random::{random_array, RandomSource};
use crate::server::events::{CaRecord, JwtKeyRecord};
use crate::server::keys::{KeyError, KeyManager, KeyType, SigningKeyPair};

/// How X.509 CAs are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSettings {
    /// CA lifetime (SPIRE's `ca_ttl`, default 24 h).
    pub ttl: Duration,
    /// CA key type (SPIRE's `ca_key_type`, default `ec-p256`; RSA cannot be generated).
    pub key_type: KeyType,
    /// CA subject (SPIRE's `ca_subject`, default `C=US, O=SPIFFE`).
    pub subject: SubjectName,
    /// UpstreamAuthority "disk", if configured.
    pub upstream: Option<UpstreamDisk>,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            key_type: KeyType::EcP256,
            subject: SubjectName::spiffe_ca(),
            upstream: None,
        }
    }
}

/// A CA just built: its record for the log and its loaded key for the signer.
#[derive(Debug, Clone)]
pub struct PreparedCa {
    /// What `CaPrepared` records.
    pub record: CaRecord,
    /// Its private key.
    pub key: Arc<SigningKeyPair>,
}

/// A JWT key just built.
#[derive(Debug, Clone)]
pub struct PreparedJwtKey {
    /// What `JwtKeyPrepared` records.
    pub record: JwtKeyRecord,
    /// Its private key.
    pub key: Arc<SigningKeyPair>,
}

/// Why a CA or JWT key could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaBuildError {
    /// The key manager failed.
    #[error("authority: {0}")]
    Key(#[from] KeyError),
    /// The upstream CA's files are not usable.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream CA expires too soon to sign a CA worth having.
    #[error(
        "UpstreamAuthority \"disk\": the upstream chain expires at {expires_at} (Unix seconds), \
         which leaves no lifetime for a new CA at {now}; renew the upstream certificate"
    )]
    UpstreamExpiring {
        /// The chain's earliest notAfter.
        expires_at: i64,
        /// Now.
        now: i64,
    },
    /// Certificate generation failed (a bad subject name in the config, or a crypto fault).
    #[error("authority: cannot build the CA certificate: {reason}")]
    Certificate {
        /// What failed.
        reason: String,
    },
}

/// Builds a new X.509 CA for `td` at `now` (Unix seconds): generates its key in `keys`, makes
/// the certificate (self-signed, or signed by the upstream CA), and returns the record to log.
/// On failure after the key was made, the key is deleted again.
///
/// # Errors
/// A [`CaBuildError`] naming what failed.
pub fn build_ca(
    td: &TrustDomain,
    settings: &CaSettings,
    keys: &dyn KeyManager,
    random: &dyn RandomSource,
    now: i64,
) -> Result<PreparedCa, CaBuildError> {
    let upstream = match &settings.upstream {
        Some(u) => Some(u.load(now)?),
        None => None,
    };
    let name = format!("x509-ca-{now}-{}", hex::encode(random_array::<8>(random)));
    let key_ref = keys.generate(&name, settings.key_type)?;
    let built = keys
        .load(&key_ref)
        .map_err(CaBuildError::from)
        .and_then(|key| {
            let key = Arc::new(key);
            let serial = random_serial(random);
            let not_before = now.saturating_sub(NOT_BEFORE_CUSHION_SECS);
            let mut not_after = now.saturating_add(secs(settings.ttl));
            if let Some(up) = &upstream {
                not_after = not_after.min(up.not_after);
                if not_after <= now {
                    return Err(CaBuildError::UpstreamExpiring {
                        expires_at: up.not_after,
                        now,
                    });
                }
            }
            let cert_err = |e: String| CaBuildError::Certificate { reason: e };
            let mut params = CertificateParams::default();
            params.distinguished_name = settings
                .subject
                .to_dn(Some(&serial_decimal(&serial)), None)
                .map_err(cert_err)?;
            params.serial_number = Some(serial.to_vec().into());
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.subject_alt_names = vec![uri_san(&td.id().to_string()).map_err(cert_err)?];
            set_validity(&mut params, not_before, not_after);
            let authority_id = hex::encode(params.key_identifier(key.as_ref()));

            let (cert_der, upstream_chain, trust_anchors) = match &upstream {
                None => {
                    let cert = params
                        .self_signed(key.as_ref())
                        .map_err(|e| cert_err(e.to_string()))?;
                    let der = cert.der().to_vec();
                    (der.clone(), Vec::new(), vec![der])
                }
                Some(up) => {
                    params.use_authority_key_identifier_extension = true;
                    let issuer = Issuer::from_ca_cert_der(&up.signing_cert.clone().into(), &up.key)
                        .map_err(|e| cert_err(format!("upstream certificate: {e}")))?;
                    let cert = params
                        .signed_by(key.as_ref(), &issuer)
                        .map_err(|e| cert_err(e.to_string()))?;
                    (cert.der().to_vec(), up.chain.clone(), up.roots.clone())
                }
            };
            Ok(PreparedCa {
                record: CaRecord {
                    authority_id,
                    cert_der,
                    upstream_chain,
                    trust_anchors,
                    not_before,
                    not_after,
                    key_ref: key_ref.clone(),
                },
                key,
            })
        });
    if built.is_err() {
        let _ = keys.delete(&key_ref);
    }
    built
}

/// Builds a new JWT signing key valid for `ttl` from `now` (Unix seconds). Its kid is 32 hex
/// characters of the SHA-256 of its public key: opaque like SPIRE's random kids, and unique
/// without depending on the injected random source.
///
/// # Errors
/// [`CaBuildError::Key`] if the key manager fails.
pub fn build_jwt_key(
    ttl: Duration,
    key_type: KeyType,
    keys: &dyn KeyManager,
    random: &dyn RandomSource,
    now: i64,
) -> Result<PreparedJwtKey, CaBuildError> {
    let name = format!("jwt-key-{now}-{}", hex::encode(random_array::<8>(random)));
    let key_ref = keys.generate(&name, key_type)?;
    let key = match keys.load(&key_ref) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            let _ = keys.delete(&key_ref);
            return Err(e.into());
        }
    };
    let public_key_der = key.subject_public_key_info();
    let kid = hex::encode(&Sha256::digest(&public_key_der)[..16]);
    Ok(PreparedJwtKey {
        record: JwtKeyRecord {
            kid,
            public_key_der,
            not_before: now.saturating_sub(NOT_BEFORE_CUSHION_SECS),
            not_after: now.saturating_add(secs(ttl)),
            key_ref,
        },
        key,
    })
}

#[cfg(test)]
mod tests;
