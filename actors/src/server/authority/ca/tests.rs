//! CA and JWT key building: certificate contents, upstream chaining, failures.

use x509_parser::extensions::GeneralName;
use x509_parser::parse_x509_certificate;

use super::*;
use crate::random::SeededRandom;
use crate::server::authority::test_support::{td, write_upstream, UpstreamCa, T0};
use crate::server::keys::test_keys::RSA_2048_PEM;
use crate::server::keys::MemoryKeyManager;

fn settings(ttl: u64) -> CaSettings {
    CaSettings {
        ttl: Duration::from_secs(ttl),
        ..CaSettings::default()
    }
}

#[test]
fn self_signed_ca_has_spire_shape() {
    let keys = MemoryKeyManager::new();
    let ca = build_ca(&td(), &settings(86_400), &keys, &SeededRandom::new(1), T0).unwrap();
    let r = &ca.record;
    assert_eq!(r.trust_anchors, vec![r.cert_der.clone()]);
    assert!(r.upstream_chain.is_empty());
    assert_eq!((r.not_before, r.not_after), (T0 - 10, T0 + 86_400));
    assert_eq!(keys.key_refs(), vec![r.key_ref.clone()]);
    assert!(r.key_ref.starts_with("x509-ca-"));

    let (_, cert) = parse_x509_certificate(&r.cert_der).unwrap();
    assert_eq!(cert.validity().not_before.timestamp(), T0 - 10);
    assert_eq!(cert.validity().not_after.timestamp(), T0 + 86_400);
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("spiffe://example.org")]
    );
    let subject = cert.subject().to_string();
    assert!(subject.starts_with("C=US, O=SPIFFE, "), "{subject}");
    assert!(subject.contains(&cert.serial.to_string()), "{subject}");
    assert_eq!(cert.raw_serial().len(), 16);
    let ski = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap();
    assert_eq!(hex::encode(ski), r.authority_id);
    assert_eq!(cert.public_key().raw, ca.key.spki_der().as_slice());
}

#[test]
fn p384_and_rsa_cas_are_built() {
    let keys = MemoryKeyManager::new();
    let p384 = CaSettings {
        key_type: KeyType::EcP384,
        ..settings(600)
    };
    let ca = build_ca(&td(), &p384, &keys, &SeededRandom::new(1), T0).unwrap();
    assert_eq!(ca.key.key_type(), KeyType::EcP384);

    let keys = MemoryKeyManager::new();
    let rsa = CaSettings {
        key_type: KeyType::Rsa2048,
        ..settings(600)
    };
    let ca = build_ca(&td(), &rsa, &keys, &SeededRandom::new(1), T0).unwrap();
    assert_eq!(ca.key.key_type(), KeyType::Rsa2048);
    let (_, cert) = x509_parser::parse_x509_certificate(&ca.record.cert_der).unwrap();
    assert_eq!(cert.public_key().raw, ca.key.spki_der().as_slice());
    // Self-signed with the RSA key: sha256WithRSAEncryption.
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11"
    );
    assert_eq!(keys.key_refs().len(), 1);
}

#[test]
fn two_cas_have_distinct_ids_keys_and_subjects() {
    let keys = MemoryKeyManager::new();
    let random = SeededRandom::new(5);
    let a = build_ca(&td(), &settings(600), &keys, &random, T0)
        .unwrap()
        .record;
    let b = build_ca(&td(), &settings(600), &keys, &random, T0)
        .unwrap()
        .record;
    assert_ne!(a.authority_id, b.authority_id);
    assert_ne!(a.key_ref, b.key_ref);
    let subject = |der: &[u8]| parse_x509_certificate(der).unwrap().1.subject().to_string();
    assert_ne!(subject(&a.cert_der), subject(&b.cert_der));
}

#[test]
fn upstream_root_signs_the_ca_and_is_its_trust_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let root = UpstreamCa::root(T0 - 100, T0 + 3600, &rcgen::PKCS_ECDSA_P384_SHA384);
    let upstream = write_upstream(dir.path(), &[&root], &root.key, None);
    let keys = MemoryKeyManager::new();
    let s = CaSettings {
        upstream: Some(upstream),
        ..settings(86_400)
    };
    let ca = build_ca(&td(), &s, &keys, &SeededRandom::new(1), T0).unwrap();
    let r = &ca.record;
    assert_eq!(r.trust_anchors, vec![root.der.clone()]);
    assert!(r.upstream_chain.is_empty(), "the signer is the root itself");
    // Capped at the upstream's expiry.
    assert_eq!(r.not_after, T0 + 3600);
    let (_, cert) = parse_x509_certificate(&r.cert_der).unwrap();
    let (_, root_cert) = parse_x509_certificate(&root.der).unwrap();
    assert_eq!(cert.issuer(), root_cert.subject());
    assert!(cert.verify_signature(Some(root_cert.public_key())).is_ok());
}

