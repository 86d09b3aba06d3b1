//! Tests of what the signer decides itself (issue 11): reserved IDs are signed only on their
//! own paths, and no request outlives the configured maxima.

use std::time::Duration;

use super::*;
use crate::server::authority::test_support::{
    ca_at, clock_at, csr, id, jwt_key_at, signer_with, T0,
};
use crate::server::keys::{KeyType, MemoryKeyManager};

fn x509(spiffe: &str, ttl: Option<u64>) -> X509SvidRequest {
    X509SvidRequest {
        csr_der: csr(),
        spiffe_id: id(spiffe),
        dns_names: vec![],
        ttl: ttl.map(Duration::from_secs),
    }
}

fn jwt(spiffe: &str, ttl: Option<u64>) -> JwtSvidRequest {
    JwtSvidRequest {
        spiffe_id: id(spiffe),
        audience: vec!["db".into()],
        ttl: ttl.map(Duration::from_secs),
    }
}

#[tokio::test]
async fn the_server_id_is_signed_only_by_the_servers_own_path() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 86_400);
    let key = jwt_key_at(&keys, KeyType::EcP256, T0, 86_400);
    let clock = clock_at(T0 + 60);
    let signer = signer_with(&clock, SignerSettings::default(), Some(&ca), Some(&key));

    // What `x509 mint --spiffeID spiffe://example.org/spire/server` and agent batches reach.
    let results = signer
        .sign_x509_batch(vec![
            x509("spiffe://example.org/spire/server", None),
            x509("spiffe://example.org/spire/agent/join_token/t", None),
            x509("spiffe://example.org/web", None),
        ])
        .await
        .unwrap();
    for r in &results[..2] {
        let e = r.as_ref().unwrap_err();
        assert!(matches!(e, SvidRejection::ReservedSpiffeId { .. }), "{e}");
        assert!(e.to_string().contains("reserved"), "{e}");
    }
    assert!(results[2].is_ok());

    // `jwt mint` for a reserved ID.
    let e = signer
        .mint_jwt_svid(jwt("spiffe://example.org/spire/server", None))
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        SignError::Rejected(SvidRejection::ReservedSpiffeId { .. })
    ));

    // The server's own path signs its ID, and nothing else.
    let own = signer
        .sign_server_svid(vec![
            x509("spiffe://example.org/spire/server", None),
            x509("spiffe://example.org/web", None),
        ])
        .await
        .unwrap();
    assert_eq!(
        own[0].as_ref().unwrap().spiffe_id,
        id("spiffe://example.org/spire/server")
    );
    assert!(matches!(own[1], Err(SvidRejection::NotTheServerId { .. })));

    // Agent SVIDs are for agent IDs only.
    let agent = |spiffe: &str| AgentSvidRequest {
        csr_der: csr(),
        agent_id: id(spiffe),
        ttl: None,
    };
    assert!(signer
        .sign_agent_svid(agent("spiffe://example.org/spire/agent/join_token/t"))
        .await
        .is_ok());
    assert!(matches!(
        signer
            .sign_agent_svid(agent("spiffe://example.org/spire/server"))
            .await,
        Err(SignError::Rejected(SvidRejection::NotAnAgentId { .. }))
    ));
}

#[tokio::test]
async fn requested_ttls_are_clamped_to_the_configured_maxima() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 30 * 86_400);
    let key = jwt_key_at(&keys, KeyType::EcP256, T0, 30 * 86_400);
    let clock = clock_at(T0);
    let settings = SignerSettings {
        max_x509_svid_ttl: Duration::from_secs(7200),
        max_jwt_svid_ttl: Duration::from_secs(600),
        ..SignerSettings::default()
    };
    let signer = signer_with(&clock, settings, Some(&ca), Some(&key));
    let huge = u64::try_from(i32::MAX).unwrap();

    let results = signer
        .sign_x509_batch(vec![
            x509("spiffe://example.org/a", Some(huge)),
            x509("spiffe://example.org/b", Some(60)),
            x509("spiffe://example.org/c", None),
        ])
        .await
        .unwrap();
    let not_after: Vec<i64> = results
        .iter()
        .map(|r| r.as_ref().unwrap().not_after)
        .collect();
    assert_eq!(not_after, vec![T0 + 7200, T0 + 60, T0 + 3600]);

    let long = signer
        .mint_jwt_svid(jwt("spiffe://example.org/a", Some(huge)))
        .await
        .unwrap();
    assert_eq!(long.expires_at, T0 + 600);
    let short = signer
        .mint_jwt_svid(jwt("spiffe://example.org/a", Some(60)))
        .await
        .unwrap();
    assert_eq!(short.expires_at, T0 + 60);
}
