//! [`PublicKey`]: an EC or RSA public key as JWK parameters, convertible to and from a DER
//! SubjectPublicKeyInfo.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::der;
use super::encoding::{self, B64URL};

/// A NIST curve a JWK may name in `crv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// `P-256` (secp256r1).
    P256,
    /// `P-384` (secp384r1).
    P384,
    /// `P-521` (secp521r1).
    P521,
}

impl EcCurve {
    /// The JWK `crv` name, e.g. `P-256`.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// The curve a JWK `crv` value names, if supported.
    pub fn from_jwk_name(name: &str) -> Option<Self> {
        match name {
            "P-256" => Some(Self::P256),
            "P-384" => Some(Self::P384),
            "P-521" => Some(Self::P521),
            _ => None,
        }
    }

    /// Length in bytes of one coordinate (RFC 7518 §6.2.1.2: JWK coordinates have exactly this
    /// length).
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    fn oid_der(self) -> &'static [u8] {
        match self {
            Self::P256 => der::OID_P256,
            Self::P384 => der::OID_P384,
            Self::P521 => der::OID_P521,
        }
    }
}

/// Why bytes are not a usable public key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The DER is not a SubjectPublicKeyInfo.
    #[error("not a DER SubjectPublicKeyInfo: {reason}")]
    InvalidSpki {
        /// The parser's complaint.
        reason: String,
    },
    /// The key is neither EC nor RSA.
    #[error("unsupported public key algorithm {oid}; only EC (P-256, P-384, P-521) and RSA keys are supported")]
    UnsupportedAlgorithm {
        /// The algorithm OID, dotted.
        oid: String,
    },
    /// The EC curve is not P-256, P-384 or P-521.
    #[error("unsupported EC curve {curve}; use P-256, P-384 or P-521")]
    UnsupportedCurve {
        /// The curve's name or OID.
        curve: String,
    },
    /// The EC point is not an uncompressed point of the curve's size.
    #[error("EC point is not an uncompressed {curve} point (expected {expected} bytes starting 0x04, got {got})")]
    BadEcPoint {
        /// The curve's JWK name.
        curve: &'static str,
        /// Expected length in bytes.
        expected: usize,
        /// Actual length in bytes.
        got: usize,
    },
    /// An EC coordinate has the wrong length.
    #[error("EC coordinate \"{param}\" is {got} bytes; {curve} needs exactly {expected}")]
    BadCoordinateLength {
        /// `x` or `y`.
        param: &'static str,
        /// The curve's JWK name.
        curve: &'static str,
        /// Expected length in bytes.
        expected: usize,
        /// Actual length in bytes.
        got: usize,
    },
    /// An RSA modulus or exponent is zero or empty.
    #[error("RSA parameter \"{param}\" is empty or zero")]
    EmptyRsaParam {
        /// `n` or `e`.
        param: &'static str,
    },
}

/// An EC or RSA public key, held as its JWK parameters (big-endian, unpadded for RSA).
///
/// Serializes (serde) as its DER SubjectPublicKeyInfo: base64 in human-readable formats, bytes
/// otherwise.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// An elliptic-curve key (`kty` `EC`).
    Ec {
        /// The curve.
        curve: EcCurve,
        /// The x coordinate, exactly [`EcCurve::coordinate_len`] bytes.
        x: Vec<u8>,
        /// The y coordinate, exactly [`EcCurve::coordinate_len`] bytes.
        y: Vec<u8>,
    },
    /// An RSA key (`kty` `RSA`).
    Rsa {
        /// The modulus, without leading zero bytes.
        n: Vec<u8>,
        /// The public exponent, without leading zero bytes.
        e: Vec<u8>,
    },
}

impl PublicKey {
    /// An EC key from its coordinates.
    ///
    /// # Errors
    /// [`KeyError::BadCoordinateLength`] unless both are exactly the curve's coordinate size.
    pub fn ec(curve: EcCurve, x: Vec<u8>, y: Vec<u8>) -> Result<Self, KeyError> {
        for (param, v) in [("x", &x), ("y", &y)] {
            if v.len() != curve.coordinate_len() {
                return Err(KeyError::BadCoordinateLength {
                    param,
                    curve: curve.jwk_name(),
                    expected: curve.coordinate_len(),
                    got: v.len(),
                });
            }
        }
        Ok(Self::Ec { curve, x, y })
    }

