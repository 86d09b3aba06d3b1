//! Wiring of the server actors (the domain rules are tested given/when/then in the modules):
//! persist before reply, restart replays to the same state, snapshots shorten replay, sync
//! streams see committed changes, bounds give typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::random::SeededRandom;
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::events::AttestedAgent;
use tessera_actors::server::nodes::NodeCommand;
use tessera_actors::server::registry::{EntryFilter, NewEntry, RegistryCommand, RegistryReply};
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_actors::server::sync::ViewChange;
use tessera_eventlog::{Clock, EventLog, LocalLog, ManualClock};
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

const AGENT: &str = "spiffe://example.org/spire/agent/x509pop/n1";

fn settings() -> ServerSettings {
    let mut s = ServerSettings::new(TrustDomain::new("example.org").unwrap());
    s.call_timeout = Duration::from_secs(20);
    // Rotation only when a test asks, so the log holds exactly what each test appends.
    s.authority.tick_interval = None;
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

async fn start(log: &Arc<LocalLog>, settings: ServerSettings) -> Server {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
    Server::start(settings, log.clone(), clock, Arc::new(SeededRandom::new(7)))
        .await
        .unwrap()
}

async fn create(server: &Server, items: Vec<NewEntry>) -> Vec<RegistrationEntry> {
    match server
        .registry
        .command(RegistryCommand::Create(items))
        .await
        .unwrap()
    {
        RegistryReply::Created(results) => results.into_iter().map(|r| r.unwrap()).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reply_comes_after_the_event_is_durable_and_restart_replays_it() {
    let log = Arc::new(LocalLog::in_memory(Arc::new(ManualClock::at_unix_secs(0))));
    let server = start(&log, settings()).await;
    let created = create(&server, vec![entry("/a", 1), entry("/b", 2)]).await;
    // Acknowledged means in the log.
    assert_eq!(log.head().seq, 2);
    server.stop().await;

    let server = start(&log, settings()).await;
    let count = server
        .registry
        .read(|r| r.count(&EntryFilter::default()))
        .await
        .unwrap();
    assert_eq!(count, 2);
    let id = created[0].id.clone();
    let back = server
        .registry
        .read(move |r| r.get(&id).cloned())
        .await
        .unwrap();
    assert_eq!(back.as_ref(), Some(&created[0]));
    server.stop().await;
}

#[tokio::test]
async fn snapshot_then_tail_restores_the_same_state() {
    // In memory (the snapshot streams from a buffer) and on sled (from its file).
    let dir = tempfile::tempdir().unwrap();
    let clock = || Arc::new(ManualClock::at_unix_secs(0));
    let logs = [
        Arc::new(LocalLog::in_memory(clock())),
        Arc::new(LocalLog::open_sled(dir.path(), clock()).unwrap()),
    ];
    for log in logs {
        let mut s = settings();
        s.snapshot_every = 0;
        let server = start(&log, s.clone()).await;
        create(&server, vec![entry("/a", 1)]).await;
        // Wait until the journal has folded seq 1, then snapshot.
        for _ in 0..200 {
            if server.snapshot_now().await.unwrap() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        create(&server, vec![entry("/b", 2)]).await;
        let entries_before = server
            .registry
            .read(|r| r.iter().cloned().collect::<Vec<_>>())
            .await
            .unwrap();
        let bundle_before = server.authority.bundle();
        server.stop().await;
        let snap = log
            .latest_snapshot()
            .await
            .unwrap()
            .expect("snapshot stored");
        assert_eq!(snap.seq, 1);

        let server = start(&log, s).await;
        let entries_after = server
            .registry
            .read(|r| r.iter().cloned().collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(
            entries_after.len(),
            2,
            "snapshot (1 entry) + tail (1 entry)"
        );
        assert_eq!(entries_after, entries_before);
        assert_eq!(server.authority.bundle(), bundle_before);
        server.stop().await;
        log.close();
    }
}

#[tokio::test]
async fn sync_stream_gets_snapshot_then_live_changes_for_its_agent_only() {
    let log = Arc::new(LocalLog::in_memory(Arc::new(ManualClock::at_unix_secs(0))));
    let server = start(&log, settings()).await;
    server
        .nodes
        .command(NodeCommand::Attested(AttestedAgent {
            id: SpiffeId::new(AGENT).unwrap(),
            attestation_type: "x509pop".into(),
            selectors: SelectorSet::parse_all(["x509pop:subject:cn:n1"]).unwrap(),
            svid_serial: "01".into(),
            svid_expires_at: 1_700_003_600,
            attested_at: 1_700_000_000,
            can_reattest: true,
        }))
        .await
        .unwrap();
    let first = create(&server, vec![entry("/a", 1)]).await;
    // Wait until the hub has folded what was acknowledged.
    for _ in 0..500 {
        if server.sync.seq().await.unwrap() >= log.head().seq {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (snapshot, mut updates) = server
        .sync
        .connect(SpiffeId::new(AGENT).unwrap())
        .await
        .unwrap();
    assert_eq!(snapshot.entries, first);
    assert_eq!(snapshot.seq, log.head().seq);

    let second = create(&server, vec![entry("/b", 2)]).await;
    let update = tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("update within 10 s")
        .expect("stream open");
    assert_eq!(update.changes, vec![ViewChange::Upsert(second[0].clone())]);
    assert_eq!(update.seq, log.head().seq);

    let other = SpiffeId::new("spiffe://example.org/spire/agent/x509pop/n2").unwrap();
    let (snapshot, _) = server.sync.connect(other.clone()).await.unwrap();
    assert!(snapshot.entries.is_empty(), "an unknown agent sees nothing");
    let authorised = server
        .sync
        .authorise(other, vec![first[0].id.clone()])
        .await
        .unwrap();
    assert!(authorised[0].is_err(), "and may sign nothing");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_bound_gives_overloaded() {
    let log = Arc::new(LocalLog::in_memory(Arc::new(ManualClock::at_unix_secs(0))));
    let mut s = settings();
    s.max_in_flight = 1;
    let server = start(&log, s).await;
    // Occupy the only slot with a read that waits until released.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let registry = server.registry.clone();
    let blocked = tokio::spawn(async move {
        registry
            .read(move |_| {
                let _ = release_rx.recv_timeout(Duration::from_secs(10));
            })
            .await
    });
    for _ in 0..200 {
        if server.registry.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = server.registry.read(|r| r.len()).await.unwrap_err();
    assert!(
        matches!(err, CommandError::Overloaded { limit: 1, .. }),
        "{err}"
    );
    release_tx.send(()).unwrap();
    blocked.await.unwrap().unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_releases_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log =
        Arc::new(LocalLog::open_sled(dir.path(), Arc::new(ManualClock::at_unix_secs(0))).unwrap());
    let store = Arc::downgrade(log.store());
    let mut s = settings();
    s.authority.tick_interval = Some(Duration::from_secs(10));
    let server = start(&log, s).await;
    // Rotation (key generation off-thread, CA events persisted) and a create, then stop.
    server.authority.tick().await.unwrap();
    create(&server, vec![entry("/a", 1)]).await;
    server.stop().await;
    drop(server);
    log.close();
    drop(log);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.upgrade().is_none(), "the store outlived the server");
}

async fn hub_caught_up(server: &Server, log: &Arc<LocalLog>) {
    for _ in 0..500 {
        if server.sync.seq().await.unwrap() >= log.head().seq {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the sync hub did not fold the log within 2.5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resumes_after_the_cursor_within_the_window_else_snapshots() {
    use tessera_actors::server::sync_hub::SyncStart;
    let log = Arc::new(LocalLog::in_memory(Arc::new(ManualClock::at_unix_secs(0))));
    let mut s = settings();
    s.sync_resume_window = 3;
    let server = start(&log, s).await;
    let agent = SpiffeId::new(AGENT).unwrap();
    server
        .nodes
        .command(NodeCommand::Attested(AttestedAgent {
            id: agent.clone(),
            attestation_type: "x509pop".into(),
            selectors: SelectorSet::parse_all(["x509pop:subject:cn:n1"]).unwrap(),
            svid_serial: "01".into(),
            svid_expires_at: 1_700_003_600,
            attested_at: 1_700_000_000,
            can_reattest: true,
        }))
        .await
        .unwrap();
    let a = create(&server, vec![entry("/a", 1)]).await;
    hub_caught_up(&server, &log).await;
    // Given an agent that applied everything up to `cursor` and disconnected ...
    let cursor = log.head().seq;
    let b = create(&server, vec![entry("/b", 2)]).await;
    let deleted = server
        .registry
        .command(RegistryCommand::Delete(vec![a[0].id.clone()]))
        .await
        .unwrap();
    assert!(matches!(deleted, RegistryReply::Deleted(_)));
    hub_caught_up(&server, &log).await;

    // ... when it reconnects with that cursor, it gets exactly what it missed, in order.
    let (start, _) = server
        .sync
        .connect_from(agent.clone(), cursor)
        .await
        .unwrap();
    let SyncStart::Resume {
        cursor: from,
        missed,
    } = start
    else {
        panic!("expected a resumption, got {start:?}");
    };
    assert_eq!(from, cursor);
    let changes: Vec<ViewChange> = missed.iter().flat_map(|u| u.changes.clone()).collect();
    assert_eq!(
        changes,
        vec![
            ViewChange::Upsert(b[0].clone()),
            ViewChange::Remove(a[0].id.clone())
        ]
    );
    assert_eq!(missed.last().map(|u| u.seq), Some(log.head().seq));

    // A current cursor resumes with nothing to catch up on.
    let (start, _) = server
        .sync
        .connect_from(agent.clone(), log.head().seq)
        .await
        .unwrap();
    assert!(matches!(start, SyncStart::Resume { ref missed, .. } if missed.is_empty()));

    // Once more changes than the window holds have committed, the old cursor gets a snapshot
    // (as does a cursor from the future, or none).
    create(
        &server,
        vec![entry("/c", 3), entry("/d", 4), entry("/e", 5)],
    )
    .await;
    hub_caught_up(&server, &log).await;
    for stale in [cursor, log.head().seq + 10, 0] {
        let (start, _) = server
            .sync
            .connect_from(agent.clone(), stale)
            .await
            .unwrap();
        let SyncStart::Snapshot(snapshot) = start else {
            panic!("cursor {stale}: expected a snapshot, got {start:?}");
        };
        assert_eq!(snapshot.entries.len(), 4, "b, c, d, e");
        assert_eq!(snapshot.seq, log.head().seq);
    }
    server.stop().await;
}
