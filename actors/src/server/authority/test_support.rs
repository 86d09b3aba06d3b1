//! Test fixtures of the authority: trust domain, times, CAs built for real, CSRs, upstream CA
//! files, and independent checks of what the authority signs (X.509 via
//! `tessera_identity::verify_x509_svid`, JWT via ring directly).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use tessera_eventlog::ManualClock;
use tessera_identity::{
    verify_x509_svid, Bundle, EcCurve, PublicKey, SpiffeId, SvidError, TrustDomain,
    VerifiedX509Svid,
};

use super::ca::{build_ca, build_jwt_key, CaSettings, PreparedCa, PreparedJwtKey};
use super::signer::{Signer, SignerSettings, SigningCa, SigningJwtKey};
use super::upstream::UpstreamDisk;
use super::Authority;
use crate::random::SeededRandom;
use crate::server::aggregate::Aggregate;
use crate::server::events::ServerEvent;
use crate::server::keys::{KeyType, MemoryKeyManager};

/// 2030-03-17T17:46:40Z.
pub(crate) const T0: i64 = 1_900_000_000;

pub(crate) fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

pub(crate) fn clock_at(secs: i64) -> ManualClock {
    ManualClock::at_unix_secs(u64::try_from(secs).unwrap())
}

/// A self-signed CA built by the authority's own code, at `now`, lifetime `ttl_secs`.
pub(crate) fn ca_at(keys: &MemoryKeyManager, seed: u64, now: i64, ttl_secs: u64) -> PreparedCa {
    let settings = CaSettings {
        ttl: Duration::from_secs(ttl_secs),
        ..CaSettings::default()
    };
    build_ca(&td(), &settings, keys, &SeededRandom::new(seed), now).unwrap()
}

static NEXT_SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);

/// A JWT key built by the authority's own code.
pub(crate) fn jwt_key_at(
    keys: &MemoryKeyManager,
    key_type: KeyType,
    now: i64,
    ttl_secs: u64,
) -> PreparedJwtKey {
    build_jwt_key(
        Duration::from_secs(ttl_secs),
        key_type,
        keys,
        &SeededRandom::new(NEXT_SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        now,
    )
    .unwrap()
}

/// An aggregate that has folded `events`, configured for example.org.
pub(crate) fn given(events: &[ServerEvent]) -> Authority {
    let mut a = Authority::default();
    a.configure(td());
    for e in events {
        a.apply(e);
    }
    a
}

/// A signer with `ca` (and `jwt`, if any) installed.
pub(crate) fn signer_with(
    clock: &ManualClock,
    settings: SignerSettings,
    ca: Option<&PreparedCa>,
    jwt: Option<&PreparedJwtKey>,
) -> Signer {
    let signer = Signer::new(
        td(),
        settings,
        Arc::new(clock.clone()),
        Arc::new(SeededRandom::new(99)),
    );
    signer.install_ca(ca.map(|c| SigningCa::new(c.record.clone(), c.key.clone())));
    signer.install_jwt_key(jwt.map(|k| SigningJwtKey::new(k.record.clone(), k.key.clone())));
    signer
}

/// A P-256 CSR (its subject and SANs are junk the authority must ignore).
pub(crate) fn csr() -> Vec<u8> {
    csr_with(&KeyPair::generate().unwrap())
}

pub(crate) fn csr_with(key: &KeyPair) -> Vec<u8> {
    let mut params = CertificateParams::new(vec!["evil.example.com".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://evil.org/admin".try_into().unwrap(),
    ));
    params.serialize_request(key).unwrap().der().to_vec()
}

/// Verifies an X.509-SVID chain against `bundle` at `now` (Unix seconds).
pub(crate) fn verify(
    chain: &[Vec<u8>],
    bundle: &Bundle,
    now: i64,
) -> Result<VerifiedX509Svid, SvidError> {
    verify_x509_svid(
        chain,
        bundle,
        UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap()),
    )
}

/// Checks a JWT's signature against the bundle key named by its `kid`; returns header and
/// claims.
pub(crate) fn verify_jwt(
    token: &str,
    bundle: &Bundle,
) -> Result<(serde_json::Value, serde_json::Value), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err("not three parts".into());
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string());
    let header: serde_json::Value =
        serde_json::from_slice(&decode(h)?).map_err(|e| e.to_string())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(c)?).map_err(|e| e.to_string())?;
    let sig = decode(s)?;
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let authority = bundle.jwt_authority(kid).ok_or("kid not in bundle")?;
    let input = format!("{h}.{c}");
    let ok = match (&authority.public_key, header["alg"].as_str()) {
        (PublicKey::Ec { curve, x, y }, Some(alg)) => {
            let verifier: &dyn signature::VerificationAlgorithm = match (curve, alg) {
                (EcCurve::P256, "ES256") => &signature::ECDSA_P256_SHA256_FIXED,
                (EcCurve::P384, "ES384") => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return Err(format!("alg {alg} does not fit {curve:?}")),
            };
            let point = [&[0x04][..], x, y].concat();
            UnparsedPublicKey::new(verifier, point)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        }
        (PublicKey::Rsa { n, e }, Some("RS256")) => RsaPublicKeyComponents { n, e }
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                input.as_bytes(),
                &sig,
            )
            .is_ok(),
        _ => return Err("unexpected key or alg".into()),
    };
    if ok {
        Ok((header, claims))
    } else {
        Err("bad signature".into())
    }
}

/// An upstream CA made with rcgen (independent of the authority's own CA code).
pub(crate) struct UpstreamCa {
    pub(crate) params: CertificateParams,
    pub(crate) key: KeyPair,
    pub(crate) der: Vec<u8>,
}

impl UpstreamCa {
    /// A self-signed root valid `[nb, na]`, with a key of `alg`.
    pub(crate) fn root(nb: i64, na: i64, alg: &'static rcgen::SignatureAlgorithm) -> Self {
        let key = KeyPair::generate_for(alg).unwrap();
        let params = Self::params("Upstream Root", nb, na);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { params, key, der }
    }

    /// A root whose key is given (e.g. an imported RSA key).
    pub(crate) fn root_with_key(nb: i64, na: i64, key: KeyPair) -> Self {
        let params = Self::params("Upstream Root", nb, na);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { params, key, der }
    }

    /// An intermediate CA signed by this one.
    pub(crate) fn intermediate(&self, nb: i64, na: i64) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = Self::params("Upstream Intermediate", nb, na);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        Self { params, key, der }
    }

    fn params(cn: &str, nb: i64, na: i64) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        super::x509::set_validity(&mut p, nb, na);
        p
    }

    pub(crate) fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

/// Writes `certs` (PEM, in order) and `key` as an UpstreamAuthority "disk" configuration.
pub(crate) fn write_upstream(
    dir: &Path,
    certs: &[&UpstreamCa],
    key: &KeyPair,
    bundle: Option<&[&UpstreamCa]>,
) -> UpstreamDisk {
    let cert_file_path = dir.join("upstream.crt");
    let key_file_path = dir.join("upstream.key");
    std::fs::write(
        &cert_file_path,
        certs.iter().map(|c| c.pem()).collect::<String>(),
    )
    .unwrap();
    std::fs::write(&key_file_path, key.serialize_pem()).unwrap();
    let bundle_file_path = bundle.map(|roots| {
        let path = dir.join("upstream-bundle.crt");
        std::fs::write(&path, roots.iter().map(|c| c.pem()).collect::<String>()).unwrap();
        path
    });
    UpstreamDisk {
        cert_file_path,
        key_file_path,
        bundle_file_path,
    }
}
