//! Tests of what the signer decides itself (issue 11): reserved IDs are signed only on their
//! own paths, and no request outlives the configured maxima.

use std::time::Duration;

use super::priority::Priority;
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

#[test]
fn bulk_work_leaves_the_reserve_to_on_demand_work() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 86_400);
    let clock = clock_at(T0);
    let settings = SignerSettings {
        max_queued: 10,
        on_demand_reserve: 3,
        ..SignerSettings::default()
    };
    let signer = signer_with(&clock, settings, Some(&ca), None);
    let bulk = signer.admit_as(7, Priority::Bulk).unwrap();
    assert_eq!(
        signer.admit_as(1, Priority::Bulk).unwrap_err(),
        SignError::Overloaded {
            requested: 1,
            limit: 7
        }
    );
    // The reserve is there for on-demand work; the total bound holds.
    let on_demand = signer.admit_as(3, Priority::OnDemand).unwrap();
    assert_eq!(signer.queued(), 10);
    assert!(matches!(
        signer.admit_as(1, Priority::OnDemand),
        Err(SignError::Overloaded { limit: 10, .. })
    ));
    drop(bulk);
    drop(on_demand);
    assert_eq!(signer.queued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_svid_does_not_wait_behind_a_bulk_renewal_backlog() {
    let keys = MemoryKeyManager::new();
    let ca = ca_at(&keys, 1, T0, 86_400);
    let clock = clock_at(T0);
    let settings = SignerSettings {
        max_concurrent_jobs: 1,
        ..SignerSettings::default()
    };
    let signer = signer_with(&clock, settings, Some(&ca), None);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let csrs: Vec<Vec<u8>> = (0..CHUNK).map(|_| csr()).collect();
    let mut backlog = Vec::new();
    for b in 0..100 {
        let (signer, done) = (signer.clone(), done.clone());
        let requests: Vec<X509SvidRequest> = csrs
            .iter()
            .enumerate()
            .map(|(i, c)| X509SvidRequest {
                csr_der: c.clone(),
                spiffe_id: id(&format!("spiffe://example.org/bulk/{b}/{i}")),
                dns_names: vec![],
                ttl: None,
            })
            .collect();
        backlog.push(tokio::spawn(async move {
            let out = signer
                .sign_x509_batch_as(requests, Priority::Bulk)
                .await
                .unwrap();
            assert!(out.iter().all(Result::is_ok));
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    // Let the backlog queue up at the single worker.
    for _ in 0..5_000 {
        if signer.jobs_waiting() >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = done.load(std::sync::atomic::Ordering::SeqCst);
    let first = tokio::time::timeout(
        Duration::from_secs(60),
        signer.sign_x509_batch_as(
            vec![x509("spiffe://example.org/first", None)],
            Priority::OnDemand,
        ),
    )
    .await
    .expect("signed within 60 s")
    .unwrap();
    assert!(first[0].is_ok());
    let waited_for = done.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        before < 50 && waited_for <= 2,
        "the on-demand SVID waited for {waited_for} of the {} bulk batches queued before it",
        100 - before
    );
    for t in backlog {
        t.await.unwrap();
    }
}
