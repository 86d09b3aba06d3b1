//! The SPIFFE checks of [`super::verify_peer`] on certificates made here: the peer's own trust
//! domain decides which bundle applies; unknown domains, other CAs, expired leaves and
//! certificates without a SPIFFE ID are refused, each naming the peer.

use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use webpki::KeyUsage;

use super::{cert_info, verify_peer, PeerError};
use crate::material::{Material, TrustMap};

/// 2026-01-01, inside the default validity of rcgen certificates.
fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_767_225_600))
}

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap().der().clone();
    Ca {
        cert,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf for `uri` (none: no URI SAN), signed by `ca`; `expired`: valid only in 2000.
fn leaf(ca: &Ca, uri: Option<&str>, expired: bool) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    if let Some(uri) = uri {
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if expired {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2000, 12, 31);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap().der().clone();
    (cert, key)
}

fn trusting(domains: &[(&str, &Ca)]) -> std::sync::Arc<Material> {
    let material = Material::new();
    let mut trust = TrustMap::new();
    for (td, ca) in domains {
        trust.insert((*td).to_owned(), vec![ca.cert.clone()]);
    }
    material.set_trust(trust);
    material
}

fn check(material: &Material, cert: &CertificateDer<'_>) -> Result<super::CertInfo, PeerError> {
    let provider = crate::provider();
    verify_peer(
        material,
        &provider,
        cert,
        &[],
        now(),
        KeyUsage::client_auth(),
    )
}

#[test]
fn a_peer_is_checked_against_the_bundle_of_its_own_trust_domain() {
    let (platform, partner) = (ca(), ca());
    let material = trusting(&[
        ("platform.example", &platform),
        ("partner.example", &partner),
    ]);
    let (cert, _) = leaf(&partner, Some("spiffe://partner.example/caller"), false);
    let info = check(&material, &cert).unwrap();
    assert_eq!(
        info.spiffe_id.as_deref(),
        Some("spiffe://partner.example/caller")
    );
    assert_eq!(info, cert_info(&cert).unwrap());
    assert!(!info.serial.is_empty());

    // The same leaf claimed under the platform's bundle does not verify: the partner's CA is
    // not the platform's.
    let material = trusting(&[("partner.example", &platform)]);
    let err = check(&material, &cert).unwrap_err();
    assert!(matches!(err, PeerError::Untrusted { .. }), "{err}");
    assert!(
        err.to_string().contains("spiffe://partner.example/caller"),
        "{err}"
    );
}

#[test]
fn an_unfederated_trust_domain_is_refused_naming_the_fix() {
    let partner = ca();
    let material = trusting(&[]);
    let (cert, _) = leaf(&partner, Some("spiffe://partner.example/caller"), false);
    let err = check(&material, &cert).unwrap_err().to_string();
    assert!(
        err.contains("no bundle for trust domain partner.example"),
        "{err}"
    );
    assert!(
        err.contains("--federatesWith spiffe://partner.example"),
        "{err}"
    );
}

#[test]
fn an_expired_svid_is_refused_as_expired() {
    let platform = ca();
    let material = trusting(&[("platform.example", &platform)]);
    let (cert, _) = leaf(&platform, Some("spiffe://platform.example/device"), true);
    let err = check(&material, &cert).unwrap_err();
    let PeerError::Expired { id, ago, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(id, "spiffe://platform.example/device");
    assert!(*ago > 365 * 24 * 3600, "{err}");
}

#[test]
fn a_certificate_without_a_spiffe_id_is_not_an_svid() {
    let platform = ca();
    let material = trusting(&[("platform.example", &platform)]);
    let (cert, _) = leaf(&platform, None, false);
    assert!(matches!(
        check(&material, &cert),
        Err(PeerError::NotSvid(_))
    ));
    let (cert, _) = leaf(&platform, Some("https://platform.example/"), false);
    assert!(matches!(
        check(&material, &cert),
        Err(PeerError::NotSvid(_))
    ));
}

#[test]
fn material_takes_an_svid_and_a_withdrawal_hides_it_unless_kept() {
    let platform = ca();
    let (cert, key) = leaf(&platform, Some("spiffe://platform.example/w"), false);
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    for keep in [false, true] {
        let material = if keep {
            Material::keeping_withdrawn()
        } else {
            Material::new()
        };
        let changes = material.subscribe();
        material.set_identity(vec![cert.clone()], key()).unwrap();
        assert!(changes.has_changed().unwrap());
        let id = material.identity().unwrap();
        assert_eq!(id.spiffe_id, "spiffe://platform.example/w");
        assert_eq!(id.serial, cert_info(&cert).unwrap().serial);
        material.withdraw();
        assert!(material.is_withdrawn());
        assert_eq!(material.identity().is_some(), keep);
        assert!(material.last_identity().is_some());
    }
    let (no_id, key2) = leaf(&platform, None, false);
    let key2 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key2.serialize_der()));
    let err = Material::new().set_identity(vec![no_id], key2).unwrap_err();
    assert!(err.to_string().contains("no spiffe:// URI SAN"), "{err}");
}
