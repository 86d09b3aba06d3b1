//! Fuzzes PKCS#10 CSR parsing (what workloads and agents send to be signed): no input may
//! panic; an accepted CSR yields a key the server can certify (EC P-256, P-384, or RSA of at
//! least 2048 bits) whose SubjectPublicKeyInfo parses back, and the size limit holds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_actors::server::authority::{fuzz_parse_csr, SvidRejection};
use tessera_identity::{EcCurve, PublicKey};

const MAX: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    match fuzz_parse_csr(data, MAX) {
        Ok(spki) => {
            match PublicKey::from_spki_der(&spki) {
                Ok(PublicKey::Ec {
                    curve: EcCurve::P256 | EcCurve::P384,
                    ..
                }) => {}
                Ok(PublicKey::Rsa { n, .. }) => assert!(n.len() * 8 >= 2048),
                other => panic!("accepted a CSR whose key is {other:?}"),
            }
            // The limit is inclusive, and one byte less refuses it, naming the limit.
            match fuzz_parse_csr(data, data.len() - 1) {
                Err(e @ SvidRejection::CsrTooLarge { .. }) => {
                    assert!(e.to_string().contains("max_csr_bytes"))
                }
                other => panic!("over the limit, got {other:?}"),
            }
            assert_eq!(fuzz_parse_csr(data, data.len()).ok(), Some(spki));
        }
        Err(SvidRejection::CsrTooLarge { .. }) => assert!(data.len() > MAX),
        Err(e) => assert!(e.to_string().len() < 4096, "bounded message: {e}"),
    }
});