    /// An RSA key from its modulus and exponent (leading zero bytes are dropped).
    ///
    /// # Errors
    /// [`KeyError::EmptyRsaParam`] if either is empty or zero.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = der::trim_leading_zeros(n);
        let e = der::trim_leading_zeros(e);
        if n.is_empty() {
            return Err(KeyError::EmptyRsaParam { param: "n" });
        }
        if e.is_empty() {
            return Err(KeyError::EmptyRsaParam { param: "e" });
        }
        Ok(Self::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    /// Reads a DER SubjectPublicKeyInfo (as in a certificate, or SPIRE's stored JWT keys).
    ///
    /// # Errors
    /// A [`KeyError`] if the DER is malformed or the key is not a supported EC or RSA key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|e| KeyError::InvalidSpki {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(KeyError::InvalidSpki {
                reason: format!("{} bytes of trailing data", rest.len()),
            });
        }
        Self::from_spki(&spki)
    }

    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        let alg = &spki.algorithm.algorithm;
        let key_bytes: &[u8] = &spki.subject_public_key.data;
        if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| KeyError::UnsupportedCurve {
                    curve: "(missing or not a named curve)".into(),
                })?;
            let curve = if curve_oid == OID_EC_P256 {
                EcCurve::P256
            } else if curve_oid == OID_NIST_EC_P384 {
                EcCurve::P384
            } else if curve_oid == OID_NIST_EC_P521 {
                EcCurve::P521
            } else {
                return Err(KeyError::UnsupportedCurve {
                    curve: curve_oid.to_id_string(),
                });
            };
            let len = curve.coordinate_len();
            match key_bytes.split_first() {
                Some((&0x04, xy)) if xy.len() == 2 * len => {
                    let (x, y) = xy.split_at(len);
                    Self::ec(curve, x.to_vec(), y.to_vec())
                }
                _ => Err(KeyError::BadEcPoint {
                    curve: curve.jwk_name(),
                    expected: 1 + 2 * len,
                    got: key_bytes.len(),
                }),
            }
        } else if *alg == OID_PKCS1_RSAENCRYPTION {
            match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                    Self::rsa(rsa.modulus, rsa.exponent)
                }
                Ok(_) | Err(_) => Err(KeyError::InvalidSpki {
                    reason: "malformed RSAPublicKey".into(),
                }),
            }
        } else {
            Err(KeyError::UnsupportedAlgorithm {
                oid: alg.to_id_string(),
            })
        }
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn to_spki_der(&self) -> Vec<u8> {
        match self {
            Self::Ec { curve, x, y } => {
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                let alg = der::sequence(&[der::OID_EC_PUBLIC_KEY, curve.oid_der()]);
                der::sequence(&[&alg, &der::bit_string(&point)])
            }
            Self::Rsa { n, e } => {
                let alg = der::sequence(&[der::OID_RSA_ENCRYPTION, der::NULL]);
                let rsa_key =
                    der::sequence(&[&der::unsigned_integer(n), &der::unsigned_integer(e)]);
                der::sequence(&[&alg, &der::bit_string(&rsa_key)])
            }
        }
    }

    /// The JWK `kty`: `EC` or `RSA`.
    pub fn kty(&self) -> &'static str {
        match self {
            Self::Ec { .. } => "EC",
            Self::Rsa { .. } => "RSA",
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ec { curve, x, y } => f
                .debug_struct("Ec")
                .field("curve", curve)
                .field("x", &B64URL.encode(x))
                .field("y", &B64URL.encode(y))
                .finish(),
            Self::Rsa { n, e } => f
                .debug_struct("Rsa")
                .field("bits", &(n.len() * 8))
                .field("e", &B64URL.encode(e))
                .finish_non_exhaustive(),
        }
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        encoding::serialize_bytes(&self.to_spki_der(), serializer)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let der = encoding::deserialize_bytes(deserializer)?;
        Self::from_spki_der(&der).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_keys_round_trip_through_spki() {
        for curve in [EcCurve::P256, EcCurve::P384, EcCurve::P521] {
            let len = curve.coordinate_len();
            let key = PublicKey::ec(curve, vec![0x11; len], vec![0x22; len]).unwrap();
            let der = key.to_spki_der();
            assert_eq!(PublicKey::from_spki_der(&der), Ok(key), "{curve:?}");
        }
    }

    #[test]
    fn rsa_keys_round_trip_through_spki() {
        let mut n = vec![0xc3; 256];
        n[255] = 0x01;
        let key = PublicKey::rsa(&n, &[0x01, 0x00, 0x01]).unwrap();
        assert_eq!(PublicKey::from_spki_der(&key.to_spki_der()), Ok(key));
    }

    #[test]
    fn rsa_params_drop_leading_zeros_and_refuse_zero() {
        let key = PublicKey::rsa(&[0, 0, 0xab], &[0, 3]).unwrap();
        assert_eq!(
            key,
            PublicKey::Rsa {
                n: vec![0xab],
                e: vec![3]
            }
        );
        assert_eq!(
            PublicKey::rsa(&[0, 0], &[3]),
            Err(KeyError::EmptyRsaParam { param: "n" })
        );
        assert_eq!(
            PublicKey::rsa(&[1], &[]),
            Err(KeyError::EmptyRsaParam { param: "e" })
        );
    }

    #[test]
    fn ec_coordinates_must_be_full_size() {
        assert!(matches!(
            PublicKey::ec(EcCurve::P256, vec![1; 31], vec![1; 32]),
            Err(KeyError::BadCoordinateLength {
                param: "x",
                got: 31,
                ..
            })
        ));
    }

    #[test]
    fn rejects_garbage_and_trailing_data() {
        assert!(matches!(
            PublicKey::from_spki_der(b"nope"),
            Err(KeyError::InvalidSpki { .. })
        ));
        let mut der = PublicKey::ec(EcCurve::P256, vec![1; 32], vec![2; 32])
            .unwrap()
            .to_spki_der();
        der.push(0);
        assert!(matches!(
            PublicKey::from_spki_der(&der),
            Err(KeyError::InvalidSpki { .. })
        ));
    }

    #[test]
    fn rejects_compressed_points() {
        let alg = der::sequence(&[der::OID_EC_PUBLIC_KEY, der::OID_P256]);
        let mut point = vec![0x02];
        point.extend_from_slice(&[7; 32]);
        let spki = der::sequence(&[&alg, &der::bit_string(&point)]);
        assert!(matches!(
            PublicKey::from_spki_der(&spki),
            Err(KeyError::BadEcPoint { .. })
        ));
    }

    #[test]
    fn serde_carries_the_spki() {
        let key = PublicKey::ec(EcCurve::P384, vec![5; 48], vec![6; 48]).unwrap();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
    }
}
