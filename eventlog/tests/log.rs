//! Black-box tests of the log: appends, group commit, subscriptions, verification, damage,
//! snapshots — against both backends where the behaviour is the backend's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "support/ledger.rs"]
#[allow(dead_code)]
mod ledger;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ledger::{deposit, Ledger};
use tessera_eventlog::store::memory::MemoryStore;
use tessera_eventlog::store::sled::SledStore;
use tessera_eventlog::store::Store;
use tessera_eventlog::{
    AppendCondition, ChainFault, Clock, EventLog, LocalLog, LogError, LogLimits, ManualClock,
    NewRecord, TypedLog,
};

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::at_unix_secs(1_700_000_000))
}

fn rec(i: u64) -> NewRecord {
    NewRecord {
        kind: "Tick".into(),
        schema_version: 1,
        payload: i.to_be_bytes().to_vec(),
    }
}

async fn timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test step took longer than 20 s")
}

#[tokio::test]
async fn appends_get_dense_seqs_and_read_back() {
    let log = LocalLog::in_memory(clock());
    let r1 = log
        .append(vec![rec(1), rec(2)], AppendCondition::Any)
        .await
        .unwrap();
    let r2 = log
        .append(vec![rec(3)], AppendCondition::Any)
        .await
        .unwrap();
    assert_eq!((r1.first_seq, r1.last_seq), (1, 2));
    assert_eq!((r2.first_seq, r2.last_seq), (3, 3));
    assert_eq!(r1.recorded_at, 1_700_000_000_000_000_000);
    let all = log.read(1, 100).await.unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[2].payload, 3u64.to_be_bytes());
    assert_eq!(all[1].prev_hash, all[0].hash);
    assert_eq!(log.head().seq, 3);
    assert_eq!(log.head().hash, all[2].hash);
    assert!(log.read(4, 10).await.unwrap().is_empty());
    assert_eq!(log.read(2, 1).await.unwrap()[0].seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_share_flushes_and_never_interleave_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(LocalLog::open_sled(dir.path(), clock()).unwrap());
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..20u64 {
                let batch = (0..3).map(|k| rec(t * 1000 + i * 10 + k)).collect();
                receipts.push(log.append(batch, AppendCondition::Any).await.unwrap());
            }
            receipts
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.extend(timeout(t).await.unwrap());
    }
    // Each batch got three consecutive seqs; together they tile 1..=960 exactly.
    receipts.sort_by_key(|r| r.first_seq);
    let mut expected_first = 1;
    for r in &receipts {
        assert_eq!(r.first_seq, expected_first);
        assert_eq!(r.last_seq, r.first_seq + 2);
        expected_first = r.last_seq + 1;
    }
    assert_eq!(log.head().seq, 960);
    // Batches of three from the same appender stayed together.
    let all = log.read(1, 1000).await.unwrap();
    for chunk in all.chunks(3) {
        let base = u64::from_be_bytes(chunk[0].payload.clone().try_into().unwrap());
        for (k, r) in chunk.iter().enumerate() {
            assert_eq!(
                u64::from_be_bytes(r.payload.clone().try_into().unwrap()),
                base + k as u64
            );
        }
    }
    assert!(log.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn expect_head_rejects_a_stale_writer() {
    let log = LocalLog::in_memory(clock());
    log.append(vec![rec(1)], AppendCondition::ExpectHead(0))
        .await
        .unwrap();
    let err = log
        .append(vec![rec(2)], AppendCondition::ExpectHead(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Conflict {
                expected: 0,
                actual: 1
            }
        ),
        "{err}"
    );
    log.append(vec![rec(2)], AppendCondition::ExpectHead(1))
        .await
        .unwrap();
    assert_eq!(log.head().seq, 2);
}

#[tokio::test]
async fn limits_give_typed_errors() {
    let store = Arc::new(MemoryStore::new("limits"));
    let limits = LogLimits {
        max_batch_records: 2,
        ..LogLimits::default()
    };
    let log = LocalLog::open(store, clock(), limits).unwrap();
    let err = log
        .append(vec![rec(1), rec(2), rec(3)], AppendCondition::Any)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::BatchTooLarge { len: 3, limit: 2 }),
        "{err}"
    );
    let bad = NewRecord {
        kind: String::new(),
        schema_version: 1,
        payload: vec![],
    };
    let err = log
        .append(vec![bad], AppendCondition::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::InvalidRecord(_)), "{err}");
    assert_eq!(log.head().seq, 0, "rejected batches leave nothing behind");
}

