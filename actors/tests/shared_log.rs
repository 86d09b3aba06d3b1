//! Several servers writing one log (in process, on one in-memory log: the same optimistic
//! append a PostgreSQL log gives several processes): each folds the others' writes, uniqueness
//! rules hold across them, each rotates and signs with its own CA while the bundle is the
//! union. The PostgreSQL backend and real processes are tested in `api/tests/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::random::SeededRandom;
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::authority::Owner;
use tessera_actors::server::events::AttestedAgent;
use tessera_actors::server::nodes::{NodeCommand, NodeError};
use tessera_actors::server::registry::{
    EntryFilter, EntryRejection, NewEntry, RegistryCommand, RegistryReply,
};
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_actors::server::tokens::{hash_token, TokenCommand};
use tessera_eventlog::{Clock, EventLog, LocalLog, ManualClock};
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

const AGENT: &str = "spiffe://example.org/spire/agent/x509pop/n1";

fn settings(server_id: &str) -> ServerSettings {
    let mut s = ServerSettings::new(TrustDomain::new("example.org").unwrap());
    s.call_timeout = Duration::from_secs(20);
    s.authority.tick_interval = None;
    s.authority.owner = Some(Owner {
        server_id: server_id.into(),
        adopt_unowned: false,
    });
    s
}

fn entry(path: &str, uid: u32) -> NewEntry {
    NewEntry {
        id: None,
        entry: RegistrationEntry {
            id: EntryId::new("unset").unwrap(),
            spiffe_id: SpiffeId::new(&format!("spiffe://example.org{path}")).unwrap(),
            parent_id: SpiffeId::new(AGENT).unwrap(),
            selectors: SelectorSet::parse_all([format!("unix:uid:{uid}").as_str()]).unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: vec![],
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            created_at: 0,
            revision: 0,
        },
    }
}

async fn start(log: &Arc<LocalLog>, settings: ServerSettings, seed: u64) -> Server {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
    Server::start(
        settings,
        log.clone(),
        clock,
        Arc::new(SeededRandom::new(seed)),
    )
    .await
    .unwrap()
}

async fn pair(log: &Arc<LocalLog>) -> (Server, Server) {
    (
        start(log, settings("a"), 1).await,
        start(log, settings("b"), 2).await,
    )
}

type CreateTask = tokio::task::JoinHandle<
    Result<RegistryReply, CommandError<tessera_actors::server::registry::RegistryError>>,
>;

/// (created, refused as already existing) over racing one-entry creates; anything else fails.
async fn tally(tasks: Vec<CreateTask>) -> (usize, usize) {
    let (mut created, mut exists) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(RegistryReply::Created(mut results)) => match results.remove(0) {
                Ok(_) => created += 1,
                Err(EntryRejection::AlreadyExists { .. }) => exists += 1,
                Err(other) => panic!("unexpected rejection: {other}"),
            },
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    (created, exists)
}

async fn entry_count(server: &Server) -> usize {
    server
        .registry
        .read(|r| r.count(&EntryFilter::default()))
        .await
        .unwrap()
}

