//! Fuzzes JWT-SVID validation (`ValidateJWTSVID` and the subject peek before it) against a
//! bundle with one P-256 and one RSA-2048 JWT authority. No input may panic; the size limit
//! holds; a token that validates has a SPIFFE ID subject in the bundle's trust domain, the
//! audience, an expiry after now, and stops validating when any part of it is changed, at
//! its expiry, for another audience, or without the bundle.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_agent::workload_api::jwt::{unverified_subject, validate, JwtError};
use tessera_identity::{Bundle, EcCurve, JwtAuthority, PublicKey, TrustDomain};

const NOW: i64 = 1_800_000_000;
const MAX: usize = 64 * 1024;
const AUDIENCE: &str = "db";

fn bundle() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let mut b = Bundle::new(TrustDomain::new("example.org").unwrap());
        let ec = PublicKey::ec(
            EcCurve::P256,
            include_bytes!("../keys/p256_x.bin").to_vec(),
            include_bytes!("../keys/p256_y.bin").to_vec(),
        )
        .unwrap();
        let rsa = PublicKey::rsa(include_bytes!("../keys/rsa_n.bin"), &[1, 0, 1]).unwrap();
        for (kid, key) in [("k1", ec), ("k-rsa", rsa)] {
            b.add_jwt_authority(JwtAuthority {
                key_id: kid.into(),
                public_key: key,
                expires_at: None,
            })
            .unwrap();
        }
        b
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let ours = |td: &TrustDomain| (td == bundle().trust_domain()).then(bundle);
    let result = validate(token, AUDIENCE, ours, NOW, MAX);
    if let Ok(sub) = unverified_subject(token, MAX) {
        if let Ok(v) = &result {
            assert_eq!(&sub, &v.spiffe_id);
        }
    }
    if !token.is_empty() {
        assert!(matches!(
            validate(token, AUDIENCE, ours, NOW, token.len() - 1),
            Err(JwtError::TooLarge { .. })
        ));
    }
    match result {
        Ok(v) => {
            assert_eq!(v.spiffe_id.trust_domain(), bundle().trust_domain());
            let exp = v.claims.get("exp").and_then(|e| e.as_f64()).unwrap();
            assert!(exp > NOW as f64);
            assert!(matches!(
                validate(token, "not-the-audience", ours, NOW, MAX),
                Err(JwtError::AudienceMismatch { .. })
            ));
            if exp < 1e15 {
                let at_exp = exp.ceil() as i64;
                assert!(matches!(
                    validate(token, AUDIENCE, ours, at_exp, MAX),
                    Err(JwtError::Expired)
                ));
            }
            assert!(matches!(
                validate(token, AUDIENCE, |_| None, NOW, MAX),
                Err(JwtError::NoBundle(_))
            ));
            // Any change to the signed text, or to the signature's first character, fails.
            let mut bytes = token.as_bytes().to_vec();
            let at = data.len().wrapping_mul(31) % bytes.len();
            if bytes[at] != b'.' {
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                let changed = String::from_utf8(bytes).unwrap();
                assert!(
                    validate(&changed, AUDIENCE, ours, NOW, MAX).is_err(),
                    "{changed}"
                );
            }
        }
        // Messages quote the token's parts only truncated, whatever its size.
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.len() <= 2048,
                "a {} byte message: {e:?}",
                message.len()
            );
        }
    }
});
