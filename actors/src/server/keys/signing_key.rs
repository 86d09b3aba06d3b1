//! [`SigningKeyPair`]: a loaded private key (ring), usable as an rcgen signer and for JWS.

use std::fmt;

use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{KeyError, KeyType};

/// A private key with its public half.
///
/// Implements rcgen's [`SigningKey`] (certificates are signed with ECDSA/ASN.1 or RSA
/// PKCS#1 v1.5 SHA-256) and signs JWS input with [`SigningKeyPair::sign_jws`]. `Debug` shows
/// the type and the SHA-256 fingerprint of the public key, never private material; the PKCS#8
/// copy it keeps is zeroized on drop (ring's own key schedule is not, which is ring's choice).
pub struct SigningKeyPair {
    key_type: KeyType,
    inner: Inner,
    pkcs8: Zeroizing<Vec<u8>>,
}

enum Inner {
    /// The same key twice: ASN.1 signatures for X.509, fixed-size ones for JWS (RFC 7518).
    Ec {
        asn1: Box<EcdsaKeyPair>,
        fixed: Box<EcdsaKeyPair>,
    },
    Rsa(Box<RsaKeyPair>),
}

impl SigningKeyPair {
    /// Generates a key of `key_type` from the OS generator.
    ///
    /// # Errors
    /// [`KeyError::RsaGenerationUnsupported`] for RSA types (ring cannot generate them);
    /// [`KeyError::Crypto`] if ring fails.
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let alg = match key_type {
            KeyType::EcP256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyType::EcP384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            KeyType::Rsa2048 | KeyType::Rsa4096 => {
                return Err(KeyError::RsaGenerationUnsupported { key_type })
            }
        };
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).map_err(|_| {
            KeyError::Crypto {
                key_type,
                operation: "generation",
            }
        })?;
        Self::from_pkcs8(doc.as_ref(), "a generated key")
    }

    /// Reads an unencrypted PKCS#8 private key (DER): EC P-256, EC P-384, or RSA 2048/4096.
    /// `source_name` (a path, a key reference) is used in errors.
    ///
    /// # Errors
    /// [`KeyError::Malformed`] naming `source_name` if the key is not one of those.
    pub fn from_pkcs8(der: &[u8], source_name: &str) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let ec = |asn1_alg, fixed_alg| -> Option<Inner> {
            let asn1 = EcdsaKeyPair::from_pkcs8(asn1_alg, der, &rng).ok()?;
            let fixed = EcdsaKeyPair::from_pkcs8(fixed_alg, der, &rng).ok()?;
            Some(Inner::Ec {
                asn1: Box::new(asn1),
                fixed: Box::new(fixed),
            })
        };
        let (key_type, inner) = if let Some(inner) = ec(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ) {
            (KeyType::EcP256, inner)
        } else if let Some(inner) = ec(
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        ) {
            (KeyType::EcP384, inner)
        } else {
            match RsaKeyPair::from_pkcs8(der) {
                Ok(rsa) => {
                    let key_type = match rsa.public().modulus_len() * 8 {
                        2048 => KeyType::Rsa2048,
                        4096 => KeyType::Rsa4096,
                        bits => {
                            return Err(KeyError::Malformed {
                                source_name: source_name.to_owned(),
                                reason: format!("an RSA key of {bits} bits (2048 or 4096 needed)"),
                            })
                        }
                    };
                    (key_type, Inner::Rsa(Box::new(rsa)))
                }
                Err(rejected) => {
                    return Err(KeyError::Malformed {
                        source_name: source_name.to_owned(),
                        reason: format!("not an EC P-256/P-384 or RSA PKCS#8 key ({rejected})"),
                    })
                }
            }
        };
        Ok(Self {
            key_type,
            inner,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The JWS `alg` this key signs with (`ES256`, `ES384` or `RS256`).
    pub fn jws_alg(&self) -> &'static str {
        self.key_type.jws_alg()
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.subject_public_key_info()
    }

    /// SHA-256 of the SubjectPublicKeyInfo, hex: safe to log.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.spki_der()))
    }

    /// Signs JWS signing input (`base64url(header) '.' base64url(claims)`): a fixed-size
    /// `r || s` ECDSA signature (RFC 7518 §3.4) or an RSA PKCS#1 v1.5 SHA-256 one.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if ring fails.
    pub fn sign_jws(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        let fail = || KeyError::Crypto {
            key_type: self.key_type,
            operation: "signing",
        };
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec { fixed, .. } => Ok(fixed
                .sign(&rng, input)
                .map_err(|_| fail())?
                .as_ref()
                .to_vec()),
            Inner::Rsa(rsa) => {
                let mut sig = vec![0; rsa.public().modulus_len()];
                rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .map_err(|_| fail())?;
                Ok(sig)
            }
        }
    }

    /// The unencrypted PKCS#8 DER, for a key manager to store.
    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }
}

