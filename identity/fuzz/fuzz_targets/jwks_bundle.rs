//! Fuzzes SPIFFE bundle decoding (the JWKS document with `spiffe_sequence` and
//! `spiffe_refresh_hint`, the PEM form, and the serde form the log stores): no input may panic;
//! a decoded bundle encodes and decodes back to itself, and the limits hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_identity::{Bundle, BundleError, BundleLimits, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::new("example.org").unwrap();

    match Bundle::from_jwks(td.clone(), data) {
        Ok(bundle) => {
            assert_eq!(bundle.trust_domain(), &td);
            let limits = BundleLimits::default();
            assert!(
                bundle.x509_authorities().len() + bundle.jwt_authorities().len() <= limits.max_keys
            );
            let doc = bundle.to_jwks().expect("a decoded bundle encodes");
            let again =
                Bundle::from_jwks(td.clone(), doc.as_bytes()).expect("its encoding decodes");
            assert_eq!(again, bundle, "JWKS round trip");
            for a in bundle.jwt_authorities() {
                assert_eq!(bundle.jwt_authority(&a.key_id), Some(a));
            }
            // Tight limits: refused with the limit named, or within it.
            let tight = BundleLimits {
                max_jwks_bytes: data.len(),
                max_keys: 1,
            };
            match Bundle::from_jwks_with_limits(td.clone(), data, &tight) {
                Ok(b) => assert!(b.x509_authorities().len() + b.jwt_authorities().len() <= 1),
                Err(e) => assert!(e.to_string().contains("max_keys"), "{e}"),
            }
            let serde = serde_json::to_string(&bundle).unwrap();
            assert_eq!(
                serde_json::from_str::<Bundle>(&serde).ok().as_ref(),
                Some(&bundle)
            );
        }
        Err(e) => assert!(e.to_string().len() < 4096, "bounded message: {e}"),
    }
    let short = BundleLimits {
        max_jwks_bytes: data.len().saturating_sub(1),
        max_keys: 1024,
    };
    if !data.is_empty() {
        assert!(matches!(
            Bundle::from_jwks_with_limits(td.clone(), data, &short),
            Err(BundleError::JwksTooLarge { .. })
        ));
    }

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bundle) = Bundle::from_x509_pem(td.clone(), text) {
            let pem = bundle.x509_authorities_pem();
            let again = Bundle::from_x509_pem(td.clone(), &pem).expect("its PEM decodes");
            assert_eq!(again, bundle, "PEM round trip");
        }
    }

    // The serde form (what events carry): whatever decodes re-encodes to the same value.
    if let Ok(bundle) = serde_json::from_slice::<Bundle>(data) {
        let json = serde_json::to_vec(&bundle).unwrap();
        assert_eq!(
            serde_json::from_slice::<Bundle>(&json).ok().as_ref(),
            Some(&bundle)
        );
    }
});
