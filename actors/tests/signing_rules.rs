//! What the server signs, and when (issue 11): through the running actors and the agent
//! operations the gRPC agent API and the simulator share. The signer's own rules (reserved
//! IDs, TTL maxima) are unit-tested beside it; these check the wiring around them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use tessera_actors::random::SeededRandom;
use tessera_actors::server::agent_ops::{
    mint_jwt_for_agent, sign_x509_for_agent, ItemError, OpsError,
};
use tessera_actors::server::aggregate_actor::{AggregateMsg, CommandError};
use tessera_actors::server::authority::signer::priority::Priority;
use tessera_actors::server::authority::{
    JwtSvidRequest, SignError, SvidRejection, X509SvidRequest,
};
use tessera_actors::server::events::{AttestedAgent, ServerEvent};
use tessera_actors::server::nodes::NodeCommand;
use tessera_actors::server::registry::{NewEntry, RegistryCommand, RegistryReply};
use tessera_actors::server::state::ServerState;
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_actors::server::sync::ViewChange;
use tessera_actors::server::tokens::{hash_token, TokenCommand, TokenError};
use tessera_eventlog::{Clock, EventLog, LocalLog, ManualClock, SystemClock};
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

const AGENT: &str = "spiffe://example.org/spire/agent/x509pop/n1";
const NOW: i64 = 1_700_000_000;

struct Running {
    server: Server,
    clock: ManualClock,
    log: Arc<LocalLog>,
}

fn settings() -> ServerSettings {
    let mut s = ServerSettings::new(TrustDomain::new("example.org").unwrap());
    s.call_timeout = Duration::from_secs(20);
    s.authority.tick_interval = None;
    s
}

async fn start_with(settings: ServerSettings) -> Running {
    let clock = ManualClock::at_unix_secs(NOW as u64);
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let log = Arc::new(LocalLog::in_memory(dyn_clock.clone()));
    let server = Server::start(
        settings,
        log.clone(),
        dyn_clock,
        Arc::new(SeededRandom::new(3)),
    )
    .await
    .unwrap();
    server.authority.tick().await.unwrap();
    server
        .nodes
        .command(NodeCommand::Attested(AttestedAgent {
            id: SpiffeId::new(AGENT).unwrap(),
            attestation_type: "x509pop".into(),
            selectors: SelectorSet::parse_all(["x509pop:subject:cn:n1"]).unwrap(),
            svid_serial: "01".into(),
            svid_expires_at: NOW + 3600,
            attested_at: NOW,
            can_reattest: true,
        }))
        .await
        .unwrap();
    Running { server, clock, log }
}

async fn start() -> Running {
    start_with(settings()).await
}

fn entry(path: &str, jwt_ttl: Option<u32>, expires_at: Option<i64>) -> NewEntry {
    NewEntry {
        id: None,
        entry: RegistrationEntry {
            id: EntryId::new("unset").unwrap(),
            spiffe_id: SpiffeId::new(&format!("spiffe://example.org{path}")).unwrap(),
            parent_id: SpiffeId::new(AGENT).unwrap(),
            selectors: SelectorSet::parse_all(["unix:uid:1"]).unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: jwt_ttl,
            federates_with: vec![],
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at,
            created_at: 0,
            revision: 0,
        },
    }
}

async fn create(r: &Running, item: NewEntry) -> RegistrationEntry {
    let created = match r
        .server
        .registry
        .command(RegistryCommand::Create(vec![item]))
        .await
        .unwrap()
    {
        RegistryReply::Created(mut results) => results.pop().unwrap().unwrap(),
        other => panic!("{other:?}"),
    };
    caught_up(r).await;
    created
}