/// Waits (bounded) until `server` has folded the log up to its head.
async fn caught_up(server: &Server, log: &Arc<LocalLog>, want_entries: usize) {
    for _ in 0..500 {
        if entry_count(server).await == want_entries && server.log.raw().head() == log.head() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server did not fold the shared log within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_created_on_one_server_is_served_by_the_other() {
    let log = Arc::new(LocalLog::in_memory(Arc::new(ManualClock::at_unix_secs(0))));
    let (a, b) = pair(&log).await;
    let reply = a
        .registry
        .command(RegistryCommand::Create(vec![entry("/web", 1)]))
        .await
        .unwrap();
    assert!(
        matches!(&reply, RegistryReply::Created(r) if r[0].is_ok()),
        "{reply:?}"
    );
    // A fresh read folds what the log holds at once, follower or not.
    let seen = b
        .registry
        .read_fresh(|r| r.count(&EntryFilter::default()))
        .await
        .unwrap();
    assert_eq!(seen, 1);
    caught_up(&b, &log, 1).await;
    // And the other way round, after B folded A's write (B decides at the new head).
    let reply = b
        .registry
        .command(RegistryCommand::Create(vec![entry("/db", 2)]))
        .await
        .unwrap();
    assert!(
        matches!(&reply, RegistryReply::Created(r) if r[0].is_ok()),
        "{reply:?}"
    );
    caught_up(&a, &log, 2).await;
    assert!(log.verify().await.unwrap().is_ok());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_creates_on_two_servers_succeed_exactly_once_each() {
    let log = Arc::new(LocalLog::in_memory(Arc::new(ManualClock::at_unix_secs(0))));
    let (a, b) = pair(&log).await;
    // 50 distinct entries, each created 4 times at once: twice through each server.
    let mut tasks = Vec::new();
    for round in 0..4 {
        for i in 0..50u32 {
            let server = if round % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                server
                    .registry
                    .command(RegistryCommand::Create(vec![entry(&format!("/e{i}"), i)]))
                    .await
            }));
        }
    }
    let (created, exists) = tally(tasks).await;
    assert_eq!((created, exists), (50, 150));
    caught_up(&a, &log, 50).await;
    caught_up(&b, &log, 50).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_spent_on_one_server_is_refused_on_the_other() {
    let log = Arc::new(LocalLog::in_memory(Arc::new(ManualClock::at_unix_secs(0))));
    let (a, b) = pair(&log).await;
    let token = "tok-0123456789abcdef";
    a.tokens
        .command(TokenCommand::Create {
            token_hash: hash_token(token),
            ttl_secs: 600,
            alias: None,
        })
        .await
        .unwrap();
    let agent = SpiffeId::new(&format!(
        "spiffe://example.org/spire/agent/join_token/{token}"
    ))
    .unwrap();
    let attested = |server: &Server| {
        let (nodes, agent) = (server.nodes.clone(), agent.clone());
        async move {
            nodes
                .command(NodeCommand::Attested(AttestedAgent {
                    id: agent,
                    attestation_type: "join_token".into(),
                    selectors: SelectorSet::new(),
                    svid_serial: "01".into(),
                    svid_expires_at: 3_600,
                    attested_at: 0,
                    can_reattest: false,
                }))
                .await
        }
    };
    // B may not have folded the creation yet: a refusal is decided again on the log's head.
    attested(&b).await.unwrap();
    // The token is spent with the attestation, on every server: A refuses to check it, and
    // evicting the agent does not make it usable again. (`Consume` only reads A's fold, which
    // follows the log on its own: let it catch up with B's append first. A real attestation on
    // A appends and so decides again on the head.)
    a.tokens.read_fresh(|_| ()).await.unwrap();
    let check = a
        .tokens
        .command(TokenCommand::Consume {
            token_hash: hash_token(token),
            agent_id: agent.clone(),
        })
        .await;
    assert!(matches!(check, Err(CommandError::Rejected(_))), "{check:?}");
    a.nodes
        .command(NodeCommand::Evict(agent.clone()))
        .await
        .unwrap();
    let again = attested(&a).await;
    assert!(
        matches!(
            again,
            Err(CommandError::Rejected(NodeError::JoinToken { .. }))
        ),
        "{again:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_signs_with_its_own_ca_and_both_publish_the_union() {
    let log = Arc::new(LocalLog::in_memory(Arc::new(ManualClock::at_unix_secs(0))));
    // B's settings are kept: its key manager holds its keys across the restart below.
    let b_settings = settings("b");
    let (a, b) = (
        start(&log, settings("a"), 1).await,
        start(&log, b_settings.clone(), 2).await,
    );
    // Both rotate at once: their appends conflict and each catches up and decides again.
    let (ta, tb) = tokio::join!(a.authority.tick(), b.authority.tick());
    ta.unwrap();
    tb.unwrap();
    let (ca_a, ca_b) = (
        a.authority.signer().active_authority_id().unwrap(),
        b.authority.signer().active_authority_id().unwrap(),
    );
    assert_ne!(ca_a, ca_b, "each server has its own CA");
    // Both bundles hold both roots and agree (bounded wait for the folds).
    let mut agreed = None;
    for _ in 0..500 {
        let (ba, bb) = (a.authority.bundle(), b.authority.bundle());
        if let (Some(ba), Some(bb)) = (&ba, &bb) {
            if ba.x509_authorities().len() == 2 && ba == bb {
                agreed = Some(ba.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bundle = agreed.expect("both servers publish a bundle with both CAs");
    assert_eq!(bundle.jwt_authorities().len(), 2);
    let status = a.authority.status().await.unwrap();
    let own: Vec<_> = status.cas.iter().filter(|c| c.own).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].id, ca_a);
    assert_eq!(own[0].server_id.as_deref(), Some("a"));
    let kinds: Vec<String> = log
        .read(1, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.kind.clone())
        .collect();
    assert!(kinds.iter().all(|k| k.starts_with("Server")), "{kinds:?}");
    // A restart of B keeps its own CA (its key is in its key manager) and folds A's.
    b.stop().await;
    let b = start(&log, b_settings, 3).await;
    b.authority.tick().await.unwrap();
    assert_eq!(b.authority.signer().active_authority_id(), Some(ca_b));
    assert_eq!(b.authority.bundle(), Some(bundle));
    a.stop().await;
    b.stop().await;
}

/// The same race on a PostgreSQL log, two handles as two servers' would be: 500 entries, each
/// created at once through both servers (1,000 creates), each created exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_thousand_racing_creates_succeed_once_per_entry() {
    use tessera_eventlog::pg::testing::TestDatabase;
    use tessera_eventlog::pg::PgLog;

    let Some(db) = TestDatabase::create().await.expect("the test database") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
    let mut servers = Vec::new();
    let mut logs = Vec::new();
    for (i, id) in ["a", "b"].into_iter().enumerate() {
        let log = PgLog::open(db.config(dir.path().join(id)), clock.clone())
            .await
            .unwrap();
        let server = Server::start(
            settings(id),
            Arc::new(log.clone()),
            clock.clone(),
            Arc::new(SeededRandom::new(i as u64 + 10)),
        )
        .await
        .unwrap();
        servers.push(server);
        logs.push(log);
    }
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        for server in &servers {
            let server = server.clone();
            tasks.push(tokio::spawn(async move {
                server
                    .registry
                    .command(RegistryCommand::Create(vec![entry(&format!("/e{i}"), i)]))
                    .await
            }));
        }
    }
    let (created, exists) = tally(tasks).await;
    assert_eq!((created, exists), (500, 500));
    for server in &servers {
        let count = server
            .registry
            .read_fresh(|r| r.count(&EntryFilter::default()))
            .await
            .unwrap();
        assert_eq!(count, 500);
    }
    assert!(logs[0].verify().await.unwrap().is_ok());
    for server in &servers {
        server.stop().await;
    }
    for log in &logs {
        log.close().await;
    }
    db.cleanup().await.unwrap();
}
