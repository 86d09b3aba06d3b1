//! UpstreamAuthority "disk": a CA certificate (with its chain) and key in PEM files sign
//! Tessera's intermediate CA, as SPIRE's `disk` plugin does. Workloads then trust the upstream
//! root, which is what the bundle publishes.
//!
//! - `cert_file_path`: the upstream signing certificate first, then any intermediates above it
//!   (and optionally the root);
//! - `key_file_path`: its unencrypted PKCS#8 private key (EC P-256/P-384 or RSA 2048/4096);
//! - `bundle_file_path` (optional): the upstream root(s). Without it, the last certificate of
//!   `cert_file_path` must be self-signed, and it is the root.
//!
//! The files are read each time a CA is prepared, so an operator can replace them between
//! rotations.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_identity::X509Authority;

use super::x509::{cert_info, CertInfo};
use crate::server::keys::{KeyError, SigningKeyPair};

/// Largest certificate or key file read, in bytes.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Where the upstream CA's files are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDisk {
    /// PEM certificates: the upstream signing certificate, then its chain.
    pub cert_file_path: PathBuf,
    /// PEM PKCS#8 private key of the signing certificate.
    pub key_file_path: PathBuf,
    /// PEM root certificates; if absent, the last certificate of `cert_file_path` is the root.
    #[serde(default)]
    pub bundle_file_path: Option<PathBuf>,
}

/// Why the upstream CA's files cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// A file cannot be read.
    #[error("UpstreamAuthority \"disk\": cannot read {}: {reason}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A certificate file does not hold PEM certificates.
    #[error("UpstreamAuthority \"disk\": {}: {reason}", .path.display())]
    BadCertificates {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The private key file is not usable.
    #[error("UpstreamAuthority \"disk\": key_file_path: {0}")]
    Key(KeyError),
    /// The key does not belong to the signing certificate.
    #[error(
        "UpstreamAuthority \"disk\": the key in {} does not match the first certificate of {}; \
         point key_file_path at that certificate's key",
        .key_path.display(),
        .cert_path.display()
    )]
    KeyMismatch {
        /// `cert_file_path`.
        cert_path: PathBuf,
        /// `key_file_path`.
        key_path: PathBuf,
    },
    /// The signing certificate is not a CA.
    #[error(
        "UpstreamAuthority \"disk\": the first certificate of {} is not a CA (basicConstraints \
         CA:true); it cannot sign Tessera's intermediate CA",
        .path.display()
    )]
    NotCa {
        /// `cert_file_path`.
        path: PathBuf,
    },
    /// Without a bundle file, the chain must end in a self-signed root.
    #[error(
        "UpstreamAuthority \"disk\": the last certificate of {} is not self-signed; append the \
         upstream root to it, or set bundle_file_path to the root certificate(s)",
        .path.display()
    )]
    NoRoot {
        /// `cert_file_path`.
        path: PathBuf,
    },
    /// The signing certificate is outside its validity period.
    #[error(
        "UpstreamAuthority \"disk\": the certificate in {} is valid from {not_before} to \
         {not_after} (Unix seconds) but it is now {now}; replace it",
        .path.display()
    )]
    OutsideValidity {
        /// `cert_file_path`.
        path: PathBuf,
        /// Its notBefore.
        not_before: i64,
        /// Its notAfter.
        not_after: i64,
        /// Now.
        now: i64,
    },
}

/// The upstream CA, read and checked.
#[derive(Debug)]
pub(crate) struct LoadedUpstream {
    /// The signing certificate, DER.
    pub(crate) signing_cert: Vec<u8>,
    /// The signing certificate and the intermediates above it, excluding roots.
    pub(crate) chain: Vec<Vec<u8>>,
    /// The roots.
    pub(crate) roots: Vec<Vec<u8>>,
    /// The signing key.
    pub(crate) key: SigningKeyPair,
    /// The earliest notAfter of the chain (and of the root, when it comes from the chain).
    pub(crate) not_after: i64,
}

impl UpstreamDisk {
    /// Reads and checks the files at `now` (Unix seconds).
    ///
    /// # Errors
    /// An [`UpstreamError`] naming the file, what is wrong, and the fix.
    pub(crate) fn load(&self, now: i64) -> Result<LoadedUpstream, UpstreamError> {
        let cert_path = &self.cert_file_path;
        let certs = read_certs(cert_path)?;
        let infos = certs
            .iter()
            .map(|der| cert_info(der))
            .collect::<Result<Vec<CertInfo>, String>>()
            .map_err(|reason| bad_certs(cert_path, reason))?;
        let (Some(signing), Some(first)) = (certs.first(), infos.first()) else {
            return Err(bad_certs(cert_path, "no certificate".into()));
        };
        if !first.is_ca {
            return Err(UpstreamError::NotCa {
                path: cert_path.clone(),
            });
        }
        if now < first.not_before || now > first.not_after {
            return Err(UpstreamError::OutsideValidity {
                path: cert_path.clone(),
                not_before: first.not_before,
                not_after: first.not_after,
                now,
            });
        }

        let key_bytes = read_file(&self.key_file_path)?;
        let shown = self.key_file_path.display().to_string();
        let der =
            crate::server::keys::decode_key_file(&key_bytes, &shown).map_err(UpstreamError::Key)?;
        let key = SigningKeyPair::from_pkcs8(&der, &shown).map_err(UpstreamError::Key)?;
        if key.spki_der() != first.spki_der {
            return Err(UpstreamError::KeyMismatch {
                cert_path: cert_path.clone(),
                key_path: self.key_file_path.clone(),
            });
        }

        let (chain, roots, not_after) = match &self.bundle_file_path {
            Some(bundle_path) => {
                let roots = read_certs(bundle_path)?;
                let chain: Vec<Vec<u8>> = certs
                    .iter()
                    .filter(|c| !roots.contains(c))
                    .cloned()
                    .collect();
                let not_after = chain_expiry(&chain, &certs, &infos);
                (chain, roots, not_after)
            }
            None => {
                let (root, rest) = certs.split_last().unwrap_or((signing, &[]));
                if !infos.last().is_some_and(|i| i.self_signed) {
                    return Err(UpstreamError::NoRoot {
                        path: cert_path.clone(),
                    });
                }
                let not_after = infos.iter().map(|i| i.not_after).min().unwrap_or(i64::MIN);
                (rest.to_vec(), vec![root.clone()], not_after)
            }
        };
        Ok(LoadedUpstream {
            signing_cert: signing.clone(),
            chain,
            roots,
            key,
            not_after,
        })
    }
}

/// The earliest notAfter among the certificates of `chain`.
fn chain_expiry(chain: &[Vec<u8>], certs: &[Vec<u8>], infos: &[CertInfo]) -> i64 {
    certs
        .iter()
        .zip(infos)
        .filter(|(c, _)| chain.contains(c))
        .map(|(_, i)| i.not_after)
        .min()
        .unwrap_or(i64::MIN)
}

fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, UpstreamError> {
    let bytes = read_file(path)?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| bad_certs(path, "not a PEM text file".into()))?;
    let certs = X509Authority::parse_pem(text).map_err(|e| bad_certs(path, e.to_string()))?;
    Ok(certs.into_iter().map(|c| c.der().to_vec()).collect())
}

fn read_file(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, UpstreamError> {
    let io = |e: std::io::Error| UpstreamError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    File::open(path)
        .map_err(io)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(UpstreamError::Io {
            path: path.to_owned(),
            reason: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

fn bad_certs(path: &Path, reason: String) -> UpstreamError {
    UpstreamError::BadCertificates {
        path: path.to_owned(),
        reason,
    }
}
