//! Key managers: where the authority's private keys (X.509 CA and JWT signing keys) live.
//!
//! The event log only ever holds a key's *reference* (`key_ref`) and its public half; the
//! private key stays in a [`KeyManager`]: files under `<data_dir>/keys/` ([`DiskKeyManager`],
//! mode 0600 in a 0700 directory) or process memory ([`MemoryKeyManager`], tests and
//! simulation). A loaded key is a [`SigningKeyPair`], usable by rcgen to sign certificates and
//! by the authority to sign JWTs; its `Debug` shows the public key's fingerprint only, and the
//! PKCS#8 bytes it holds are zeroized on drop.
//!
//! **RSA:** ring, the crypto backend, cannot generate RSA keys; the `rsa` crate generates
//! them ([`KeyType::Rsa2048`], [`KeyType::Rsa4096`]) and ring signs with them, as with keys
//! loaded from PKCS#8 (an upstream CA's key, or one imported with [`KeyManager::import`]).
//! Generated keys are EC P-256 (default), P-384, or RSA.

mod disk;
mod memory;
mod signing_key;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub(crate) use self::disk::decode_key_file;
pub use self::disk::DiskKeyManager;
pub use self::memory::MemoryKeyManager;
/// Test keys (a fixed RSA key, so tests need not generate one) for tests elsewhere in the
/// crate.
#[cfg(test)]
pub(crate) use self::signing_key::tests as test_keys;
pub use self::signing_key::SigningKeyPair;

/// Longest key name accepted, in bytes.
pub const MAX_KEY_NAME_LEN: usize = 128;

/// The kind of a private key, named as in SPIRE's `ca_key_type` (`ec-p256`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (`ec-p256`, the default; JWT `ES256`).
    #[default]
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA on P-384 with SHA-384 (`ec-p384`; JWT `ES384`).
    #[serde(rename = "ec-p384")]
    EcP384,
    /// RSA 2048 with PKCS#1 v1.5 and SHA-256 (`rsa-2048`; JWT `RS256`). Load only.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA 4096 with PKCS#1 v1.5 and SHA-256 (`rsa-4096`; JWT `RS256`). Load only.
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    /// The config name: `ec-p256`, `ec-p384`, `rsa-2048` or `rsa-4096`.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa4096 => "rsa-4096",
        }
    }

    /// The JWS `alg` of JWTs signed with such a key.
    pub fn jws_alg(self) -> &'static str {
        match self {
            Self::EcP256 => "ES256",
            Self::EcP384 => "ES384",
            Self::Rsa2048 | Self::Rsa4096 => "RS256",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "ec-p256" => Ok(Self::EcP256),
            "ec-p384" => Ok(Self::EcP384),
            "rsa-2048" => Ok(Self::Rsa2048),
            "rsa-4096" => Ok(Self::Rsa4096),
            other => Err(KeyError::UnknownKeyType {
                name: other.chars().take(64).collect(),
            }),
        }
    }
}

/// Why a key could not be generated, stored, loaded or deleted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key type name is not one of the supported ones.
    #[error("unknown key type \"{name}\"; use \"ec-p256\" (default), \"ec-p384\", \"rsa-2048\" or \"rsa-4096\"")]
    UnknownKeyType {
        /// The name given (at most 64 characters of it).
        name: String,
    },
    /// A key name (or reference) is empty, too long, or has characters outside the safe set.
    #[error("key name \"{name}\" is invalid: {reason}")]
    InvalidName {
        /// The name (at most 64 characters of it).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A key with this name exists already; keys are never overwritten.
    #[error("key \"{key_ref}\" already exists{}; pick another name", at(.path))]
    AlreadyExists {
        /// The key's reference.
        key_ref: String,
        /// Its file, for the disk key manager.
        path: Option<PathBuf>,
    },
    /// No key with this reference.
    #[error(
        "key \"{key_ref}\" not found{}; restore it from a backup, or let the authority prepare \
         a new CA or JWT key",
        at(.path)
    )]
    NotFound {
        /// The key's reference.
        key_ref: String,
        /// Where it was looked for, for the disk key manager.
        path: Option<PathBuf>,
    },
    /// The bytes are not a supported private key.
    #[error(
        "{source_name} is not a usable private key: {reason}; expected an unencrypted PKCS#8 \
         (\"PRIVATE KEY\") EC P-256, EC P-384 or RSA 2048/4096 key (convert with `openssl pkcs8 \
         -topk8 -nocrypt -in old.pem -out new.pem`)"
    )]
    Malformed {
        /// The key's file or reference.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The crypto library failed to generate or use a key.
    #[error("{key_type} key: {operation} failed in the crypto library")]
    Crypto {
        /// The key's type.
        key_type: KeyType,
        /// What was being done (`generation`, `signing`).
        operation: &'static str,
    },
    /// A file system operation failed.
    #[error("cannot {operation} {}: {reason}", .path.display())]
    Io {
        /// What was being done (`create`, `read`, `remove`, ...).
        operation: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A key file or directory is readable or writable by group or others.
    #[error(
        "{} has mode {mode:03o}, but it holds private keys and must not be accessible to group \
         or others: run `chmod {wanted:o} {}`",
        .path.display(),
        .path.display()
    )]
    InsecurePermissions {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        wanted: u32,
    },
}

