//! Signing tests: every SVID is checked independently (identity's X509-SVID verifier, ring
//! for JWTs) against the bundle the aggregate derives.

use std::time::Duration;

use x509_parser::extensions::GeneralName;
use x509_parser::parse_x509_certificate;

use super::*;
use crate::server::authority::test_support::{
    ca_at, clock_at, csr, csr_with, given, id, jwt_key_at, signer_with, td, verify, verify_jwt,
    write_upstream, UpstreamCa, T0,
};
use crate::server::authority::{build_ca, CaSettings};
use crate::server::events::ServerEvent;
use crate::server::keys::{KeyManager, KeyType, MemoryKeyManager};

fn request(spiffe: &str, dns: &[&str]) -> X509SvidRequest {
    X509SvidRequest {
        csr_der: csr(),
        spiffe_id: id(spiffe),
        dns_names: dns.iter().map(|s| s.to_string()).collect(),
        ttl: None,
    }
}

fn bundle_of(events: Vec<ServerEvent>) -> tessera_identity::Bundle {
    given(&events).bundle().unwrap().clone()
}

fn ca_events(ca: &crate::server::authority::PreparedCa) -> Vec<ServerEvent> {
    vec![
        ServerEvent::CaPrepared(ca.record.clone()),
        ServerEvent::CaActivated {
            authority_id: ca.record.authority_id.clone(),
        },
    ]
}

#[tokio::test]
async fn batch_svids_verify_against_the_bundle_and_follow_the_template() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 86_400);
    let clock = clock_at(T0 + 60);
    let signer = signer_with(&clock, SignerSettings::default(), Some(&ca), None);
    let bundle = bundle_of(ca_events(&ca));

    let results = signer
        .sign_x509_batch(vec![
            request("spiffe://example.org/web", &["web.example.org", "web"]),
            request("spiffe://example.org/db", &[]),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    for (result, expected) in results
        .iter()
        .zip(["spiffe://example.org/web", "spiffe://example.org/db"])
    {
        let svid = result.as_ref().unwrap();
        assert_eq!(
            svid.cert_chain.len(),
            1,
            "self-signed CA: the chain is the leaf only"
        );
        let verified = verify(&svid.cert_chain, &bundle, T0 + 61).unwrap();
        assert_eq!(verified.spiffe_id(), &id(expected));
        assert_eq!(svid.not_after, T0 + 60 + 3600);
        assert_eq!(svid.not_before, T0 + 50);
        assert_eq!(svid.authority_id, ca.record.authority_id);
    }

    let svid = results[0].as_ref().unwrap();
    let (_, leaf) = parse_x509_certificate(&svid.cert_chain[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![
            GeneralName::URI("spiffe://example.org/web"),
            GeneralName::DNSName("web.example.org"),
            GeneralName::DNSName("web"),
        ],
        "the CSR's own SANs are ignored"
    );
    assert_eq!(
        leaf.subject().to_string(),
        "C=US, O=SPIRE, CN=web.example.org"
    );
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(
        ku.value.digital_signature() && ku.value.key_encipherment() && ku.value.key_agreement()
    );
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(leaf.raw_serial().len(), 16);
    assert_eq!(hex::encode(leaf.raw_serial()), svid.serial_hex);
    assert_ne!(svid.serial_hex, results[1].as_ref().unwrap().serial_hex);
    let (_, db) = parse_x509_certificate(&results[1].as_ref().unwrap().cert_chain[0]).unwrap();
    assert_eq!(db.subject().to_string(), "C=US, O=SPIRE");
}

#[tokio::test]
async fn bad_items_are_refused_one_by_one() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 86_400);
    let clock = clock_at(T0);
    let signer = signer_with(&clock, SignerSettings::default(), Some(&ca), None);
    let mut tampered = csr();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let results = signer
        .sign_x509_batch(vec![
            X509SvidRequest {
                csr_der: tampered,
                ..request("spiffe://example.org/a", &[])
            },
            request("spiffe://other.org/a", &[]),
            request("spiffe://example.org", &[]),
            request("spiffe://example.org/b", &["bad name"]),
            request("spiffe://example.org/ok", &[]),
        ])
        .await
        .unwrap();
    assert_eq!(results[0], Err(SvidRejection::CsrSignature));
    assert!(matches!(
        results[1],
        Err(SvidRejection::ForeignSpiffeId { .. })
    ));
    assert!(matches!(
        results[2],
        Err(SvidRejection::RootSpiffeId { .. })
    ));
    assert!(matches!(
        results[3],
        Err(SvidRejection::InvalidDnsName { .. })
    ));
    assert!(results[4].is_ok());
}