/// Waits (bounded) until the sync hub has folded everything the log holds.
async fn caught_up(r: &Running) {
    for _ in 0..500 {
        if r.server.sync.seq().await.unwrap() >= r.log.head().seq {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the sync hub did not fold the log within 2.5 s");
}

fn csr() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

fn agent() -> SpiffeId {
    SpiffeId::new(AGENT).unwrap()
}

#[tokio::test]
async fn an_agent_request_can_only_shorten_the_jwt_ttl_the_entry_decides() {
    let r = start().await;
    let short = create(&r, entry("/short", Some(60), None)).await;
    let plain = create(&r, entry("/plain", None, None)).await;
    let mint = |e: &RegistrationEntry, ttl: Option<u64>| {
        let (server, id) = (r.server.clone(), e.id.as_str().to_owned());
        async move {
            mint_jwt_for_agent(
                &server,
                &agent(),
                &id,
                vec!["db".into()],
                ttl.map(Duration::from_secs),
                32,
            )
            .await
            .unwrap()
            .1
        }
    };
    // The reported case: ttl = 2^31-1 for an entry whose JWT TTL is 60 s.
    let huge = u64::try_from(i32::MAX).unwrap();
    assert_eq!(mint(&short, Some(huge)).await.expires_at, NOW + 60);
    assert_eq!(mint(&short, Some(30)).await.expires_at, NOW + 30);
    assert_eq!(mint(&short, None).await.expires_at, NOW + 60);
    // No entry TTL: the server default (5 min), which the request may shorten only.
    assert_eq!(mint(&plain, Some(huge)).await.expires_at, NOW + 300);
    assert_eq!(mint(&plain, Some(10)).await.expires_at, NOW + 10);
    r.server.stop().await;
}

#[tokio::test]
async fn admin_requests_are_clamped_to_the_entry_limits_maximum_and_the_ca() {
    let mut s = settings();
    s.entry_limits.max_x509_svid_ttl_secs = 1800;
    s.entry_limits.max_jwt_svid_ttl_secs = 900;
    let r = start_with(s).await;
    let huge = Some(Duration::from_secs(u64::try_from(i32::MAX).unwrap()));
    let x509 = r
        .server
        .authority
        .sign_x509_batch(vec![X509SvidRequest {
            csr_der: csr(),
            spiffe_id: SpiffeId::new("spiffe://example.org/admin/tool").unwrap(),
            dns_names: vec![],
            ttl: huge,
        }])
        .await
        .unwrap();
    assert_eq!(x509[0].as_ref().unwrap().not_after, NOW + 1800);
    let jwt = r
        .server
        .authority
        .mint_jwt_svid(JwtSvidRequest {
            spiffe_id: SpiffeId::new("spiffe://example.org/admin/tool").unwrap(),
            audience: vec!["db".into()],
            ttl: huge,
        })
        .await
        .unwrap();
    assert_eq!(jwt.expires_at, NOW + 900);
    r.server.stop().await;
}

#[tokio::test]
async fn reserved_ids_are_refused_to_admin_mints_but_the_server_gets_its_own() {
    let r = start().await;
    let server_id = SpiffeId::new("spiffe://example.org/spire/server").unwrap();
    let request = || X509SvidRequest {
        csr_der: csr(),
        spiffe_id: server_id.clone(),
        dns_names: vec![],
        ttl: None,
    };
    let minted = r
        .server
        .authority
        .sign_x509_batch(vec![request()])
        .await
        .unwrap();
    assert!(matches!(
        minted[0],
        Err(SvidRejection::ReservedSpiffeId { .. })
    ));
    let jwt = r
        .server
        .authority
        .mint_jwt_svid(JwtSvidRequest {
            spiffe_id: server_id.clone(),
            audience: vec!["agents".into()],
            ttl: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(
        jwt,
        SignError::Rejected(SvidRejection::ReservedSpiffeId { .. })
    ));
    let own = r
        .server
        .authority
        .sign_server_svid(vec![request()])
        .await
        .unwrap();
    assert_eq!(own[0].as_ref().unwrap().spiffe_id, server_id);
    r.server.stop().await;
}

#[tokio::test]
async fn an_expired_entry_is_never_signed_for_even_before_it_is_pruned() {
    let r = start().await;
    let brief = create(&r, entry("/brief", None, Some(NOW + 5))).await;
    let lasting = create(&r, entry("/lasting", None, None)).await;
    let sign = || {
        let server = r.server.clone();
        let items = vec![
            (brief.id.as_str().to_owned(), csr()),
            (lasting.id.as_str().to_owned(), csr()),
        ];
        async move {
            sign_x509_for_agent(&server, &agent(), items, 10)
                .await
                .unwrap()
        }
    };
    let before = sign().await;
    assert!(before.iter().all(Result::is_ok), "{before:?}");

    // 6 s after its expiry (the reported case); no prune has run.
    r.clock.advance(Duration::from_secs(11));
    let after = sign().await;
    match &after[0] {
        Err(e @ ItemError::Expired { expires_at, .. }) => {
            assert_eq!(*expires_at, NOW + 5);
            assert!(e.to_string().contains("expired"), "{e}");
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    assert!(after[1].is_ok());
    let jwt = mint_jwt_for_agent(
        &r.server,
        &agent(),
        brief.id.as_str(),
        vec!["db".into()],
        None,
        32,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&jwt, OpsError::Denied(m) if m.contains("expired")),
        "{jwt:?}"
    );
    r.server.stop().await;
}

#[tokio::test]
async fn agent_jwt_audiences_follow_the_configured_length_not_a_fixed_one() {
    // limits.max_audience_len defaults to 1,024 bytes on both sides (tessera_edge::limits):
    // an agent's request with a 1,000-byte audience is minted, one over the limit refused.
    let r = start().await;
    let db = create(&r, entry("/db", None, None)).await;
    let mint = |audience: String| {
        let server = r.server.clone();
        let id = db.id.as_str().to_owned();
        async move { mint_jwt_for_agent(&server, &agent(), &id, vec![audience], None, 32).await }
    };
    mint("a".repeat(1_000)).await.unwrap();
    let err = mint("a".repeat(1_025)).await.unwrap_err();
    assert!(
        matches!(&err, OpsError::Invalid(m) if m.contains("1024 bytes (limits.max_audiences, limits.max_audience_len)")),
        "{err:?}"
    );
    r.server.stop().await;
}

/// Every event in the log, in order.
async fn events(r: &Running) -> Vec<(u64, ServerEvent)> {
    let mut all = Vec::new();
    r.server
        .log
        .replay(0, |seq, e| all.push((seq, e)))
        .await
        .unwrap();
    all
}

#[tokio::test]
async fn a_prune_is_an_event_that_drops_the_entry_from_open_views_and_replays_the_same() {
    let mut s = settings();
    s.prune_interval = None; // This test runs the round itself.
    let r = start_with(s).await;
    let brief = create(&r, entry("/brief", None, Some(NOW + 5))).await;
    let lasting = create(&r, entry("/lasting", None, None)).await;
    let (snapshot, mut updates) = r.server.sync.connect(agent()).await.unwrap();
    assert_eq!(snapshot.entries.len(), 2);

    // Not yet due: the round changes nothing.
    let head = r.log.head().seq;
    r.server
        .registry
        .actor()
        .send_message(AggregateMsg::Housekeep)
        .unwrap();
    assert_eq!(
        r.server
            .registry
            .command(RegistryCommand::PruneExpired)
            .await
            .unwrap(),
        RegistryReply::Pruned(vec![])
    );
    assert_eq!(r.log.head().seq, head);

    r.clock.advance(Duration::from_secs(6));
    r.server
        .registry
        .actor()
        .send_message(AggregateMsg::Housekeep)
        .unwrap();
    let update = tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("the removal is pushed within 10 s")
        .expect("stream open");
    assert_eq!(update.changes, vec![ViewChange::Remove(brief.id.clone())]);
    let log = events(&r).await;
    assert_eq!(
        log.last().map(|(_, e)| e),
        Some(&ServerEvent::EntryExpired {
            id: brief.id.clone(),
            expires_at: NOW + 5
        })
    );
    assert_eq!(update.seq, log.last().unwrap().0);

    // Replay agrees: the fold of the log is the live state.
    let mut folded = ServerState::default();
    for (_, e) in &log {
        folded.apply(e);
    }
    let live = r
        .server
        .registry
        .read(|reg| reg.iter().cloned().collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(folded.registry.iter().cloned().collect::<Vec<_>>(), live);
    assert_eq!(live, vec![lasting.clone()]);
    // A reconnecting agent's snapshot no longer holds it.
    let (snapshot, _) = r.server.sync.connect(agent()).await.unwrap();
    assert_eq!(snapshot.entries, vec![lasting]);
    r.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_leaves_open_views_when_it_expires_without_anyone_asking() {
    // The system clock and the actor's own timer: the prune comes when the entry expires,
    // not at the next 5-minute round.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let log = Arc::new(LocalLog::in_memory(clock.clone()));
    let server = Server::start(
        settings(),
        log.clone(),
        clock.clone(),
        Arc::new(SeededRandom::new(5)),
    )
    .await
    .unwrap();
    server.authority.tick().await.unwrap();
    let now = clock.now_unix_nanos() / 1_000_000_000;
    server
        .nodes
        .command(NodeCommand::Attested(AttestedAgent {
            id: agent(),
            attestation_type: "x509pop".into(),
            selectors: SelectorSet::parse_all(["x509pop:subject:cn:n1"]).unwrap(),
            svid_serial: "01".into(),
            svid_expires_at: now + 3600,
            attested_at: now,
            can_reattest: true,
        }))
        .await
        .unwrap();
    let r = Running {
        server,
        clock: ManualClock::at_unix_secs(0), // unused here
        log,
    };
    let brief = create(&r, entry("/brief", None, Some(now + 2))).await;
    let (snapshot, mut updates) = r.server.sync.connect(agent()).await.unwrap();
    assert_eq!(snapshot.entries, vec![brief.clone()]);
    let update = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let u = updates.recv().await.expect("stream open");
            if !u.changes.is_empty() {
                return u;
            }
        }
    })
    .await
    .expect("the expired entry is removed from the open view within 10 s");
    assert_eq!(update.changes, vec![ViewChange::Remove(brief.id)]);
    r.server.stop().await;
}

#[tokio::test]
async fn a_join_token_survives_a_failed_attestation_and_is_spent_with_the_agent_record() {
    let r = start().await;
    let token = "tok-0123456789abcdef";
    let agent_id = SpiffeId::new(&format!(
        "spiffe://example.org/spire/agent/join_token/{token}"
    ))
    .unwrap();
    r.server
        .tokens
        .command(TokenCommand::Create {
            token_hash: hash_token(token),
            ttl_secs: 600,
            alias: None,
        })
        .await
        .unwrap();
    let check = || {
        let (tokens, agent_id) = (r.server.tokens.clone(), agent_id.clone());
        async move {
            tokens
                .command(TokenCommand::Consume {
                    token_hash: hash_token(token),
                    agent_id,
                })
                .await
        }
    };
    // The attestation's first step checks the token; its CSR is then refused (or the signing
    // queue is full) and the agent is never recorded: the token is not burnt.
    let head = r.log.head().seq;
    check().await.unwrap();
    assert_eq!(r.log.head().seq, head, "checking records nothing");
    check().await.unwrap();

    // A good CSR: the agent is recorded and the token spent, in one append.
    r.server
        .nodes
        .command(NodeCommand::Attested(AttestedAgent {
            id: agent_id.clone(),
            attestation_type: "join_token".into(),
            selectors: SelectorSet::new(),
            svid_serial: "02".into(),
            svid_expires_at: NOW + 3600,
            attested_at: NOW,
            can_reattest: false,
        }))
        .await
        .unwrap();
    let log = events(&r).await;
    let tail: Vec<&ServerEvent> = log[log.len() - 2..].iter().map(|(_, e)| e).collect();
    assert!(
        matches!(tail[0], ServerEvent::JoinTokenConsumed { .. }),
        "{tail:?}"
    );
    assert!(matches!(tail[1], ServerEvent::AgentAttested(_)), "{tail:?}");
    assert!(matches!(
        check().await,
        Err(CommandError::Rejected(TokenError::Unknown))
    ));
    r.server.stop().await;
}

#[tokio::test]
async fn expired_join_tokens_are_pruned_by_an_event() {
    let mut s = settings();
    s.prune_interval = None;
    let r = start_with(s).await;
    for i in 0..3 {
        r.server
            .tokens
            .command(TokenCommand::Create {
                token_hash: hash_token(&format!("token-{i}-0123456789abcdef")),
                ttl_secs: 60,
                alias: None,
            })
            .await
            .unwrap();
    }
    r.clock.advance(Duration::from_secs(61));
    r.server
        .tokens
        .actor()
        .send_message(AggregateMsg::Housekeep)
        .unwrap();
    let mut pending = usize::MAX;
    for _ in 0..500 {
        pending = r.server.tokens.read(|t| t.len()).await.unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pending, 0, "expired tokens pruned within 2.5 s");
    let expired = events(&r)
        .await
        .into_iter()
        .filter(|(_, e)| matches!(e, ServerEvent::JoinTokenExpired { .. }))
        .count();
    assert_eq!(expired, 3);
    r.server.stop().await;
}

#[tokio::test]
async fn renewals_are_bulk_work_and_a_first_svid_is_signed_when_bulk_work_is_refused() {
    let mut s = settings();
    s.authority.signer.max_queued = 4;
    s.authority.signer.on_demand_reserve = 2;
    let r = start_with(s).await;
    let renewed = create(&r, entry("/renewed", None, None)).await;
    let first = create(&r, entry("/first", None, None)).await;
    let sign = |ids: Vec<&RegistrationEntry>| {
        let server = r.server.clone();
        let items: Vec<(String, Vec<u8>)> = ids
            .into_iter()
            .map(|e| (e.id.as_str().to_owned(), csr()))
            .collect();
        async move {
            sign_x509_for_agent(&server, &agent(), items, 10)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        r.server.renewals.priority(&agent(), &renewed.id, NOW),
        Priority::OnDemand
    );
    assert!(sign(vec![&renewed]).await[0].is_ok());
    assert_eq!(
        r.server.renewals.priority(&agent(), &renewed.id, NOW),
        Priority::Bulk,
        "the agent holds a valid SVID for it: its next request is a renewal"
    );

    // Bulk renewal fills its share of the queue; a first SVID still gets through.
    let held = r
        .server
        .authority
        .signer()
        .admit_as(2, Priority::Bulk)
        .unwrap();
    let out = sign(vec![&renewed, &first]).await;
    assert!(
        matches!(&out[0], Err(ItemError::Busy(m)) if m.contains("max_signing_queue")),
        "{:?}",
        out[0]
    );
    assert!(out[1].is_ok(), "{:?}", out[1]);
    drop(held);
    assert!(sign(vec![&renewed]).await[0].is_ok());
    r.server.stop().await;
}