#[tokio::test]
async fn closed_log_refuses_appends() {
    let log = LocalLog::in_memory(clock());
    log.append(vec![rec(1)], AppendCondition::Any)
        .await
        .unwrap();
    log.close();
    let err = log
        .append(vec![rec(2)], AppendCondition::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Closed { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_catches_up_then_follows_without_gap_or_duplicate() {
    let log = Arc::new(LocalLog::in_memory(clock()));
    for i in 0..500 {
        log.append(vec![rec(i)], AppendCondition::Any)
            .await
            .unwrap();
    }
    // Subscribe from the middle while appends keep racing the catch-up.
    let mut sub = log.subscribe(250);
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 500..2_000 {
                log.append(vec![rec(i), rec(i + 10_000)], AppendCondition::Any)
                    .await
                    .unwrap();
            }
        })
    };
    let mut expected = 250;
    while expected <= 3_500 {
        let r = timeout(sub.next()).await.unwrap().unwrap();
        assert_eq!(r.seq, expected, "gap or duplicate");
        expected += 1;
    }
    timeout(writer).await.unwrap();
    assert_eq!(log.head().seq, 3_500);
    // Nothing more until the next commit, which then arrives.
    let pending = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
    assert!(
        pending.is_err(),
        "no record beyond the head may be delivered"
    );
    log.append(vec![rec(1)], AppendCondition::Any)
        .await
        .unwrap();
    assert_eq!(timeout(sub.next()).await.unwrap().unwrap().seq, 3_501);
    // Closing the log ends the subscription after the last record.
    log.close();
    assert!(timeout(sub.next()).await.is_none());
}

#[tokio::test]
async fn tampered_record_fails_verify_and_open_naming_the_seq() {
    let store = Arc::new(MemoryStore::new("tamper"));
    let log = LocalLog::open(store.clone(), clock(), LogLimits::default()).unwrap();
    for i in 0..10 {
        log.append(vec![rec(i)], AppendCondition::Any)
            .await
            .unwrap();
    }
    assert!(log.verify().await.unwrap().is_ok());

    // Rewrite a payload but leave the hash: the record no longer matches its hash.
    store.tamper(4, |r| r.payload = b"forged".to_vec());
    let report = log.verify().await.unwrap();
    let bad = report.fault.clone().expect("verify must fail");
    assert_eq!(bad.seq, 4);
    assert!(matches!(bad.fault, ChainFault::Tampered { .. }), "{bad:?}");
    assert_eq!(report.records_checked, 3);
    assert!(report.to_string().contains("seq 4"), "{report}");

    // Re-seal it consistently: now the next record's link is what breaks.
    store.tamper(4, |r| r.hash = r.expected_hash());
    let bad = log.verify().await.unwrap().fault.expect("verify must fail");
    assert_eq!(bad.seq, 5);
    assert!(
        matches!(bad.fault, ChainFault::BrokenLink { .. }),
        "{bad:?}"
    );

    log.close();
    let err = LocalLog::open(store, clock(), LogLimits::default()).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { seq: 5, .. }), "{err}");
    assert!(
        err.to_string().contains("tamper"),
        "names the location: {err}"
    );
}

#[tokio::test]
async fn sled_log_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LocalLog::open_sled(dir.path(), clock()).unwrap();
        log.append((1..=100).map(rec).collect(), AppendCondition::Any)
            .await
            .unwrap();
        log.close();
    }
    let log = LocalLog::open_sled(dir.path(), clock()).unwrap();
    assert_eq!(log.head().seq, 100);
    let r = log
        .append(vec![rec(101)], AppendCondition::Any)
        .await
        .unwrap();
    assert_eq!(r.first_seq, 101);
    let report = log.verify().await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records_checked, 101);
}