#[tokio::test]
async fn ttl_is_capped_at_the_ca_expiry() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 1800);
    let clock = clock_at(T0 + 600);
    let signer = signer_with(&clock, SignerSettings::default(), Some(&ca), None);
    let long = X509SvidRequest {
        ttl: Some(Duration::from_secs(7200)),
        ..request("spiffe://example.org/a", &[])
    };
    let short = X509SvidRequest {
        ttl: Some(Duration::from_secs(60)),
        ..request("spiffe://example.org/b", &[])
    };
    let results = signer.sign_x509_batch(vec![long, short]).await.unwrap();
    let long = results[0].as_ref().unwrap();
    assert_eq!(long.not_after, T0 + 1800);
    let (_, leaf) = parse_x509_certificate(&long.cert_chain[0]).unwrap();
    assert_eq!(leaf.validity().not_after.timestamp(), T0 + 1800);
    assert_eq!(results[1].as_ref().unwrap().not_after, T0 + 660);
}

#[tokio::test]
async fn no_or_expired_ca_is_unavailable() {
    let keys = MemoryKeyManager::new();
    let clock = clock_at(T0);
    let signer = signer_with(&clock, SignerSettings::default(), None, None);
    assert!(matches!(
        signer
            .sign_x509_batch(vec![request("spiffe://example.org/a", &[])])
            .await,
        Err(SignError::NoActiveCa { .. })
    ));
    let ca = ca_at(&keys, 1, T0, 600);
    signer.install_ca(Some(SigningCa::new(ca.record.clone(), ca.key.clone())));
    clock.advance(Duration::from_secs(601));
    assert!(matches!(
        signer
            .sign_x509_batch(vec![request("spiffe://example.org/a", &[])])
            .await,
        Err(SignError::NoActiveCa { .. })
    ));
    assert_eq!(signer.queued(), 0, "refused work gives its room back");
}

#[tokio::test]
async fn svids_of_an_upstream_signed_ca_chain_to_the_upstream_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = UpstreamCa::root(T0 - 100, T0 + 86_400 * 30, &rcgen::PKCS_ECDSA_P256_SHA256);
    let mid = root.intermediate(T0 - 100, T0 + 86_400 * 10);
    let settings = CaSettings {
        upstream: Some(write_upstream(dir.path(), &[&mid, &root], &mid.key, None)),
        ..CaSettings::default()
    };
    let keys = MemoryKeyManager::new();
    let ca = build_ca(
        &td(),
        &settings,
        &keys,
        &crate::random::SeededRandom::new(1),
        T0,
    )
    .unwrap();
    let clock = clock_at(T0 + 5);
    let signer = signer_with(&clock, SignerSettings::default(), Some(&ca), None);
    let svid = signer
        .sign_agent_svid(AgentSvidRequest {
            csr_der: csr(),
            agent_id: id("spiffe://example.org/spire/agent/join_token/abc"),
            ttl: None,
        })
        .await
        .unwrap();
    assert_eq!(
        svid.cert_chain[1..],
        [ca.record.cert_der.clone(), mid.der.clone()],
        "leaf, Tessera's CA, upstream intermediate; not the root"
    );
    let bundle = bundle_of(ca_events(&ca));
    assert_eq!(bundle.x509_authorities().len(), 1);
    assert_eq!(bundle.x509_authorities()[0].der(), root.der.as_slice());
    verify(&svid.cert_chain, &bundle, T0 + 10).unwrap();
    // Without the intermediates it does not verify: the test can fail.
    assert!(verify(&svid.cert_chain[..1], &bundle, T0 + 10).is_err());
}

#[tokio::test]
async fn jwt_svids_verify_with_the_bundle_key_and_carry_the_claims() {
    let keys = MemoryKeyManager::new();
    let clock = clock_at(T0 + 100);
    for (key_type, alg) in [(KeyType::EcP256, "ES256"), (KeyType::EcP384, "ES384")] {
        let key = jwt_key_at(&keys, key_type, T0, 86_400);
        let signer = signer_with(&clock, SignerSettings::default(), None, Some(&key));
        let bundle = bundle_of(vec![
            ServerEvent::JwtKeyPrepared(key.record.clone()),
            ServerEvent::JwtKeyActivated {
                kid: key.record.kid.clone(),
            },
        ]);
        let svid = signer
            .mint_jwt_svid(JwtSvidRequest {
                spiffe_id: id("spiffe://example.org/web"),
                audience: vec!["db".into(), String::new(), "cache".into()],
                ttl: None,
            })
            .await
            .unwrap();
        let (header, claims) = verify_jwt(&svid.token, &bundle).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": alg, "kid": key.record.kid, "typ": "JWT"})
        );
        assert_eq!(
            claims,
            serde_json::json!({
                "aud": ["db", "cache"],
                "exp": T0 + 100 + 300,
                "iat": T0 + 100,
                "sub": "spiffe://example.org/web",
            })
        );
        assert_eq!(svid.expires_at, T0 + 400);
        assert!(!format!("{svid:?}").contains(&svid.token));

        // A token changed after signing does not verify.
        let forged = svid.token.replacen('.', ".e", 1);
        assert!(verify_jwt(&forged, &bundle).is_err());
    }
}

