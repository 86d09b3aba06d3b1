//! Hostile calls: an agent whose SVID expires or who is banned while its connection stays
//! open, forged CSRs, and the per-IP and per-agent limits (each refusal typed and naming its
//! config key).

use std::time::Duration;

use futures::StreamExt;
use rcgen::KeyPair;
use tessera_actors::server::nodes::NodeCommand;
use tessera_identity::SpiffeId;
use tessera_proto::tessera::agent::v1::agent_server_client::AgentServerClient;
use tessera_proto::tessera::agent::v1::{
    BatchSignX509SvidRequest, MintJwtSvidRequest, SignX509SvidParams, SyncRequest, AGENT_BANNED,
    AGENT_REFUSAL_KEY,
};
use tonic::Code;

use crate::support::*;

fn mint(entry_id: &str, audience: Vec<String>) -> MintJwtSvidRequest {
    MintJwtSvidRequest {
        entry_id: entry_id.into(),
        audience,
        ttl: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_that_expires_on_a_live_connection_is_refused_on_the_next_call() {
    let r = start(settings(), true).await;
    let agent = attest_new(&r, "exp-1").await;
    let e = entry(&r.server, "spiffe://example.org/web", &agent.id).await;
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&agent)).await);
    within(
        "mint before expiry",
        client.mint_jwt_svid(mint(e.id.as_str(), vec!["a".into()])),
    )
    .await
    .unwrap();
    // The agent SVID (1 h) expires while the connection stays open.
    r.clock
        .as_ref()
        .unwrap()
        .advance(Duration::from_secs(2 * 3600));
    let err = within(
        "mint after expiry",
        client.mint_jwt_svid(mint(e.id.as_str(), vec!["a".into()])),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("expired"), "{err}");
    let err = within(
        "sync after expiry",
        client.sync_events(SyncRequest::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_agent_is_refused_on_its_live_connection_and_others_are_served() {
    let r = start(settings(), false).await;
    let banned = attest_new(&r, "ban-1").await;
    let other = attest_new(&r, "ban-2").await;
    let e = entry(&r.server, "spiffe://example.org/web", &banned.id).await;
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&banned)).await);
    within(
        "mint before the ban",
        client.mint_jwt_svid(mint(e.id.as_str(), vec!["a".into()])),
    )
    .await
    .unwrap();
    r.server
        .nodes
        .command(NodeCommand::Ban(banned.id.clone()))
        .await
        .unwrap();
    let err = within(
        "mint after the ban",
        client.mint_jwt_svid(mint(e.id.as_str(), vec!["a".into()])),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert_eq!(
        err.metadata().get(AGENT_REFUSAL_KEY).map(|v| v.as_bytes()),
        Some(AGENT_BANNED.as_bytes())
    );
    let mut fine = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&other)).await);
    within("another agent", fine.sync_events(SyncRequest::default()))
        .await
        .unwrap();
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_csrs_are_refused_per_item_and_never_choose_the_identity() {
    let r = start(settings(), false).await;
    let agent = attest_new(&r, "csr-1").await;
    let mine = entry(&r.server, "spiffe://example.org/web", &agent.id).await;
    let foreign_parent = SpiffeId::new("spiffe://example.org/spire/agent/x/other").unwrap();
    let foreign = entry(&r.server, "spiffe://example.org/db", &foreign_parent).await;
    let key = KeyPair::generate().unwrap();
    // A CSR that asks for another SPIFFE ID: the entry decides, the CSR only gives the key.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("spiffe://example.org/admin").unwrap(),
    )];
    let asks_admin = params.serialize_request(&key).unwrap().der().to_vec();
    // A CSR whose signature does not match its key (the last byte of the signature flipped).
    let mut bad_signature = csr(&key);
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 0x01;
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&agent)).await);
    let results = within(
        "a batch of forged CSRs",
        client.batch_sign_x509_svid(BatchSignX509SvidRequest {
            params: vec![
                SignX509SvidParams {
                    entry_id: mine.id.as_str().into(),
                    csr: asks_admin,
                },
                SignX509SvidParams {
                    entry_id: mine.id.as_str().into(),
                    csr: bad_signature,
                },
                SignX509SvidParams {
                    entry_id: foreign.id.as_str().into(),
                    csr: csr(&key),
                },
                SignX509SvidParams {
                    entry_id: mine.id.as_str().into(),
                    csr: b"not a csr".to_vec(),
                },
            ],
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .results;
    let code = |i: usize| results[i].status.as_ref().unwrap().code;
    assert_eq!(code(0), Code::Ok as i32);
    let id = results[0].svid.as_ref().unwrap().id.as_ref().unwrap();
    assert_eq!(id.path, "/web", "the entry's ID, not the CSR's");
    assert_eq!(code(1), Code::InvalidArgument as i32, "{:?}", results[1]);
    assert_eq!(code(2), Code::PermissionDenied as i32, "{:?}", results[2]);
    assert_eq!(code(3), Code::InvalidArgument as i32, "{:?}", results[3]);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_is_rate_limited_per_source_ip_with_a_typed_error() {
    let mut s = settings();
    s.limits.attestations_per_ip_per_second = 1;
    s.limits.attestation_burst_per_ip = 1;
    s.limits.attestation_max_wait = Duration::ZERO;
    let r = start(s, true).await; // Manual clock: the rate is judged by the server's time.
    let _first = attest_new(&r, "rate-1").await;
    let err = attest(r.addr, &r.bundle, "rate-unknown")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        err.message()
            .contains("limits.attestations_per_ip_per_second"),
        "{err}"
    );
    r.clock.as_ref().unwrap().advance(Duration::from_secs(1));
    let err = attest(r.addr, &r.bundle, "rate-unknown")
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "admitted a second later: {err}"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_agent_limits_refuse_with_resource_exhausted_naming_the_key() {
    let mut s = settings();
    s.limits.max_sync_streams_per_agent = 1;
    s.limits.jwt_mints_per_agent_per_second = 2;
    s.limits.csr_batches_per_agent_per_second = 1;
    s.limits.max_sign_batch = 2;
    let r = start(s, true).await;
    let greedy = attest_new(&r, "greedy-1").await;
    let modest = attest_new(&r, "modest-1").await;
    let e = entry(&r.server, "spiffe://example.org/web", &greedy.id).await;
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&greedy)).await);
    let exhausted = |err: tonic::Status, key: &str| {
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains(key), "{key}: {err}");
    };

    // SyncEvents: one stream; a second is refused while it is open, admitted once closed.
    let first = within("first sync", client.sync_events(SyncRequest::default()))
        .await
        .unwrap();
    let err = within("second sync", client.sync_events(SyncRequest::default()))
        .await
        .unwrap_err();
    exhausted(err, "limits.max_sync_streams_per_agent");
    let mut other = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&modest)).await);
    within(
        "another agent's sync",
        other.sync_events(SyncRequest::default()),
    )
    .await
    .unwrap();
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        match within("sync again", client.sync_events(SyncRequest::default())).await {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(reopened.is_some(), "the closed stream's place was freed");

    // JWT mints: two per second.
    for _ in 0..2 {
        within(
            "mint",
            client.mint_jwt_svid(mint(e.id.as_str(), vec!["a".into()])),
        )
        .await
        .unwrap();
    }
    let err = within(
        "third mint",
        client.mint_jwt_svid(mint(e.id.as_str(), vec!["a".into()])),
    )
    .await
    .unwrap_err();
    exhausted(err, "limits.agent_jwt_mints_per_second");

    // CSR batches: the size, then the rate.
    let key = KeyPair::generate().unwrap();
    let item = || SignX509SvidParams {
        entry_id: e.id.as_str().into(),
        csr: csr(&key),
    };
    let err = within(
        "a batch too large",
        client.batch_sign_x509_svid(BatchSignX509SvidRequest {
            params: vec![item(), item(), item()],
        }),
    )
    .await
    .unwrap_err();
    exhausted(err, "limits.max_signing_batch");
    within(
        "a batch",
        client.batch_sign_x509_svid(BatchSignX509SvidRequest {
            params: vec![item()],
        }),
    )
    .await
    .unwrap();
    let err = within(
        "a second batch in the same second",
        client.batch_sign_x509_svid(BatchSignX509SvidRequest {
            params: vec![item()],
        }),
    )
    .await
    .unwrap_err();
    exhausted(err, "limits.agent_csr_batches_per_second");
    // A second later both are admitted again.
    r.clock.as_ref().unwrap().advance(Duration::from_secs(1));
    within(
        "mint a second later",
        client.mint_jwt_svid(mint(e.id.as_str(), vec!["a".into()])),
    )
    .await
    .unwrap();
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_follow_the_shared_limits_and_name_them() {
    let r = start(settings(), false).await;
    let agent = attest_new(&r, "aud-1").await;
    let e = entry(&r.server, "spiffe://example.org/web", &agent.id).await;
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&agent)).await);
    // 32 audiences: what the agent's Workload API accepts (the agent API allowed 16 before).
    let many: Vec<String> = (0..32).map(|i| format!("aud-{i}")).collect();
    within(
        "32 audiences",
        client.mint_jwt_svid(mint(e.id.as_str(), many.clone())),
    )
    .await
    .unwrap();
    let mut too_many = many;
    too_many.push("one-more".into());
    let err = within(
        "33 audiences",
        client.mint_jwt_svid(mint(e.id.as_str(), too_many)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("limits.max_audiences"), "{err}");
    let err = within(
        "a 1,025-byte audience",
        client.mint_jwt_svid(mint(e.id.as_str(), vec!["x".repeat(1025)])),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("limits.max_audience_len"), "{err}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_stream_ends_at_the_connection_max_age_and_resumes_on_a_new_one() {
    let mut s = settings();
    s.limits.connection_max_age = Duration::from_secs(2);
    s.limits.connection_max_age_grace = Duration::from_secs(1);
    let r = start(s, false).await;
    let agent = attest_new(&r, "age-1").await;
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&agent)).await);
    let mut sync = within("sync", client.sync_events(SyncRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut ended = None;
    for _ in 0..100 {
        match within("next sync message", sync.next()).await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => {
                ended = Some(status);
                break;
            }
            None => break,
        }
    }
    let status = ended.expect("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        status.message().contains("limits.agent_connection_max_age"),
        "{status}"
    );
    // A new connection serves the agent again.
    let mut fresh = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&agent)).await);
    within(
        "sync on a new connection",
        fresh.sync_events(SyncRequest::default()),
    )
    .await
    .unwrap();
    r.stop().await;
}