fn at(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" at {}", p.display()),
        None => String::new(),
    }
}

/// Stores and hands out the authority's private keys. Implementations do blocking I/O: call
/// them off the actor threads (`spawn_blocking`).
pub trait KeyManager: Send + Sync + fmt::Debug {
    /// Generates a key of `key_type` and stores it under `name`; returns its reference (what
    /// the log records as `key_ref`).
    ///
    /// # Errors
    /// [`KeyError::InvalidName`], [`KeyError::AlreadyExists`] (a key is never overwritten),
    /// [`KeyError::Crypto`], or a storage error.
    fn generate(&self, name: &str, key_type: KeyType) -> Result<String, KeyError>;

    /// Stores an existing unencrypted PKCS#8 private key (DER) under `name`; returns its
    /// reference.
    ///
    /// # Errors
    /// As [`KeyManager::generate`], and [`KeyError::Malformed`] if the bytes are not a
    /// supported key.
    fn import(&self, name: &str, pkcs8_der: &[u8]) -> Result<String, KeyError>;

    /// Loads the key with reference `key_ref`.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], [`KeyError::Malformed`], or a storage error.
    fn load(&self, key_ref: &str) -> Result<SigningKeyPair, KeyError>;

    /// Deletes the key with reference `key_ref`; returns whether there was one.
    ///
    /// # Errors
    /// A storage error.
    fn delete(&self, key_ref: &str) -> Result<bool, KeyError>;
}

/// Checks a key name: 1 to [`MAX_KEY_NAME_LEN`] bytes of ASCII letters, digits, `-`, `_` and
/// `.`, not starting with `.` (names become file names).
///
/// # Errors
/// [`KeyError::InvalidName`] naming the rule.
pub fn check_key_name(name: &str) -> Result<(), KeyError> {
    let invalid = |reason| KeyError::InvalidName {
        name: name.chars().take(64).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_KEY_NAME_LEN {
        return Err(invalid("it is longer than 128 bytes"));
    }
    if name.starts_with('.') {
        return Err(invalid("it starts with '.'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names_round_trip() {
        for t in [
            KeyType::EcP256,
            KeyType::EcP384,
            KeyType::Rsa2048,
            KeyType::Rsa4096,
        ] {
            assert_eq!(t.name().parse::<KeyType>(), Ok(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.name())
            );
        }
        let err = "ec-p521".parse::<KeyType>().unwrap_err();
        assert!(err.to_string().contains("\"ec-p521\""), "{err}");
        assert_eq!(KeyType::default(), KeyType::EcP256);
    }

    #[test]
    fn key_names_are_file_safe() {
        assert_eq!(check_key_name("x509-ca-0a1b.v2_x"), Ok(()));
        for bad in ["", ".hidden", "a/b", "../x", "a b", "ké"] {
            assert!(
                matches!(check_key_name(bad), Err(KeyError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(check_key_name(&"k".repeat(129)).is_err());
        assert!(check_key_name(&"k".repeat(128)).is_ok());
    }

    #[test]
    fn error_messages_name_the_thing_and_the_fix() {
        let e = KeyError::InsecurePermissions {
            path: "/var/lib/tessera/keys/a.pem".into(),
            mode: 0o644,
            wanted: 0o600,
        };
        assert_eq!(
            e.to_string(),
            "/var/lib/tessera/keys/a.pem has mode 644, but it holds private keys and must not be \
             accessible to group or others: run `chmod 600 /var/lib/tessera/keys/a.pem`"
        );
        let e = KeyError::NotFound {
            key_ref: "k".into(),
            path: Some("/d/keys/k.pem".into()),
        };
        assert!(e
            .to_string()
            .starts_with("key \"k\" not found at /d/keys/k.pem; restore"));
    }
}