#[test]
fn upstream_intermediate_is_carried_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = UpstreamCa::root(T0 - 100, T0 + 86_400 * 30, &rcgen::PKCS_ECDSA_P256_SHA256);
    let mid = root.intermediate(T0 - 100, T0 + 86_400 * 10);
    let upstream = write_upstream(dir.path(), &[&mid, &root], &mid.key, None);
    let keys = MemoryKeyManager::new();
    let s = CaSettings {
        upstream: Some(upstream),
        ..settings(86_400)
    };
    let r = build_ca(&td(), &s, &keys, &SeededRandom::new(1), T0)
        .unwrap()
        .record;
    assert_eq!(r.upstream_chain, vec![mid.der.clone()]);
    assert_eq!(r.trust_anchors, vec![root.der.clone()]);
    assert_eq!(r.not_after, T0 + 86_400);

    // The same with the root in a separate bundle file.
    let upstream = write_upstream(dir.path(), &[&mid], &mid.key, Some(&[&root]));
    let s = CaSettings {
        upstream: Some(upstream),
        ..settings(86_400)
    };
    let r = build_ca(&td(), &s, &keys, &SeededRandom::new(2), T0)
        .unwrap()
        .record;
    assert_eq!(r.upstream_chain, vec![mid.der.clone()]);
    assert_eq!(r.trust_anchors, vec![root.der.clone()]);
}

#[test]
fn an_rsa_upstream_key_can_sign() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = rcgen::KeyPair::from_pem(RSA_2048_PEM).unwrap();
    let root = UpstreamCa::root_with_key(T0 - 100, T0 + 86_400 * 30, rsa);
    let upstream = write_upstream(dir.path(), &[&root], &root.key, None);
    let s = CaSettings {
        upstream: Some(upstream),
        ..settings(86_400)
    };
    let keys = MemoryKeyManager::new();
    let r = build_ca(&td(), &s, &keys, &SeededRandom::new(1), T0)
        .unwrap()
        .record;
    let (_, cert) = parse_x509_certificate(&r.cert_der).unwrap();
    let (_, root_cert) = parse_x509_certificate(&root.der).unwrap();
    assert!(cert.verify_signature(Some(root_cert.public_key())).is_ok());
}

#[test]
fn upstream_problems_are_named_with_their_fix() {
    let dir = tempfile::tempdir().unwrap();
    let root = UpstreamCa::root(T0 - 100, T0 + 3600, &rcgen::PKCS_ECDSA_P256_SHA256);
    let other = UpstreamCa::root(T0 - 100, T0 + 3600, &rcgen::PKCS_ECDSA_P256_SHA256);
    let mid = root.intermediate(T0 - 100, T0 + 3600);
    let expired = UpstreamCa::root(T0 - 7200, T0 - 3600, &rcgen::PKCS_ECDSA_P256_SHA256);
    let keys = MemoryKeyManager::new();
    let fail = |upstream: UpstreamDisk| {
        let s = CaSettings {
            upstream: Some(upstream),
            ..settings(600)
        };
        build_ca(&td(), &s, &keys, &SeededRandom::new(1), T0).unwrap_err()
    };

    let e = fail(write_upstream(dir.path(), &[&root], &other.key, None));
    assert!(
        matches!(e, CaBuildError::Upstream(UpstreamError::KeyMismatch { .. })),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("point key_file_path at that certificate's key"));

    let e = fail(write_upstream(dir.path(), &[&mid], &mid.key, None));
    assert!(
        matches!(e, CaBuildError::Upstream(UpstreamError::NoRoot { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("set bundle_file_path"));

    let e = fail(write_upstream(dir.path(), &[&expired], &expired.key, None));
    assert!(
        matches!(
            e,
            CaBuildError::Upstream(UpstreamError::OutsideValidity { .. })
        ),
        "{e}"
    );

    let mut missing = write_upstream(dir.path(), &[&root], &root.key, None);
    missing.cert_file_path = dir.path().join("nope.crt");
    let e = fail(missing);
    assert!(e.to_string().contains("nope.crt"), "{e}");

    assert!(
        keys.key_refs().is_empty(),
        "no key is left behind by a failed build"
    );
}

#[test]
fn jwt_kids_are_derived_from_the_public_key() {
    let keys = MemoryKeyManager::new();
    // The same seed twice (as after a restart of a seeded run): still distinct keys and kids.
    let a = build_jwt_key(
        Duration::from_secs(600),
        KeyType::EcP256,
        &keys,
        &SeededRandom::new(3),
        T0,
    )
    .unwrap();
    let b = build_jwt_key(
        Duration::from_secs(600),
        KeyType::EcP256,
        &keys,
        &SeededRandom::new(3),
        T0 + 1,
    )
    .unwrap();
    assert_eq!(a.record.kid.len(), 32);
    assert!(a.record.kid.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        a.record.kid,
        hex::encode(&Sha256::digest(a.key.spki_der())[..16])
    );
    assert_ne!(a.record.kid, b.record.kid);
    assert_eq!(a.record.public_key_der, a.key.spki_der());
    assert_eq!(
        (a.record.not_before, a.record.not_after),
        (T0 - 10, T0 + 600)
    );
    assert_eq!(keys.key_refs().len(), 2);
}
