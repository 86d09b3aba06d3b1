//! The `x509pop` attestor: the node proves possession of the private key of a certificate
//! that chains to a CA bundle the server is configured with.
//!
//! 1. The agent sends [`Payload`]: its certificate chain (leaf first).
//! 2. The server checks the chain ([`Verifier::check_chain`]) and sends a random nonce.
//! 3. The agent signs [`challenge_message`]`(nonce)` with the leaf's key (ECDSA with SHA-256
//!    for P-256, SHA-384 for P-384, RSA PKCS#1 v1.5 with SHA-256) and sends the signature.
//! 4. The server verifies it ([`Verifier::verify_response`]).
//!
//! Agent ID: `spiffe://<td>/spire/agent/x509pop/<SHA-1 fingerprint of the leaf, hex>`, as
//! SPIRE's default. Selectors: `x509pop:subject:cn:<CN>`, `x509pop:serialnumber:<hex>`,
//! `x509pop:ca:fingerprint:<SHA-1 hex>` for every certificate above the leaf, root included.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use tessera_identity::{Selector, SelectorSet, SpiffeId, TrustDomain};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{AttestError, AttestedNode};

/// Attestor name.
pub const NAME: &str = "x509pop";
/// Most certificates accepted in the chain.
pub const MAX_CHAIN_LEN: usize = 8;
/// Largest payload accepted, bytes.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;
/// Nonce length.
pub const NONCE_LEN: usize = 32;

/// What the agent sends first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The chain, leaf first, base64 (standard) DER.
    pub certificates: Vec<String>,
}

impl Payload {
    /// A payload for `chain` (leaf first, DER).
    pub fn new(chain: &[Vec<u8>]) -> Self {
        Payload {
            certificates: chain
                .iter()
                .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
                .collect(),
        }
    }

    /// JSON bytes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The bytes the agent signs: a domain tag and the nonce, so the signature cannot be replayed
/// as anything else.
pub fn challenge_message(nonce: &[u8]) -> Vec<u8> {
    let mut m = b"tessera x509pop challenge v1\0".to_vec();
    m.extend_from_slice(nonce);
    m
}

/// A chain that passed: what remains is the proof of possession.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node it would attest.
    pub node: AttestedNode,
    spki_algorithm: KeyAlg,
    public_key: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyAlg {
    EcP256,
    EcP384,
    Rsa,
}

/// The server side, with the CA bundle node certificates must chain to.
#[derive(Clone, Debug)]
pub struct Verifier {
    trust_domain: TrustDomain,
    roots: Vec<Vec<u8>>,
}

fn malformed(reason: impl Into<String>) -> AttestError {
    AttestError::Malformed {
        attestor: NAME,
        reason: reason.into(),
    }
}

fn refused(reason: impl Into<String>) -> AttestError {
    AttestError::Refused {
        attestor: NAME,
        reason: reason.into(),
    }
}

fn sha1_hex(der: &[u8]) -> String {
    hex::encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, der))
}

impl Verifier {
    /// A verifier trusting the CA certificates in `roots_pem` (the `ca_bundle_path` file).
    pub fn from_pem(trust_domain: TrustDomain, roots_pem: &str) -> Result<Self, String> {
        let roots: Vec<Vec<u8>> = pem::parse_many(roots_pem)
            .map_err(|e| format!("x509pop CA bundle is not PEM: {e}"))?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(|p| p.into_contents())
            .collect();
        if roots.is_empty() {
            return Err("x509pop CA bundle holds no CERTIFICATE block".into());
        }
        for (i, der) in roots.iter().enumerate() {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .map_err(|e| format!("x509pop CA bundle certificate #{i}: {e}"))?;
        }
        Ok(Self {
            trust_domain,
            roots,
        })
    }

