//! Tests of [`Bundle`](super::Bundle): building, JWKS and PEM forms, serde, lookup.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::*;
use crate::test_support::{ca_cert_with, ca_params, Ca, RsaPublic};

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn ec_key(fill: u8) -> PublicKey {
    PublicKey::ec(EcCurve::P256, vec![fill; 32], vec![fill ^ 0xff; 32]).unwrap()
}

fn jwt(kid: &str, fill: u8) -> JwtAuthority {
    JwtAuthority {
        key_id: kid.into(),
        public_key: ec_key(fill),
        expires_at: None,
    }
}

fn rsa_key() -> PublicKey {
    let mut n = vec![0xb5; 256];
    n[255] = 0x0b;
    PublicKey::rsa(&n, &[1, 0, 1]).unwrap()
}

/// A CA certificate whose subject key is `rsa_key()` (signed by a throwaway EC root).
fn rsa_ca_cert() -> X509Authority {
    let PublicKey::Rsa { n, e } = rsa_key() else {
        unreachable!()
    };
    let pkcs1 = der::sequence(&[&der::unsigned_integer(&n), &der::unsigned_integer(&e)]);
    let der = Ca::root("example.org").sign_key(&ca_params("example.org"), &RsaPublic { pkcs1 });
    X509Authority::from_der(der).unwrap()
}

fn full_bundle() -> Bundle {
    let mut b = Bundle::new(td("example.org"));
    assert!(b.add_x509_authority(Ca::root("example.org").authority()));
    b.add_x509_authority(
        X509Authority::from_der(ca_cert_with(&rcgen::PKCS_ECDSA_P384_SHA384, "example.org"))
            .unwrap(),
    );
    b.add_x509_authority(rsa_ca_cert());
    b.add_jwt_authority(jwt("k1", 1)).unwrap();
    b.add_jwt_authority(JwtAuthority {
        key_id: "k-rsa".into(),
        public_key: rsa_key(),
        expires_at: None,
    })
    .unwrap();
    b.set_sequence_number(7);
    b.set_refresh_hint(Some(300));
    b
}

fn decode(doc: &Value) -> Result<Bundle, BundleError> {
    Bundle::from_jwks(td("example.org"), doc.to_string().as_bytes())
}

fn jwk_error(doc: &Value) -> JwkError {
    match decode(doc) {
        Err(BundleError::Jwk { error, .. }) => error,
        other => panic!("expected a JWK error, got {other:?}"),
    }
}

#[test]
fn authorities_are_deduplicated_and_removable() {
    let ca = Ca::root("example.org");
    let mut b = Bundle::new(td("example.org"));
    assert!(b.is_empty());
    assert!(b.add_x509_authority(ca.authority()));
    assert!(!b.add_x509_authority(ca.authority()));
    assert_eq!(b.x509_authorities().len(), 1);
    assert!(b.remove_x509_authority(&ca.der));
    assert!(!b.remove_x509_authority(&ca.der));

    b.add_jwt_authority(jwt("k1", 1)).unwrap();
    b.add_jwt_authority(jwt("k1", 1)).unwrap(); // identical: no-op
    assert_eq!(b.jwt_authorities().len(), 1);
    assert!(matches!(
        b.add_jwt_authority(jwt("k1", 2)),
        Err(KeyIdError::Duplicate { .. })
    ));
    assert_eq!(b.add_jwt_authority(jwt("", 2)), Err(KeyIdError::Empty));
    assert_eq!(b.jwt_authority("k1"), Some(&jwt("k1", 1)));
    assert_eq!(b.remove_jwt_authority("k1"), Some(jwt("k1", 1)));
    assert_eq!(b.remove_jwt_authority("k1"), None);
}

#[test]
fn jwks_round_trips() {
    let b = full_bundle();
    let doc = b.to_jwks().unwrap();
    assert_eq!(Bundle::from_jwks(td("example.org"), doc.as_bytes()), Ok(b));
}

