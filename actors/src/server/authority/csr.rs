//! PKCS#10 certificate signing requests from workloads and agents: parsed, size-bounded and
//! signature-checked; only the public key is taken from them (the SPIFFE ID and DNS names
//! come from the caller, never from the CSR).

use rcgen::{PublicKeyData, SignatureAlgorithm};
use tessera_identity::{EcCurve, PublicKey};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::signer::SvidRejection;

/// Smallest RSA modulus accepted in a CSR, in bits.
const MIN_RSA_BITS: usize = 2048;

/// The public key of a verified CSR, ready to be put in a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CsrKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// Parses a DER CSR of at most `max_len` bytes, checks its self-signature, and returns its
/// public key (EC P-256, EC P-384, or RSA of at least 2048 bits).
///
/// # Errors
/// The [`SvidRejection`] naming what is wrong.
pub(crate) fn parse_csr(der: &[u8], max_len: usize) -> Result<CsrKey, SvidRejection> {
    if der.len() > max_len {
        return Err(SvidRejection::CsrTooLarge {
            len: der.len(),
            max: max_len,
        });
    }
    let csr = match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => csr,
        Ok((rest, _)) => {
            return Err(SvidRejection::MalformedCsr {
                reason: format!("{} bytes of trailing data", rest.len()),
            })
        }
        Err(e) => {
            return Err(SvidRejection::MalformedCsr {
                reason: e.to_string(),
            })
        }
    };
    csr.verify_signature()
        .map_err(|_| SvidRejection::CsrSignature)?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = match PublicKey::from_spki_der(spki.raw) {
        Ok(PublicKey::Ec {
            curve: EcCurve::P256,
            ..
        }) => &rcgen::PKCS_ECDSA_P256_SHA256,
        Ok(PublicKey::Ec {
            curve: EcCurve::P384,
            ..
        }) => &rcgen::PKCS_ECDSA_P384_SHA384,
        Ok(PublicKey::Rsa { n, .. }) if n.len() * 8 >= MIN_RSA_BITS => &rcgen::PKCS_RSA_SHA256,
        Ok(PublicKey::Rsa { n, .. }) => {
            return Err(SvidRejection::UnsupportedKey {
                reason: format!(
                    "an RSA key of {} bits (at least {MIN_RSA_BITS} needed)",
                    n.len() * 8
                ),
            })
        }
        Ok(PublicKey::Ec { curve, .. }) => {
            return Err(SvidRejection::UnsupportedKey {
                reason: format!("an EC key on {} (P-256 or P-384 needed)", curve.jwk_name()),
            })
        }
        Err(e) => {
            return Err(SvidRejection::UnsupportedKey {
                reason: e.to_string(),
            })
        }
    };
    Ok(CsrKey {
        raw: spki.subject_public_key.data.to_vec(),
        alg,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    fn csr_for(key: &KeyPair) -> Vec<u8> {
        CertificateParams::default()
            .serialize_request(key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn takes_the_public_key_of_a_good_csr() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            let parsed = parse_csr(&csr_for(&key), 16 * 1024).unwrap();
            assert_eq!(
                parsed.subject_public_key_info(),
                key.subject_public_key_info()
            );
        }
    }

    #[test]
    fn rejects_a_bad_signature() {
        let mut der = csr_for(&KeyPair::generate().unwrap());
        // The signature BIT STRING is last: flip a bit of it.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_eq!(parse_csr(&der, 16 * 1024), Err(SvidRejection::CsrSignature));
    }

    #[test]
    fn rejects_oversized_garbage_and_unsupported_keys() {
        let der = csr_for(&KeyPair::generate().unwrap());
        assert!(matches!(
            parse_csr(&der, 10),
            Err(SvidRejection::CsrTooLarge { max: 10, .. })
        ));
        assert!(matches!(
            parse_csr(b"\x30\x03\x02\x01\x00", 1024),
            Err(SvidRejection::MalformedCsr { .. })
        ));
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(matches!(
            parse_csr(&csr_for(&ed), 16 * 1024),
            Err(SvidRejection::UnsupportedKey { .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_csr(&bytes, 16 * 1024);
        }

        #[test]
        fn never_accepts_a_mutated_csr_with_another_key(flip in 0usize..400, bit in 0u8..8) {
            let key = KeyPair::generate().unwrap();
            let mut der = csr_for(&key);
            let at = flip % der.len();
            der[at] ^= 1 << bit;
            if let Ok(parsed) = parse_csr(&der, 16 * 1024) {
                // A mutation that still verifies cannot have changed the key.
                prop_assert_eq!(parsed.subject_public_key_info(), key.subject_public_key_info());
            }
        }
    }
}
