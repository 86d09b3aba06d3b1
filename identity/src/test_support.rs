//! Test-only certificate factory (rcgen): SPIFFE CAs, intermediates and leaf SVIDs, shared by
//! the bundle and SVID tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm,
};

use crate::bundle::X509Authority;

/// 2030-01-01T00:00:00Z: inside the default validity of every certificate made here.
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

/// A URI SAN.
pub(crate) fn uri(u: &str) -> SanType {
    SanType::URI(Ia5String::try_from(u).unwrap())
}

/// Parameters of a SPIFFE signing certificate for `td`: CA, keyCertSign + cRLSign, URI SAN
/// `spiffe://td`.
pub(crate) fn ca_params(td: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names = vec![uri(&format!("spiffe://{td}"))];
    p
}

/// Parameters of a leaf X.509-SVID for `id`: not a CA, digitalSignature, serverAuth +
/// clientAuth, one URI SAN.
pub(crate) fn leaf_params(id: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.subject_alt_names = vec![uri(id)];
    p
}

/// A certificate authority: its parameters, key and DER certificate.
pub(crate) struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// The CA's certificate.
    pub(crate) der: Vec<u8>,
}

impl Ca {
    /// A self-signed P-256 root for `td`.
    pub(crate) fn root(td: &str) -> Self {
        Self::self_signed(ca_params(td))
    }

    /// A self-signed P-256 CA with the given parameters.
    pub(crate) fn self_signed(params: CertificateParams) -> Self {
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { params, key, der }
    }

    /// A P-256 intermediate CA with `params`, signed by this CA.
    pub(crate) fn intermediate(&self, params: CertificateParams) -> Ca {
        let key = KeyPair::generate().unwrap();
        let der = self.sign_key(&params, &key);
        Ca { params, key, der }
    }

    /// A certificate with `params` for a fresh P-256 key, signed by this CA.
    pub(crate) fn sign(&self, params: &CertificateParams) -> Vec<u8> {
        self.sign_key(params, &KeyPair::generate().unwrap())
    }

    /// A certificate with `params` for the public key `key`, signed by this CA.
    pub(crate) fn sign_key(&self, params: &CertificateParams, key: &impl PublicKeyData) -> Vec<u8> {
        let issuer = Issuer::from_params(&self.params, &self.key);
        params.signed_by(key, &issuer).unwrap().der().to_vec()
    }

    /// This CA's certificate as a bundle authority.
    pub(crate) fn authority(&self) -> X509Authority {
        X509Authority::from_der(self.der.clone()).unwrap()
    }
}

/// A self-signed CA certificate with a fresh key of `alg` (an ECDSA algorithm).
pub(crate) fn ca_cert_with(alg: &'static SignatureAlgorithm, td: &str) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    ca_params(td).self_signed(&key).unwrap().der().to_vec()
}

/// The public half of an RSA key, for certificates whose subject key is RSA (ring cannot
/// generate RSA keys; a certificate only needs the public half, and tests only parse it).
pub(crate) struct RsaPublic {
    /// DER `RSAPublicKey { n, e }`.
    pub(crate) pkcs1: Vec<u8>,
}

impl PublicKeyData for RsaPublic {
    fn der_bytes(&self) -> &[u8] {
        &self.pkcs1
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}