    /// Checks the chain in `payload` against the CA bundle at `now`.
    pub fn check_chain(&self, payload: &[u8], now: SystemTime) -> Result<Candidate, AttestError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(malformed(format!(
                "payload of {} bytes exceeds {MAX_PAYLOAD_LEN}",
                payload.len()
            )));
        }
        let payload: Payload = serde_json::from_slice(payload)
            .map_err(|e| malformed(format!("payload is not x509pop JSON: {e}")))?;
        if payload.certificates.is_empty() || payload.certificates.len() > MAX_CHAIN_LEN {
            return Err(malformed(format!(
                "{} certificates; 1..={MAX_CHAIN_LEN} expected",
                payload.certificates.len()
            )));
        }
        let chain: Vec<Vec<u8>> = payload
            .certificates
            .iter()
            .enumerate()
            .map(|(i, b64)| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| malformed(format!("certificate #{i} is not base64: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let (leaf_der, intermediates) = chain
            .split_first()
            .ok_or_else(|| malformed("empty chain"))?;

        let anchor_ders: Vec<CertificateDer<'_>> = self
            .roots
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let anchors: Vec<_> = anchor_ders
            .iter()
            .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
            .collect();
        let inter: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let leaf_cert = CertificateDer::from(leaf_der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&leaf_cert)
            .map_err(|e| malformed(format!("leaf certificate: {e}")))?;
        let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &inter,
                time,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| {
                refused(format!(
                    "certificate chain does not verify to the configured CA bundle: {e}"
                ))
            })?;

        let (_, leaf) = X509Certificate::from_der(leaf_der)
            .map_err(|e| malformed(format!("leaf certificate: {e}")))?;
        let mut selectors = SelectorSet::new();
        let mut add = |kind: &str, value: String| -> Result<(), AttestError> {
            let s = Selector::new(NAME, &format!("{kind}:{value}"))
                .map_err(|e| malformed(e.to_string()))?;
            selectors.insert(s);
            Ok(())
        };
        if let Some(cn) = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            add("subject:cn", cn.to_owned())?;
        }
        add("serialnumber", leaf.raw_serial_as_string().replace(':', ""))?;
        for der in intermediates {
            add("ca:fingerprint", sha1_hex(der))?;
        }
        let root = self.anchor_fingerprint(path.anchor());
        if !root.is_empty() {
            add("ca:fingerprint", root)?;
        }

        let spki = leaf.public_key();
        let alg = match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.10045.2.1" => match spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .as_deref()
            {
                Some("1.2.840.10045.3.1.7") => KeyAlg::EcP256,
                Some("1.3.132.0.34") => KeyAlg::EcP384,
                other => {
                    return Err(refused(format!(
                        "unsupported EC curve {other:?}; use P-256 or P-384"
                    )))
                }
            },
            "1.2.840.113549.1.1.1" => KeyAlg::Rsa,
            other => {
                return Err(refused(format!(
                    "unsupported key algorithm {other}; use EC P-256/P-384 or RSA"
                )))
            }
        };
        let agent_id = SpiffeId::from_path(
            &self.trust_domain,
            &format!("/spire/agent/{NAME}/{}", sha1_hex(leaf_der)),
        )
        .map_err(|e| malformed(e.to_string()))?;
        Ok(Candidate {
            node: AttestedNode {
                agent_id,
                selectors,
                can_reattest: true,
            },
            spki_algorithm: alg,
            public_key: spki.subject_public_key.data.to_vec(),
        })
    }

    fn anchor_fingerprint(&self, anchor: &rustls_pki_types::TrustAnchor<'_>) -> String {
        // Find the configured root this anchor came from, to fingerprint its full DER.
        self.roots
            .iter()
            .find(|der| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                    .map(|a| {
                        a.subject == anchor.subject
                            && a.subject_public_key_info == anchor.subject_public_key_info
                    })
                    .unwrap_or(false)
            })
            .map(|der| sha1_hex(der))
            .unwrap_or_default()
    }

    /// Verifies the agent's signature over the challenge.
    pub fn verify_response(
        &self,
        candidate: &Candidate,
        nonce: &[u8],
        signature: &[u8],
    ) -> Result<AttestedNode, AttestError> {
        let alg: &dyn ring::signature::VerificationAlgorithm = match candidate.spki_algorithm {
            KeyAlg::EcP256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
            KeyAlg::EcP384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
            KeyAlg::Rsa => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        };
        ring::signature::UnparsedPublicKey::new(alg, &candidate.public_key)
            .verify(&challenge_message(nonce), signature)
            .map_err(|_| {
                refused("the challenge signature does not verify with the certificate's key")
            })?;
        Ok(candidate.node.clone())
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    use super::*;

    struct Pki {
        root_pem: String,
        chain: Vec<Vec<u8>>,
        key: KeyPair,
    }

    fn pki(cn: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name.push(DnType::CommonName, "node CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, cn);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf_cert = leaf.signed_by(&key, &issuer).unwrap();
        Pki {
            root_pem: ca_cert.pem(),
            chain: vec![leaf_cert.der().to_vec()],
            key,
        }
    }

    fn sign(key: &KeyPair, nonce: &[u8]) -> Vec<u8> {
        let rng = ring::rand::SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der(), &rng)
                .unwrap();
        pair.sign(&rng, &challenge_message(nonce))
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn now() -> SystemTime {
        // rcgen's default validity covers the present; the test runs at the real date.
        #[allow(clippy::disallowed_methods)]
        SystemTime::now()
    }

    #[test]
    fn possession_of_a_chained_key_attests_with_spire_style_id_and_selectors() {
        let p = pki("node-1.example.org");
        let v = Verifier::from_pem(td(), &p.root_pem).unwrap();
        let candidate = v
            .check_chain(&Payload::new(&p.chain).to_bytes(), now())
            .unwrap();
        let nonce = [7u8; NONCE_LEN];
        let node = v
            .verify_response(&candidate, &nonce, &sign(&p.key, &nonce))
            .unwrap();
        assert_eq!(
            node.agent_id.to_string(),
            format!(
                "spiffe://example.org/spire/agent/x509pop/{}",
                sha1_hex(&p.chain[0])
            )
        );
        let selectors: Vec<String> = node.selectors.iter().map(|s| s.to_string()).collect();
        assert!(
            selectors.contains(&"x509pop:subject:cn:node-1.example.org".to_string()),
            "{selectors:?}"
        );
        assert!(
            selectors
                .iter()
                .any(|s| s.starts_with("x509pop:ca:fingerprint:")),
            "{selectors:?}"
        );
        assert!(
            selectors
                .iter()
                .any(|s| s.starts_with("x509pop:serialnumber:")),
            "{selectors:?}"
        );
        assert!(node.can_reattest);
    }

    #[test]
    fn wrong_key_wrong_nonce_and_foreign_ca_are_refused() {
        let p = pki("node-1");
        let other = pki("node-2");
        let v = Verifier::from_pem(td(), &p.root_pem).unwrap();
        let candidate = v
            .check_chain(&Payload::new(&p.chain).to_bytes(), now())
            .unwrap();
        let nonce = [1u8; NONCE_LEN];
        assert!(v
            .verify_response(&candidate, &nonce, &sign(&other.key, &nonce))
            .is_err());
        assert!(v
            .verify_response(&candidate, &[2u8; NONCE_LEN], &sign(&p.key, &nonce))
            .is_err());
        let err = v
            .check_chain(&Payload::new(&other.chain).to_bytes(), now())
            .unwrap_err();
        assert!(matches!(err, AttestError::Refused { .. }), "{err}");
    }

    #[test]
    fn malformed_payloads_are_typed_errors_not_panics() {
        let p = pki("n");
        let v = Verifier::from_pem(td(), &p.root_pem).unwrap();
        for bad in [
            &b""[..],
            b"{}",
            b"{\"certificates\":[]}",
            b"{\"certificates\":[\"!!\"]}",
            b"{\"certificates\":[\"AAAA\"]}",
            &[0xff; 10],
        ] {
            assert!(v.check_chain(bad, now()).is_err(), "{bad:?}");
        }
        assert!(v
            .check_chain(&vec![b' '; MAX_PAYLOAD_LEN + 1], now())
            .is_err());
        assert!(Verifier::from_pem(td(), "not pem").is_err());
    }
}