#[tokio::test]
async fn damaged_record_in_the_middle_makes_open_fail_with_seq_and_path() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LocalLog::open_sled(dir.path(), clock()).unwrap();
        log.append((1..=50).map(rec).collect(), AppendCondition::Any)
            .await
            .unwrap();
        log.close();
    }
    {
        // Damage that passes sled's own checksums (bit rot before write, a buggy tool):
        // flip one payload byte of record 20 in place.
        let store = SledStore::open(dir.path()).unwrap();
        let key = 20u64.to_be_bytes();
        let mut value = store.raw_records().get(key).unwrap().unwrap().to_vec();
        let at = value.len() - 70;
        value[at] ^= 0x40;
        store.raw_records().insert(key, value).unwrap();
        store.raw_records().flush().unwrap();
    }
    let err = LocalLog::open_sled(dir.path(), clock()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LogError::Corrupt { seq: 20, .. }), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[tokio::test]
async fn records_lost_below_the_acknowledged_head_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LocalLog::open_sled(dir.path(), clock()).unwrap();
        log.append((1..=30).map(rec).collect(), AppendCondition::Any)
            .await
            .unwrap();
        log.close();
    }
    {
        // What sled's recovery does with a damaged tail: the records are simply gone.
        let store = SledStore::open(dir.path()).unwrap();
        for seq in 25..=30u64 {
            store.raw_records().remove(seq.to_be_bytes()).unwrap();
        }
        store.raw_records().flush().unwrap();
    }
    let err = LocalLog::open_sled(dir.path(), clock()).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Corrupt {
                seq: 25,
                fault: ChainFault::Missing {
                    store_head: 24,
                    marker_head: 30,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn snapshot_plus_tail_equals_full_replay() {
    for backend in ["memory", "sled"] {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = if backend == "sled" {
            Arc::new(SledStore::open(dir.path()).unwrap())
        } else {
            Arc::new(MemoryStore::new("snap"))
        };
        let raw = Arc::new(LocalLog::open(store, clock(), LogLimits::default()).unwrap());
        let log = TypedLog::<Ledger>::new(raw.clone());
        let fold = |balances: &mut BTreeMap<String, u64>, e: Ledger| match e {
            Ledger::Opened { account } => {
                balances.insert(account, 0);
            }
            Ledger::Deposited { account, cents, .. } => {
                *balances.entry(account).or_default() += cents;
            }
            Ledger::Closed { account } => {
                balances.remove(&account);
            }
        };
        let open = |a: &str| Ledger::Opened { account: a.into() };
        log.append(
            &[open("a"), open("b"), deposit("a", 5)],
            AppendCondition::Any,
        )
        .await
        .unwrap();

        // Snapshot after seq 3.
        let mut state = BTreeMap::new();
        let at = log.replay(0, |_, e| fold(&mut state, e)).await.unwrap();
        assert_eq!(at, 3);
        let bytes = tessera_eventlog::typed::encode_state(&state).unwrap();
        raw.save_snapshot(at, bytes).await.unwrap();

        log.append(
            &[
                deposit("b", 7),
                Ledger::Closed {
                    account: "a".into(),
                },
            ],
            AppendCondition::Any,
        )
        .await
        .unwrap();

        let snap = raw
            .latest_snapshot()
            .await
            .unwrap()
            .expect("snapshot stored");
        assert_eq!(snap.seq, 3);
        let mut from_snap: BTreeMap<String, u64> =
            tessera_eventlog::typed::decode_state(snap.seq, &snap.data).unwrap();
        let end = log
            .replay(snap.seq, |_, e| fold(&mut from_snap, e))
            .await
            .unwrap();
        let mut full = BTreeMap::new();
        log.replay(0, |_, e| fold(&mut full, e)).await.unwrap();
        assert_eq!(end, 5, "{backend}");
        assert_eq!(from_snap, full, "{backend}");
        assert_eq!(full, BTreeMap::from([("b".to_string(), 7)]), "{backend}");

        // The same snapshot decoded as a stream (how the server starts).
        let stream = raw
            .latest_snapshot_stream()
            .await
            .unwrap()
            .expect("snapshot stored");
        assert_eq!(stream.seq, 3, "{backend}");
        let streamed: BTreeMap<String, u64> =
            tessera_eventlog::typed::decode_state_stream(stream).unwrap();
        assert_eq!(
            streamed,
            tessera_eventlog::typed::decode_state::<BTreeMap<String, u64>>(3, &snap.data).unwrap(),
            "{backend}"
        );

        let err = raw.save_snapshot(99, vec![]).await.unwrap_err();
        assert!(
            matches!(err, LogError::SnapshotMismatch { seq: 99, .. }),
            "{err}"
        );
    }
}

#[tokio::test]
async fn typed_subscription_decodes_events_in_order() {
    let raw = Arc::new(LocalLog::in_memory(clock()));
    let log = TypedLog::<Ledger>::new(raw);
    log.append(&[deposit("a", 1), deposit("a", 2)], AppendCondition::Any)
        .await
        .unwrap();
    let mut sub = log.subscribe(1);
    assert_eq!(
        timeout(sub.next()).await.unwrap().unwrap(),
        (1, deposit("a", 1))
    );
    assert_eq!(
        timeout(sub.next()).await.unwrap().unwrap(),
        (2, deposit("a", 2))
    );
}

#[tokio::test]
async fn open_check_from_snapshot_covers_the_tail_and_verify_covers_the_rest() {
    let store = Arc::new(MemoryStore::new("anchored"));
    let log = LocalLog::open(store.clone(), clock(), LogLimits::default()).unwrap();
    log.append((1..=20).map(rec).collect(), AppendCondition::Any)
        .await
        .unwrap();
    log.save_snapshot(10, b"state@10".to_vec()).await.unwrap();
    log.close();
    let anchored = LogLimits {
        open_check: tessera_eventlog::OpenCheck::FromLatestSnapshot,
        ..LogLimits::default()
    };

    // Damage before the snapshot: the anchored open does not read it, verify() finds it.
    store.tamper(3, |r| r.payload = b"x".to_vec());
    let log = LocalLog::open(store.clone(), clock(), anchored.clone()).unwrap();
    assert_eq!(log.head().seq, 20);
    assert_eq!(log.verify().await.unwrap().fault.unwrap().seq, 3);
    log.close();
    let err = LocalLog::open(store.clone(), clock(), LogLimits::default()).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { seq: 3, .. }), "{err}");

    // Damage after the snapshot: the anchored open refuses too.
    store.tamper(15, |r| r.payload = b"y".to_vec());
    let err = LocalLog::open(store.clone(), clock(), anchored.clone()).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { seq: 15, .. }), "{err}");

    // A snapshot whose record was rewritten is not trusted as an anchor.
    store.tamper(15, |r| r.payload = 15u64.to_be_bytes().to_vec());
    store.tamper(10, |r| r.payload = b"z".to_vec());
    let err = LocalLog::open(store, clock(), anchored).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { seq: 10, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sled_log_can_be_reopened_at_once_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let log = LocalLog::open_sled(dir.path(), clock()).unwrap();
        let mut sub = log.subscribe(1);
        for _ in 0..20 {
            log.append((0..1_000).map(rec).collect(), AppendCondition::Any)
                .await
                .unwrap();
        }
        assert_eq!(timeout(sub.next()).await.unwrap().unwrap().seq, 1);
        drop(sub);
        log.close();
        drop(log);
        assert!(round < 3);
    }
    let log = LocalLog::open_sled(dir.path(), clock()).unwrap();
    assert_eq!(log.head().seq, 60_000);
}