impl SigningKey for SigningKeyPair {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec { asn1, .. } => asn1
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| rcgen::Error::RingUnspecified),
            Inner::Rsa(rsa) => {
                let mut sig = vec![0; rsa.public().modulus_len()];
                rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| rcgen::Error::RingUnspecified)?;
                Ok(sig)
            }
        }
    }
}

impl PublicKeyData for SigningKeyPair {
    fn der_bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Ec { asn1, .. } => asn1.public_key().as_ref(),
            Inner::Rsa(rsa) => rsa.public().as_ref(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self.key_type {
            KeyType::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa2048 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("key_type", &self.key_type)
            .field("public_sha256", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use ring::signature::UnparsedPublicKey;
    use tessera_identity::PublicKey;

    use super::*;

    /// A 2048-bit RSA PKCS#8 key made with `openssl genpkey` (ring cannot generate one).
    pub(crate) const RSA_2048_PEM: &str = include_str!("testdata/rsa2048.pem");

    pub(crate) fn rsa_2048() -> SigningKeyPair {
        let der = pem::parse(RSA_2048_PEM).unwrap().into_contents();
        SigningKeyPair::from_pkcs8(&der, "testdata/rsa2048.pem").unwrap()
    }

    #[test]
    fn generates_ec_keys_and_reloads_them() {
        for t in [KeyType::EcP256, KeyType::EcP384] {
            let key = SigningKeyPair::generate(t).unwrap();
            assert_eq!(key.key_type(), t);
            let again = SigningKeyPair::from_pkcs8(key.pkcs8_der(), "x").unwrap();
            assert_eq!(again.spki_der(), key.spki_der());
            assert!(matches!(
                PublicKey::from_spki_der(&key.spki_der()),
                Ok(PublicKey::Ec { .. })
            ));
        }
    }

    #[test]
    fn refuses_to_generate_rsa() {
        assert_eq!(
            SigningKeyPair::generate(KeyType::Rsa2048).unwrap_err(),
            KeyError::RsaGenerationUnsupported {
                key_type: KeyType::Rsa2048
            }
        );
    }

    #[test]
    fn loads_an_rsa_key() {
        let key = rsa_2048();
        assert_eq!(key.key_type(), KeyType::Rsa2048);
        assert_eq!(key.jws_alg(), "RS256");
        let Ok(PublicKey::Rsa { n, .. }) = PublicKey::from_spki_der(&key.spki_der()) else {
            panic!("not an RSA public key");
        };
        assert_eq!(n.len(), 256);
    }

    #[test]
    fn jws_signatures_verify_with_the_public_key() {
        let cases = [
            (
                SigningKeyPair::generate(KeyType::EcP256).unwrap(),
                &signature::ECDSA_P256_SHA256_FIXED as &dyn signature::VerificationAlgorithm,
                64,
            ),
            (
                SigningKeyPair::generate(KeyType::EcP384).unwrap(),
                &signature::ECDSA_P384_SHA384_FIXED,
                96,
            ),
            (rsa_2048(), &signature::RSA_PKCS1_2048_8192_SHA256, 256),
        ];
        for (key, alg, len) in cases {
            let sig = key.sign_jws(b"header.claims").unwrap();
            assert_eq!(sig.len(), len, "{:?}", key.key_type());
            let public = UnparsedPublicKey::new(alg, key.der_bytes());
            assert!(public.verify(b"header.claims", &sig).is_ok());
            assert!(public.verify(b"header.claimz", &sig).is_err());
        }
    }

    #[test]
    fn garbage_is_malformed_and_named() {
        let err = SigningKeyPair::from_pkcs8(b"nope", "/keys/x.pem").unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }));
        assert!(err
            .to_string()
            .starts_with("/keys/x.pem is not a usable private key"));
    }

    #[test]
    fn debug_shows_no_private_material() {
        let key = SigningKeyPair::generate(KeyType::EcP256).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.fingerprint()));
        // No run of the PKCS#8 encoding, in hex or decimal, appears.
        assert!(!shown.contains(&hex::encode(&key.pkcs8_der()[36..52])));
        assert!(!shown.contains("pkcs8"));
    }
}
