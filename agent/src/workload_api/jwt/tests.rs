//! Parser checks that need no key; signature, audience and expiry are covered end to end in
//! `agent/tests/` against the running server.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn token(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64(header),
        b64(claims),
        URL_SAFE_NO_PAD.encode(b"sig")
    )
}

fn no_bundle(_: &TrustDomain) -> Option<&'static Bundle> {
    None
}

fn check(t: &str) -> Result<ValidatedJwt, JwtError> {
    validate(t, "aud", no_bundle, 1_000, 4096)
}

fn claims() -> Value {
    json!({"sub": "spiffe://example.org/w", "aud": ["aud"], "exp": 2000})
}

#[test]
fn structural_errors_are_named() {
    assert!(matches!(check("a.b"), Err(JwtError::Malformed(_))));
    assert!(matches!(check("a.b.c.d"), Err(JwtError::Malformed(_))));
    assert!(matches!(check("!!.b.c"), Err(JwtError::Malformed(_))));
    assert_eq!(
        validate(&"a".repeat(5000), "aud", no_bundle, 0, 4096),
        Err(JwtError::TooLarge {
            len: 5000,
            max: 4096
        })
    );
    let h = |v: Value| token(&v, &claims());
    assert_eq!(
        check(&h(json!({"alg": "none", "kid": "k"}))),
        Err(JwtError::UnsupportedAlgorithm("none".into()))
    );
    assert_eq!(
        check(&h(json!({"alg": "HS256", "kid": "k"}))),
        Err(JwtError::UnsupportedAlgorithm("HS256".into()))
    );
    assert_eq!(
        check(&h(json!({"alg": "ES256", "kid": "k", "typ": "XYZ"}))),
        Err(JwtError::BadType("\"XYZ\"".into()))
    );
    assert_eq!(
        check(&h(json!({"alg": "ES256", "kid": "k", "crit": ["b64"]}))),
        Err(JwtError::Critical)
    );
    assert_eq!(
        check(&h(json!({"alg": "ES256"}))),
        Err(JwtError::MissingKeyId)
    );
    assert!(matches!(
        check(&h(json!(["not", "an", "object"]))),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn subject_and_bundle_lookup() {
    let header = json!({"alg": "ES256", "kid": "k", "typ": "JWT"});
    let t = token(&header, &json!({"aud": "aud", "exp": 2000}));
    assert_eq!(check(&t), Err(JwtError::BadClaim("sub")));
    let t = token(
        &header,
        &json!({"sub": "not-spiffe", "aud": "aud", "exp": 2000}),
    );
    assert!(matches!(check(&t), Err(JwtError::BadSubject { .. })));
    let t = token(&header, &claims());
    assert_eq!(check(&t), Err(JwtError::NoBundle("example.org".into())));
    assert_eq!(
        unverified_subject(&t, 4096).unwrap().to_string(),
        "spiffe://example.org/w"
    );
    let bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
    let got = validate(&t, "aud", |_| Some(&bundle), 1_000, 4096);
    assert_eq!(
        got,
        Err(JwtError::UnknownKey {
            kid: "k".into(),
            trust_domain: "example.org".into()
        })
    );
}

#[test]
fn claims_become_a_struct() {
    use prost_types::value::Kind;
    let map = json!({"sub": "s", "exp": 5, "aud": ["a", "b"], "x": {"y": null, "z": true}});
    let Value::Object(map) = map else {
        unreachable!()
    };
    let s = claims_struct(&map);
    assert_eq!(s.fields["sub"].kind, Some(Kind::StringValue("s".into())));
    assert_eq!(s.fields["exp"].kind, Some(Kind::NumberValue(5.0)));
    let Some(Kind::ListValue(l)) = &s.fields["aud"].kind else {
        panic!("aud")
    };
    assert_eq!(l.values.len(), 2);
    let Some(Kind::StructValue(x)) = &s.fields["x"].kind else {
        panic!("x")
    };
    assert_eq!(x.fields["y"].kind, Some(Kind::NullValue(0)));
    assert_eq!(x.fields["z"].kind, Some(Kind::BoolValue(true)));
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        let _ = check(&s);
    }

    #[test]
    fn arbitrary_base64_parts_never_panic(
        h in proptest::collection::vec(any::<u8>(), 0..80),
        p in proptest::collection::vec(any::<u8>(), 0..80),
        s in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let t = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p), URL_SAFE_NO_PAD.encode(s));
        prop_assert!(check(&t).is_err());
    }

    #[test]
    fn arbitrary_claims_never_panic(
        alg in prop_oneof![Just("ES256"), Just("ES384"), Just("RS256"), Just("PS512"), Just("ES512")],
        sub in "\\PC{0,40}",
        exp in any::<i64>(),
        aud in proptest::collection::vec("\\PC{0,8}", 0..4),
    ) {
        let t = token(&json!({"alg": alg, "kid": "k"}), &json!({"sub": sub, "exp": exp, "aud": aud}));
        prop_assert!(check(&t).is_err());
    }
}