#[tokio::test]
async fn jwt_expiry_is_capped_at_the_key_expiry_and_rs256_works() {
    let keys = MemoryKeyManager::new();
    keys.import(
        "rsa",
        crate::server::keys::test_keys::rsa_2048().pkcs8_der(),
    )
    .unwrap();
    let key = std::sync::Arc::new(keys.load("rsa").unwrap());
    let record = crate::server::events::JwtKeyRecord {
        kid: "rsa-kid".into(),
        public_key_der: key.spki_der(),
        not_before: T0,
        not_after: T0 + 200,
        key_ref: "rsa".into(),
    };
    let clock = clock_at(T0 + 100);
    let signer = signer_with(&clock, SignerSettings::default(), None, None);
    signer.install_jwt_key(Some(SigningJwtKey::new(record.clone(), key)));
    let svid = signer
        .mint_jwt_svid(JwtSvidRequest {
            spiffe_id: id("spiffe://example.org/web"),
            audience: vec!["db".into()],
            ttl: Some(Duration::from_secs(3600)),
        })
        .await
        .unwrap();
    assert_eq!(svid.expires_at, T0 + 200);
    let bundle = bundle_of(vec![
        ServerEvent::JwtKeyPrepared(record),
        ServerEvent::JwtKeyActivated {
            kid: "rsa-kid".into(),
        },
    ]);
    let (header, claims) = verify_jwt(&svid.token, &bundle).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["exp"], T0 + 200);
}

#[tokio::test]
async fn jwt_requests_are_checked() {
    let keys = MemoryKeyManager::new();
    let key = jwt_key_at(&keys, KeyType::EcP256, T0, 600);
    let clock = clock_at(T0);
    let settings = SignerSettings {
        max_audiences: 2,
        ..SignerSettings::default()
    };
    let signer = signer_with(&clock, settings, None, Some(&key));
    let mint = |audience: Vec<&str>, spiffe: &str| {
        let signer = signer.clone();
        let request = JwtSvidRequest {
            spiffe_id: id(spiffe),
            audience: audience.into_iter().map(String::from).collect(),
            ttl: None,
        };
        async move { signer.mint_jwt_svid(request).await }
    };
    assert_eq!(
        mint(vec!["", ""], "spiffe://example.org/a")
            .await
            .unwrap_err(),
        SignError::Rejected(SvidRejection::NoAudience)
    );
    assert!(matches!(
        mint(vec!["a", "b", "c"], "spiffe://example.org/a").await,
        Err(SignError::Rejected(SvidRejection::TooManyAudiences {
            count: 3,
            max: 2
        }))
    ));
    assert!(matches!(
        mint(vec!["a\u{7}"], "spiffe://example.org/a").await,
        Err(SignError::Rejected(SvidRejection::InvalidAudience { .. }))
    ));
    assert!(matches!(
        mint(vec!["a"], "spiffe://other.org/a").await,
        Err(SignError::Rejected(SvidRejection::ForeignSpiffeId { .. }))
    ));
    clock.advance(Duration::from_secs(601));
    assert!(matches!(
        mint(vec!["a"], "spiffe://example.org/a").await,
        Err(SignError::NoActiveJwtKey { .. })
    ));
}