#[test]
fn jwks_has_the_standard_shape() {
    let b = full_bundle();
    let doc: Value = serde_json::from_str(&b.to_jwks().unwrap()).unwrap();
    assert_eq!(doc["spiffe_sequence"], 7);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 5);

    let x509: Vec<&Value> = keys.iter().filter(|k| k["use"] == "x509-svid").collect();
    assert_eq!(x509.len(), 3);
    for k in &x509 {
        assert!(
            k.get("kid").is_none(),
            "x509-svid keys must not carry a kid: {k}"
        );
        assert_eq!(k["x5c"].as_array().unwrap().len(), 1);
    }
    assert_eq!(x509[0]["kty"], "EC");
    assert_eq!(x509[0]["crv"], "P-256");
    assert_eq!(x509[1]["crv"], "P-384");
    assert_eq!(x509[2]["kty"], "RSA");
    assert_eq!(x509[2]["e"], "AQAB");
    // x5c is standard base64 of the DER.
    let der =
        base64::Engine::decode(&encoding::B64STD, x509[0]["x5c"][0].as_str().unwrap()).unwrap();
    assert_eq!(der, b.x509_authorities()[0].der());

    let jwt_keys: Vec<&Value> = keys.iter().filter(|k| k["use"] == "jwt-svid").collect();
    assert_eq!(jwt_keys[0]["kid"], "k1");
    assert_eq!(jwt_keys[0]["kty"], "EC");
    assert_eq!(jwt_keys[0]["x"].as_str().unwrap().len(), 43); // 32 bytes, unpadded base64url
    assert_eq!(jwt_keys[1]["kty"], "RSA");

    let mut no_hint = full_bundle();
    no_hint.set_refresh_hint(None);
    let doc: Value = serde_json::from_str(&no_hint.to_jwks().unwrap()).unwrap();
    assert!(doc.get("spiffe_refresh_hint").is_none());
}

#[test]
fn unsupported_authority_keys_cannot_be_published() {
    let mut b = Bundle::new(td("example.org"));
    b.add_x509_authority(
        X509Authority::from_der(ca_cert_with(&rcgen::PKCS_ED25519, "example.org")).unwrap(),
    );
    assert!(matches!(
        b.to_jwks(),
        Err(BundleError::AuthorityKey(
            KeyError::UnsupportedAlgorithm { .. }
        ))
    ));
}

#[test]
fn decoding_ignores_unknown_uses_and_key_types() {
    let doc = json!({
        "keys": [
            {"use": "sig", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "no-use"},
            {"use": "x509-svid", "kty": "OKP", "crv": "Ed25519", "x5c": ["AAAA"]},
            {"use": "jwt-svid", "kty": "oct", "kid": "k", "k": "c2VjcmV0"},
            {"use": "JWT-SVID", "kty": "EC", "kid": "case-matters"},
        ],
        "extra_member": true
    });
    let b = decode(&doc).unwrap();
    assert!(b.is_empty());
    assert_eq!(b.sequence_number(), 0);
    assert_eq!(b.refresh_hint(), None);
}

#[test]
fn x509_key_params_are_optional_but_must_match() {
    let ca = Ca::root("example.org");
    let x5c = base64::Engine::encode(&encoding::B64STD, &ca.der);
    let bare = json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": [x5c]}]});
    assert_eq!(decode(&bare).unwrap().x509_authorities(), &[ca.authority()]);

    let PublicKey::Ec { x, y, .. } = ec_key(9) else {
        unreachable!()
    };
    let mismatched = json!({"keys": [{
        "use": "x509-svid", "kty": "EC", "crv": "P-256", "x5c": [x5c],
        "x": base64::Engine::encode(&encoding::B64URL, x),
        "y": base64::Engine::encode(&encoding::B64URL, y),
    }]});
    assert_eq!(jwk_error(&mismatched), JwkError::KeyMismatch);
    let wrong_kty = json!({"keys": [{"use": "x509-svid", "kty": "RSA", "x5c": [x5c]}]});
    assert_eq!(jwk_error(&wrong_kty), JwkError::KeyMismatch);
}

