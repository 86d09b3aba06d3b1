//! Fuzzes SPIFFE ID and trust domain parsing: no input may panic, and whatever parses must be
//! canonical (print back byte for byte) and stable (re-parse to the same value).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_identity::{SpiffeId, TrustDomain, MAX_SPIFFE_ID_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    match SpiffeId::new(input) {
        Ok(id) => {
            let printed = id.to_string();
            assert_eq!(printed, input, "a valid SPIFFE ID must print back as given");
            assert!(printed.len() <= MAX_SPIFFE_ID_LEN);
            assert_eq!(SpiffeId::new(&printed).ok().as_ref(), Some(&id));
            assert_eq!(
                TrustDomain::new(id.trust_domain().as_str()).ok().as_ref(),
                Some(id.trust_domain())
            );
            // The spiffe crate agrees with every ID accepted here.
            assert_eq!(id.to_spiffe().to_string(), printed);
        }
        // Messages stay bounded whatever the input's size.
        Err(e) => assert!(e.to_string().len() < 1024),
    }

    if let Ok(td) = TrustDomain::new(input) {
        assert_eq!(td.as_str(), input);
        assert_eq!(td.id().to_string(), format!("spiffe://{input}"));
    }
    let _ = TrustDomain::from_name_or_id(input);
});