#[tokio::test]
async fn a_full_queue_refuses_with_the_limit_named() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 86_400);
    let clock = clock_at(T0);
    let settings = SignerSettings {
        max_queued: 3,
        max_batch: 2,
        ..SignerSettings::default()
    };
    let signer = signer_with(&clock, settings, Some(&ca), None);
    let held = signer.admit(2).unwrap();
    assert_eq!(signer.queued(), 2);
    let e = signer
        .sign_x509_batch(vec![
            request("spiffe://example.org/a", &[]),
            request("spiffe://example.org/b", &[]),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        e,
        SignError::Overloaded {
            requested: 2,
            limit: 3
        }
    );
    assert!(e.to_string().contains("limit of 3"), "{e}");
    // One still fits.
    assert!(signer
        .sign_agent_svid(AgentSvidRequest {
            csr_der: csr(),
            agent_id: id("spiffe://example.org/spire/agent/x"),
            ttl: None
        })
        .await
        .is_ok());
    drop(held);
    assert_eq!(signer.queued(), 0);
    assert_eq!(
        signer
            .sign_x509_batch(
                (0..3)
                    .map(|i| request(&format!("spiffe://example.org/{i}"), &[]))
                    .collect()
            )
            .await
            .unwrap_err(),
        SignError::BatchTooLarge { len: 3, max: 2 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_batches_keep_their_order_through_a_single_worker() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 86_400);
    let clock = clock_at(T0);
    let settings = SignerSettings {
        max_concurrent_jobs: 1,
        ..SignerSettings::default()
    };
    let signer = signer_with(&clock, settings, Some(&ca), None);
    let key = rcgen::KeyPair::generate().unwrap();
    let requests: Vec<X509SvidRequest> = (0..(2 * CHUNK + 3))
        .map(|i| X509SvidRequest {
            csr_der: csr_with(&key),
            ..request(&format!("spiffe://example.org/w{i}"), &[])
        })
        .collect();
    let (a, b) = tokio::join!(
        signer.sign_x509_batch(requests.clone()),
        signer.sign_x509_batch(requests)
    );
    for results in [a.unwrap(), b.unwrap()] {
        assert_eq!(results.len(), 2 * CHUNK + 3);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(
                r.as_ref().unwrap().spiffe_id,
                id(&format!("spiffe://example.org/w{i}"))
            );
        }
    }
    assert_eq!(signer.queued(), 0);
}

#[tokio::test]
async fn every_svid_is_counted_by_kind_and_outcome_and_admitted_ones_are_timed() {
    use super::metrics::{SignOutcome::*, SvidKind::*};

    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 86_400);
    let key = jwt_key_at(&keys, KeyType::EcP256, T0, 600);
    let clock = clock_at(T0);
    let settings = SignerSettings {
        max_queued: 3,
        max_batch: 3,
        ..SignerSettings::default()
    };
    let signer = signer_with(&clock, settings, Some(&ca), Some(&key));
    let jwt = |spiffe: &str| JwtSvidRequest {
        spiffe_id: id(spiffe),
        audience: vec!["db".into()],
        ttl: None,
    };

    // A batch of three: two signed, one refused (foreign ID).
    let results = signer
        .sign_x509_batch(vec![
            request("spiffe://example.org/a", &[]),
            request("spiffe://other.org/b", &[]),
            request("spiffe://example.org/c", &[]),
        ])
        .await
        .unwrap();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    signer
        .sign_agent_svid(AgentSvidRequest {
            csr_der: csr(),
            agent_id: id("spiffe://example.org/spire/agent/x"),
            ttl: None,
        })
        .await
        .unwrap();
    signer
        .mint_jwt_svid(jwt("spiffe://example.org/a"))
        .await
        .unwrap();
    assert!(signer
        .mint_jwt_svid(jwt("spiffe://example.org"))
        .await
        .is_err());

    // Queue full: the whole batch and the JWT are rejected, not admitted, so not timed.
    let held = signer.admit(2).unwrap();
    let e = signer
        .sign_x509_batch(vec![
            request("spiffe://example.org/d", &[]),
            request("spiffe://example.org/e", &[]),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::Overloaded { .. }));
    signer
        .mint_jwt_svid(jwt("spiffe://example.org/a"))
        .await
        .unwrap();
    let full = signer.admit(1).unwrap();
    let e = signer
        .mint_jwt_svid(jwt("spiffe://example.org/a"))
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::Overloaded { .. }));
    drop((held, full));
    // Too large a batch is rejected too.
    assert!(signer
        .sign_x509_batch(
            (0..4)
                .map(|i| request(&format!("spiffe://example.org/{i}"), &[]))
                .collect()
        )
        .await
        .is_err());
    // No active CA: admitted, then an error.
    signer.install_ca(None);
    assert!(signer
        .sign_x509_batch(vec![request("spiffe://example.org/f", &[])])
        .await
        .is_err());

    let m = signer.metrics();
    let counts: Vec<u64> = [
        (X509, Ok),
        (X509, Error),
        (X509, Rejected),
        (Jwt, Ok),
        (Jwt, Error),
        (Jwt, Rejected),
    ]
    .into_iter()
    .map(|(kind, outcome)| m.count(kind, outcome))
    .collect();
    assert_eq!(counts, [3, 2, 6, 2, 1, 1]);
    assert_eq!(
        m.latency(X509).count(),
        5,
        "ok + error, rejections are not timed"
    );
    assert_eq!(m.latency(Jwt).count(), 3);
    let buckets: Vec<(f64, u64)> = m.latency(X509).buckets().collect();
    assert!(buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert!(m.latency(X509).sum_seconds() > 0.0);
    assert_eq!(signer.clone().metrics(), m, "clones share the counters");
}