#[test]
fn decoding_rejects_malformed_documents() {
    let dec = |s: &[u8]| Bundle::from_jwks(td("example.org"), s);
    assert!(matches!(dec(b"{"), Err(BundleError::InvalidJson { .. })));
    assert!(matches!(
        dec(b"\xff\xfe"),
        Err(BundleError::InvalidJson { .. })
    ));
    assert_eq!(dec(b"[]"), Err(BundleError::NotAnObject));
    assert_eq!(dec(b"{}"), Err(BundleError::MissingKeys));
    assert_eq!(dec(br#"{"keys": {}}"#), Err(BundleError::MissingKeys));
    assert_eq!(
        dec(br#"{"keys": [], "spiffe_sequence": -1}"#),
        Err(BundleError::InvalidNumber {
            field: "spiffe_sequence"
        })
    );
    assert_eq!(
        dec(br#"{"keys": [], "spiffe_refresh_hint": "300"}"#),
        Err(BundleError::InvalidNumber {
            field: "spiffe_refresh_hint"
        })
    );
    assert!(matches!(
        dec(br#"{"keys": [1]}"#),
        Err(BundleError::Jwk {
            index: 0,
            error: JwkError::NotAnObject
        })
    ));
    let ok =
        dec(br#"{"keys": [], "spiffe_sequence": 18446744073709551615, "spiffe_refresh_hint": 60}"#)
            .unwrap();
    assert_eq!(ok.sequence_number(), u64::MAX);
    assert_eq!(ok.refresh_hint(), Some(60));
}

#[test]
fn decoding_rejects_malformed_x509_keys() {
    let ca = Ca::root("example.org");
    let x5c = base64::Engine::encode(&encoding::B64STD, &ca.der);
    let key = |extra: Value| {
        let mut k = json!({"use": "x509-svid", "kty": "EC"});
        k.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"keys": [k]})
    };
    assert_eq!(jwk_error(&key(json!({}))), JwkError::X5cCount { count: 0 });
    assert_eq!(
        jwk_error(&key(json!({"x5c": []}))),
        JwkError::X5cCount { count: 0 }
    );
    assert_eq!(
        jwk_error(&key(json!({"x5c": [x5c, x5c]}))),
        JwkError::X5cCount { count: 2 }
    );
    assert_eq!(
        jwk_error(&key(json!({"x5c": "abc"}))),
        JwkError::MissingParam { param: "x5c" }
    );
    assert!(matches!(
        jwk_error(&key(json!({"x5c": ["@@@"]}))),
        JwkError::BadBase64 { param: "x5c", .. }
    ));
    assert!(matches!(
        jwk_error(&key(json!({"x5c": ["AAAA"]}))),
        JwkError::InvalidCertificate { .. }
    ));
    assert_eq!(
        jwk_error(&json!({"keys": [{"use": "x509-svid", "x5c": [x5c]}]})),
        JwkError::MissingParam { param: "kty" }
    );
}

#[test]
fn decoding_rejects_malformed_jwt_keys() {
    let x = base64::Engine::encode(&encoding::B64URL, [1u8; 32]);
    let jwt_key = |v: Value| json!({"keys": [v]});
    assert_eq!(
        jwk_error(&jwt_key(
            json!({"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": x, "y": x})
        )),
        JwkError::MissingParam { param: "kid" }
    );
    assert_eq!(
        jwk_error(&jwt_key(
            json!({"use": "jwt-svid", "kty": "EC", "kid": "", "crv": "P-256", "x": x, "y": x})
        )),
        JwkError::KeyId(KeyIdError::Empty)
    );
    assert!(matches!(
        jwk_error(&jwt_key(
            json!({"use": "jwt-svid", "kty": "EC", "kid": "k", "crv": "secp256k1", "x": x, "y": x})
        )),
        JwkError::UnsupportedCurve { .. }
    ));
    assert!(matches!(
        jwk_error(&jwt_key(
            json!({"use": "jwt-svid", "kty": "EC", "kid": "k", "crv": "P-384", "x": x, "y": x})
        )),
        JwkError::Key(KeyError::BadCoordinateLength { .. })
    ));
    assert_eq!(
        jwk_error(&jwt_key(
            json!({"use": "jwt-svid", "kty": "EC", "kid": "k", "crv": "P-256", "x": x})
        )),
        JwkError::MissingParam { param: "y" }
    );
    assert!(matches!(
        jwk_error(&jwt_key(
            json!({"use": "jwt-svid", "kty": "RSA", "kid": "k", "n": "!!", "e": "AQAB"})
        )),
        JwkError::BadBase64 { param: "n", .. }
    ));
    assert_eq!(
        jwk_error(&jwt_key(
            json!({"use": "jwt-svid", "kty": "RSA", "kid": "k", "n": "AAAA", "e": "AQAB"})
        )),
        JwkError::Key(KeyError::EmptyRsaParam { param: "n" })
    );
    let y = base64::Engine::encode(&encoding::B64URL, [2u8; 32]);
    let dup = json!({"keys": [
        {"use": "jwt-svid", "kty": "EC", "kid": "k", "crv": "P-256", "x": x, "y": x},
        {"use": "jwt-svid", "kty": "EC", "kid": "k", "crv": "P-256", "x": x, "y": y},
    ]});
    assert!(matches!(
        decode(&dup),
        Err(BundleError::Jwk {
            index: 1,
            error: JwkError::KeyId(KeyIdError::Duplicate { .. })
        })
    ));
}

#[test]
fn decoding_enforces_limits() {
    let limits = BundleLimits {
        max_jwks_bytes: 64,
        max_keys: 2,
    };
    let big = format!(r#"{{"keys": [], "pad": "{}"}}"#, "x".repeat(100));
    assert!(matches!(
        Bundle::from_jwks_with_limits(td("a"), big.as_bytes(), &limits),
        Err(BundleError::JwksTooLarge { max: 64, .. })
    ));
    assert_eq!(
        Bundle::from_jwks_with_limits(td("a"), br#"{"keys": [{}, {}, {}]}"#, &limits),
        Err(BundleError::TooManyKeys { count: 3, max: 2 })
    );
}

#[test]
fn pem_round_trips() {
    let b = full_bundle();
    let pem = b.x509_authorities_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----\n").count(), 3);
    assert!(!pem.contains('\r'));
    let back = Bundle::from_x509_pem(td("example.org"), &pem).unwrap();
    assert_eq!(back.x509_authorities(), b.x509_authorities());
}

#[test]
fn serde_round_trips_and_rechecks() {
    let b = full_bundle();
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(serde_json::from_str::<Bundle>(&json).unwrap(), b);

    let mut v: Value = serde_json::from_str(&json).unwrap();
    let first = v["jwt_authorities"][0].clone();
    let mut clash = v["jwt_authorities"][1].clone();
    clash["key_id"] = first["key_id"].clone();
    v["jwt_authorities"] = json!([first, clash]);
    assert!(serde_json::from_value::<Bundle>(v).is_err());
}

#[test]
fn bincode_round_trips() {
    // The event log stores payloads with bincode's standard config (binary: DER as bytes).
    let b = full_bundle();
    let bytes = bincode::serde::encode_to_vec(&b, bincode::config::standard()).unwrap();
    let (back, _): (Bundle, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(back, b);
}

#[test]
fn lookup_by_trust_domain() {
    let a = Bundle::new(td("a.org"));
    let b = Bundle::new(td("b.org"));
    assert_eq!(a.bundle_for(&td("a.org")), Some(&a));
    assert_eq!(a.bundle_for(&td("b.org")), None);
    let v = vec![a.clone(), b.clone()];
    assert_eq!(v.bundle_for(&td("b.org")), Some(&b));
    assert_eq!(v.as_slice().bundle_for(&td("c.org")), None);
    let m: BTreeMap<_, _> = [(td("a.org"), a.clone())].into();
    assert_eq!(m.bundle_for(&td("a.org")), Some(&a));
    let h: HashMap<_, _> = [(td("b.org"), b.clone())].into();
    assert_eq!(h.bundle_for(&td("b.org")), Some(&b));
}

#[test]
fn taint_marks_name_authorities_of_the_bundle_and_leave_with_them() {
    let mut b = full_bundle();
    let untainted = b.clone();
    let x509 = b.x509_authorities()[0].der().to_vec();
    let kid = b.jwt_authorities()[0].key_id.clone();
    assert!(!b.has_taints());

    // Only an authority of the bundle can be tainted, once.
    assert!(!b.taint_x509_authority(&[1, 2, 3]));
    assert!(!b.taint_jwt_authority("no-such-kid"));
    assert!(b.taint_x509_authority(&x509));
    assert!(!b.taint_x509_authority(&x509));
    assert!(b.taint_jwt_authority(&kid));
    assert!(b.is_x509_authority_tainted(&x509));
    assert!(b.is_jwt_authority_tainted(&kid));
    assert_eq!(b.tainted_x509_authorities().count(), 1);
    assert_eq!(
        b.tainted_jwt_key_ids().collect::<Vec<_>>(),
        vec![kid.as_str()]
    );
    assert_ne!(b, untainted, "a taint is a change of the bundle");

    // The serde form (stored in the log) does not carry marks.
    let back: Bundle = serde_json::from_value(serde_json::to_value(&b).unwrap()).unwrap();
    assert!(!back.has_taints());
    assert_eq!(back, untainted);

    // Removing an authority removes its mark.
    assert!(b.remove_x509_authority(&x509));
    assert!(!b.is_x509_authority_tainted(&x509));
    assert!(b.remove_jwt_authority(&kid).is_some());
    assert!(!b.has_taints());
}