fn background() -> LogLimits {
    LogLimits {
        check_in_background: true,
        ..LogLimits::default()
    }
}

#[tokio::test]
async fn background_open_check_lets_reads_run_and_gates_appends_on_a_good_log() {
    let store = Arc::new(MemoryStore::new("background-good"));
    let log = LocalLog::open(store.clone(), clock(), LogLimits::default()).unwrap();
    log.append((1..=200).map(rec).collect(), AppendCondition::Any)
        .await
        .unwrap();
    log.close();

    let log = LocalLog::open(store, clock(), background()).unwrap();
    assert_eq!(
        log.head().seq,
        200,
        "the head is known before the check ends"
    );
    assert_eq!(timeout(log.read(1, 500)).await.unwrap().len(), 200);
    timeout(log.opened()).await.unwrap();
    let r = timeout(log.append(vec![rec(201)], AppendCondition::Any))
        .await
        .unwrap();
    assert_eq!(r.first_seq, 201);
    assert!(log.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn background_open_check_reports_damage_and_refuses_appends() {
    let store = Arc::new(MemoryStore::new("background-bad"));
    let log = LocalLog::open(store.clone(), clock(), LogLimits::default()).unwrap();
    log.append((1..=50).map(rec).collect(), AppendCondition::Any)
        .await
        .unwrap();
    log.close();
    store.tamper(17, |r| r.payload = b"forged".to_vec());

    // Open returns at once; the verdict names the damaged record ...
    let log = LocalLog::open(store, clock(), background()).unwrap();
    let err = timeout(log.opened()).await.unwrap_err();
    assert!(matches!(err, LogError::Corrupt { seq: 17, .. }), "{err}");
    // ... and nothing is ever written on top of it.
    let refused = timeout(log.append(vec![rec(51)], AppendCondition::Any))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("open check failed"),
        "{refused}"
    );
    assert_eq!(log.head().seq, 50);
}

#[test]
fn sled_snapshots_are_files_read_newest_first_and_legacy_ones_still_load() {
    use tessera_eventlog::record::Digest32;
    use tessera_eventlog::Snapshot;
    let snap = |seq: u64| Snapshot {
        seq,
        hash: Digest32([seq as u8; 32]),
        data: format!("state@{seq}").into_bytes(),
    };
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("snapshots");
    {
        // A store written before snapshot files: the snapshot is a value in the database,
        // with or without an anchor.
        let store = SledStore::open(dir.path()).unwrap();
        store
            .raw_legacy_snapshots()
            .insert(5u64.to_be_bytes(), snap(5).encode())
            .unwrap();
        assert_eq!(store.latest_snapshot().unwrap(), Some(snap(5)));
        assert_eq!(
            store.latest_snapshot_anchor().unwrap(),
            Some((5, snap(5).hash))
        );
        // A new snapshot goes to a file and supersedes the in-database one.
        store.put_snapshot(&snap(8)).unwrap();
        assert!(store.raw_legacy_snapshots().is_empty());
        assert_eq!(store.latest_snapshot().unwrap(), Some(snap(8)));
        store.put_snapshot(&snap(12)).unwrap();
        store.put_snapshot(&snap(20)).unwrap();
    }
    let names = |d: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&files),
        ["00000000000000000012.snap", "00000000000000000020.snap"],
        "two retained, no temporary left"
    );
    let newest = files.join("00000000000000000020.snap");

    // Reopened: the newest is read, whole or as a stream.
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.latest_snapshot().unwrap(), Some(snap(20)));
    let mut stream = store.latest_snapshot_stream().unwrap().unwrap();
    assert_eq!((stream.seq, stream.hash), (20, snap(20).hash));
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut data).unwrap();
    assert_eq!(data, snap(20).data);
    stream.finish().unwrap();
    drop(store);

    // Damaged data: refused with the file named and the fix, never decoded.
    let good = std::fs::read(&newest).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&newest, &bad).unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        store.latest_snapshot_anchor().unwrap(),
        Some((20, snap(20).hash))
    );
    let err = store.latest_snapshot().unwrap_err().to_string();
    assert!(
        err.contains("00000000000000000020.snap") && err.contains("move it out"),
        "{err}"
    );
    let err = store.latest_snapshot_stream().unwrap_err().to_string();
    assert!(
        err.contains("00000000000000000020.snap") && err.contains("move it out"),
        "the stream checks the whole file before handing out a byte: {err}"
    );
    drop(store);

    // Moved away (or lost): start-up falls back to the previous snapshot.
    std::fs::rename(&newest, dir.path().join("moved.snap")).unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        store.latest_snapshot_anchor().unwrap(),
        Some((12, snap(12).hash))
    );
    assert_eq!(store.latest_snapshot().unwrap(), Some(snap(12)));
    drop(store);

    // A file that names another snapshot than its anchor is skipped too.
    std::fs::copy(files.join("00000000000000000012.snap"), &newest).unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.latest_snapshot().unwrap(), Some(snap(12)));
    assert_eq!(store.latest_snapshot_stream().unwrap().unwrap().seq, 12);
}
