//! Property tests of the decoders fed by peers: JWKS bundles, X.509-SVID chains and serde
//! forms. Whatever the bytes, they return a value or an error; they never panic.

use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tessera_identity::{verify_x509_svid, Bundle, RegistrationEntry, SelectorSet, TrustDomain};

#[cfg(test)] // Lets clippy see the helper as test code (unwrap is fine here).
fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

/// Values a JWK member might plausibly hold, so decoding gets past the first checks.
fn jwk_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("x509-svid")),
        Just(json!("jwt-svid")),
        Just(json!("EC")),
        Just(json!("RSA")),
        Just(json!("P-256")),
        Just(json!("P-384")),
        Just(json!("AQAB")),
        "[A-Za-z0-9_=+/-]{0,90}".prop_map(Value::from),
        prop::collection::vec("[A-Za-z0-9+/=]{0,60}".prop_map(Value::from), 0..3)
            .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn jwk() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        Just("use"),
        Just("kty"),
        Just("kid"),
        Just("crv"),
        Just("x"),
        Just("y"),
        Just("n"),
        Just("e"),
        Just("x5c")
    ];
    prop::collection::vec((member, jwk_value()), 0..9).prop_map(|members| {
        let map: Map<String, Value> = members
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Value::Object(map)
    })
}

fn jwks_doc() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(prop_oneof![jwk(), jwk_value()], 0..5),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(keys, seq, hint)| {
            let mut doc = json!({ "keys": keys });
            if let Some(seq) = seq {
                doc["spiffe_sequence"] = json!(seq);
            }
            if let Some(hint) = hint {
                doc["spiffe_refresh_hint"] = json!(hint);
            }
            doc
        })
}

proptest! {
    #[test]
    fn jwks_decoding_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Bundle::from_jwks(td(), &bytes);
    }

    #[test]
    fn jwks_decoding_never_panics_on_jwk_shaped_documents(doc in jwks_doc()) {
        if let Ok(bundle) = Bundle::from_jwks(td(), doc.to_string().as_bytes()) {
            // Whatever decodes re-encodes, and decodes to the same bundle.
            let again = bundle.to_jwks().unwrap();
            prop_assert_eq!(Bundle::from_jwks(td(), again.as_bytes()).unwrap(), bundle);
        }
    }

    #[test]
    fn svid_verification_never_panics(
        chain in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4),
        secs in any::<u32>(),
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(u64::from(secs));
        let result = verify_x509_svid(&chain, &Bundle::new(td()), now);
        prop_assert!(result.is_err());
    }

    #[test]
    fn serde_decoding_never_panics(s in any::<String>()) {
        let _ = serde_json::from_str::<RegistrationEntry>(&s);
        let _ = serde_json::from_str::<Bundle>(&s);
        let _ = serde_json::from_str::<SelectorSet>(&s);
    }
}
