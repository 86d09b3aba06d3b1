//! Black-box tests of the PostgreSQL log against a real server: each test gets its own
//! database (`pg::testing::TestDatabase`, `TESSERA_TEST_PG_URL`), and is skipped with one
//! line when no server is reachable (a failure under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "support/ledger.rs"]
#[allow(dead_code)]
mod ledger;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tessera_eventlog::export::read_export;
use tessera_eventlog::pg::testing::TestDatabase;
use tessera_eventlog::typed::decode;
use tessera_eventlog::{
    AppendCondition, ChainFault, Clock, EventLog, LocalLog, LogError, ManualClock, NewRecord,
    OpenCheck, PgConfig, PgLog, Record,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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

fn payload_of(r: &Record) -> u64 {
    u64::from_be_bytes(r.payload.as_slice().try_into().unwrap())
}

async fn timeout<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test step took longer than 30 s")
}

async fn database() -> Option<TestDatabase> {
    TestDatabase::create().await.expect("test database")
}

async fn open(db: &TestDatabase, dir: &tempfile::TempDir) -> PgLog {
    timeout(PgLog::open(db.config(dir.path()), clock()))
        .await
        .expect("open the PostgreSQL log")
}

async fn sql(db: &TestDatabase) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Waits (bounded) until `log` has seen head `seq`.
async fn until_head(log: &PgLog, seq: u64) {
    timeout(async {
        for _ in 0..600 {
            if log.head().seq >= seq {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("head did not reach {seq}, it is {}", log.head().seq);
    })
    .await;
}

/// Takes exactly `n` records from a subscription, each within the timeout.
async fn take(sub: &mut tessera_eventlog::Subscription, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(timeout(sub.next()).await.expect("stream ended").unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_appended_on_one_server_reach_subscribers_of_another() {
    let Some(db) = database().await else { return };
    let (da, dbd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&db, &da).await;
    let b = open(&db, &dbd).await;
    let mut sub_b = b.subscribe(1);

    let first = timeout(a.append(vec![rec(1), rec(2)], AppendCondition::Any))
        .await
        .unwrap();
    assert_eq!((first.first_seq, first.last_seq), (1, 2));
    for i in 3..=5 {
        timeout(a.append(vec![rec(i)], AppendCondition::Any))
            .await
            .unwrap();
    }
    let got = take(&mut sub_b, 5).await;
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        got.iter().map(payload_of).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(got.iter().all(Record::is_intact));

    // B reads what is in the table, whatever its own head says; A's and B's reads agree.
    let read_b = timeout(b.read(1, 100)).await.unwrap();
    assert_eq!(read_b, timeout(a.read(1, 100)).await.unwrap());
    assert_eq!(read_b, got);

    // B appends after catching up; a subscriber of A from the middle gets catch-up then live.
    until_head(&b, 5).await;
    let mut sub_a = a.subscribe(3);
    timeout(b.append(vec![rec(6), rec(7), rec(8)], AppendCondition::Any))
        .await
        .unwrap();
    let got = take(&mut sub_a, 6).await;
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [3, 4, 5, 6, 7, 8]
    );
    assert_eq!(got[3].prev_hash, got[2].hash);
    let more = take(&mut sub_b, 3).await;
    assert_eq!(more.iter().map(|r| r.seq).collect::<Vec<_>>(), [6, 7, 8]);
    // No duplicate follows: the next item only comes with the next append.
    timeout(a.append(vec![rec(9)], AppendCondition::Any))
        .await
        .unwrap();
    assert_eq!(take(&mut sub_b, 1).await[0].seq, 9);
    assert_eq!(take(&mut sub_a, 1).await[0].seq, 9);

    a.close().await;
    b.close().await;
    // A closed handle's subscriptions end after what it saw.
    assert!(timeout(sub_a.next()).await.is_none());
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_head_conflicts_across_servers_have_one_winner() {
    let Some(db) = database().await else { return };
    let (da, dbd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&db, &da).await;
    let b = open(&db, &dbd).await;
    timeout(a.append(vec![rec(1), rec(2), rec(3)], AppendCondition::Any))
        .await
        .unwrap();
    until_head(&b, 3).await;

    let (ra, rb) = timeout(async {
        tokio::join!(
            a.append(vec![rec(10)], AppendCondition::ExpectHead(3)),
            b.append(vec![rec(20), rec(21)], AppendCondition::ExpectHead(3)),
        )
    })
    .await;
    let (loser, lost, winner_last) = match (&ra, &rb) {
        (Ok(r), Err(e)) => (&b, e.clone(), r.last_seq),
        (Err(e), Ok(r)) => (&a, e.clone(), r.last_seq),
        other => panic!("exactly one must win: {other:?}"),
    };
    match lost {
        LogError::Conflict { expected, actual } => {
            assert_eq!(expected, 3);
            assert_eq!(actual, winner_last);
        }
        other => panic!("the loser gets Conflict, not {other:?}"),
    }
    // The loser reads what it had not seen, decides again and wins on the new head.
    let missed = timeout(loser.read(4, 100)).await.unwrap();
    assert_eq!(missed.last().unwrap().seq, winner_last);
    let retry = timeout(loser.append(vec![rec(30)], AppendCondition::ExpectHead(winner_last)))
        .await
        .unwrap();
    assert_eq!(retry.first_seq, winner_last + 1);
    // A stale expectation on the winner's side is refused too.
    until_head(&a, winner_last + 1).await;
    until_head(&b, winner_last + 1).await;
    let stale = timeout(a.append(vec![rec(40)], AppendCondition::ExpectHead(3))).await;
    assert!(
        matches!(stale, Err(LogError::Conflict { expected: 3, actual }) if actual == winner_last + 1),
        "{stale:?}"
    );
    let report = timeout(a.verify()).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.head.seq, winner_last + 1);
    assert!(a.stats().conflicts + b.stats().conflicts >= 2);
    a.close().await;
    b.close().await;
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_servers_build_one_dense_chain() {
    let Some(db) = database().await else { return };
    let (da, dbd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&db, &da).await;
    let b = open(&db, &dbd).await;
    let mut tasks = Vec::new();
    for (server, log) in [(0u64, a.clone()), (1, b.clone())] {
        for task in 0..4u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u64 {
                    let id = server * 1_000 + task * 100 + i;
                    log.append(vec![rec(id)], AppendCondition::Any)
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        timeout(t).await.unwrap();
    }
    let report = timeout(a.verify()).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.head.seq, 400);
    let all = timeout(b.read(1, 1_000)).await.unwrap();
    assert_eq!(all.len(), 400);
    assert!(all.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
    let ids: BTreeSet<u64> = all.iter().map(payload_of).collect();
    assert_eq!(ids.len(), 400, "every append exactly once");
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.records + sb.records, 400);
    eprintln!("server A {sa:?}\nserver B {sb:?}");
    a.close().await;
    b.close().await;
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_share_transactions() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = open(&db, &dir).await;
    let mut tasks = Vec::new();
    for task in 0..64u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10u64 {
                log.append(vec![rec(task * 10 + i)], AppendCondition::Any)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        timeout(t).await.unwrap();
    }
    let stats = log.stats();
    assert_eq!((stats.appends, stats.records), (640, 640));
    assert!(
        stats.transactions < stats.appends,
        "group commit: {stats:?}"
    );
    assert!(timeout(log.verify()).await.unwrap().is_ok());
    log.close().await;
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_altered_and_deleted_rows() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = open(&db, &dir).await;
    for i in 1..=10 {
        timeout(log.append(vec![rec(i)], AppendCondition::Any))
            .await
            .unwrap();
    }
    assert!(timeout(log.verify()).await.unwrap().is_ok());
    let client = sql(&db).await;

    // A payload byte changed inside the stored record: its hash no longer matches.
    client
        .batch_execute(
            "UPDATE tessera_log SET record = overlay(record placing '\\xff'::bytea from 35 for 1)
             WHERE seq = 4",
        )
        .await
        .unwrap();
    let report = timeout(log.verify()).await.unwrap();
    let bad = report.fault.clone().expect("altered record found");
    assert_eq!(bad.seq, 4, "{report}");
    assert!(matches!(bad.fault, ChainFault::Tampered { .. }), "{report}");
    assert_eq!(report.records_checked, 3);
    // Opening with the full check refuses; the error names the seq.
    let refused = timeout(PgLog::open(db.config(dir.path()), clock())).await;
    assert!(
        matches!(refused, Err(LogError::Corrupt { seq: 4, .. })),
        "{refused:?}"
    );

    // Bytes that are no record at all.
    client
        .batch_execute("UPDATE tessera_log SET record = '\\x0900'::bytea WHERE seq = 4")
        .await
        .unwrap();
    let report = timeout(log.verify()).await.unwrap();
    assert!(
        matches!(
            report.fault,
            Some(tessera_eventlog::BadRecord {
                seq: 4,
                fault: ChainFault::Undecodable(_)
            })
        ),
        "{report}"
    );

    // A server that has not cached it cannot read it either.
    let mut config = db.config(dir.path());
    config.open_check = OpenCheck::Off;
    let unaware = timeout(PgLog::open(config, clock())).await.unwrap();
    let bad_read = timeout(unaware.read(4, 1)).await;
    assert!(
        matches!(bad_read, Err(LogError::Corrupt { seq: 4, .. })),
        "{bad_read:?}"
    );
    unaware.close().await;

    // The tail deleted: the table ends before the head this server saw committed.
    client
        .batch_execute("DELETE FROM tessera_log WHERE seq >= 4")
        .await
        .unwrap();
    let report = timeout(log.verify()).await.unwrap();
    assert!(
        matches!(
            report.fault,
            Some(tessera_eventlog::BadRecord {
                seq: 4,
                fault: ChainFault::Missing { .. }
            })
        ),
        "{report}"
    );

    // A deleted row in the middle of a longer table: SeqGap at its seq.
    log.close().await;
    let db2 = database().await.unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let log2 = open(&db2, &dir2).await;
    timeout(log2.append((1..=10).map(rec).collect(), AppendCondition::Any))
        .await
        .unwrap();
    let client2 = sql(&db2).await;
    client2
        .batch_execute("DELETE FROM tessera_log WHERE seq = 7")
        .await
        .unwrap();
    let report = timeout(log2.verify()).await.unwrap();
    assert!(
        matches!(
            report.fault,
            Some(tessera_eventlog::BadRecord {
                seq: 7,
                fault: ChainFault::SeqGap {
                    expected: 7,
                    found: 8
                }
            })
        ),
        "{report}"
    );
    client2
        .batch_execute("UPDATE tessera_log SET hash = '\\x00' WHERE seq = 2")
        .await
        .unwrap();
    let report = timeout(log2.verify()).await.unwrap();
    let bad = report.fault.expect("hash column disagreement found");
    assert_eq!(bad.seq, 2);
    assert!(
        bad.fault.to_string().contains("hash column"),
        "{}",
        bad.fault
    );
    // A subscriber from the start (on a server that has not cached these records) stops at
    // the damage, with an error naming it.
    let mut config = db2.config(dir2.path());
    config.open_check = OpenCheck::Off;
    let fresh = timeout(PgLog::open(config, clock())).await.unwrap();
    let mut sub = fresh.subscribe(1);
    let got = take(&mut sub, 6).await;
    assert_eq!(got.last().unwrap().seq, 6);
    let err = timeout(sub.next()).await.expect("an error, not the end");
    assert!(
        matches!(err, Err(LogError::Corrupt { seq: 7, .. })),
        "{err:?}"
    );
    fresh.close().await;
    log2.close().await;
    db2.cleanup().await.unwrap();
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once_and_newer_schemas_are_refused() {
    let Some(db) = database().await else { return };
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let opens = futures::future::join_all(
        dirs.iter()
            .map(|d| PgLog::open(db.config(d.path()), clock())),
    );
    let logs: Vec<PgLog> = timeout(opens)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let client = sql(&db).await;
    let version: i32 = client
        .query_one("SELECT version FROM tessera_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, tessera_eventlog::pg::SCHEMA_VERSION);
    timeout(logs[0].append(vec![rec(1)], AppendCondition::Any))
        .await
        .unwrap();
    for log in &logs {
        log.close().await;
    }
    // Opening again changes nothing and keeps the records.
    let again = open(&db, &dirs[0]).await;
    assert_eq!(again.head().seq, 1);
    again.close().await;

    client
        .batch_execute("UPDATE tessera_schema SET version = 99")
        .await
        .unwrap();
    let refused = timeout(PgLog::open(db.config(dirs[0].path()), clock())).await;
    match refused {
        Err(e @ LogError::Storage { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("version 99") && text.contains("newer"),
                "{text}"
            );
        }
        other => panic!("a newer schema is refused: {other:?}"),
    }
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_sled_keeps_every_byte_and_appends_continue() {
    let Some(db) = database().await else { return };
    let sled_dir = tempfile::tempdir().unwrap();
    let manual = ManualClock::at_unix_secs(1_600_000_000);
    let sled = LocalLog::open_sled(sled_dir.path(), Arc::new(manual.clone())).unwrap();
    for i in 0..30u64 {
        sled.append(vec![rec(i), rec(i + 100)], AppendCondition::Any)
            .await
            .unwrap();
        manual.advance(Duration::from_millis(7));
    }
    let dir = tempfile::tempdir().unwrap();
    let pg = open(&db, &dir).await;
    assert_eq!(timeout(pg.import(&sled)).await.unwrap(), 60);
    let from_sled = sled.read(1, 1_000).await.unwrap();
    let from_pg = timeout(pg.read(1, 1_000)).await.unwrap();
    assert_eq!(from_pg, from_sled);
    assert_eq!(pg.head(), sled.head());
    // The stored column is the record's encoding, byte for byte.
    let client = sql(&db).await;
    let row = client
        .query_one("SELECT record FROM tessera_log WHERE seq = 17", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), from_sled[16].encode());
    // A second import is refused; appends continue the imported chain.
    let again = timeout(pg.import(&sled)).await;
    assert!(matches!(again, Err(LogError::Storage { .. })), "{again:?}");
    let next = timeout(pg.append(vec![rec(999)], AppendCondition::ExpectHead(60)))
        .await
        .unwrap();
    assert_eq!(next.first_seq, 61);
    assert!(timeout(pg.verify()).await.unwrap().is_ok());
    pg.close().await;
    sled.close();
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_records_decode_from_postgres_after_import() {
    let Some(db) = database().await else { return };
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bytes = std::fs::read(golden.join("ledger-v001.tlog")).unwrap();
    let exported = read_export(&mut bytes.as_slice()).unwrap();
    // The golden sled directory, copied so the original is never written.
    let sled_dir = tempfile::tempdir().unwrap();
    copy_dir(&golden.join("ledger-v001.sled"), sled_dir.path());
    let sled = LocalLog::open_sled(sled_dir.path(), clock()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = open(&db, &dir).await;
    assert_eq!(timeout(pg.import(&sled)).await.unwrap(), 8);
    sled.close();

    // A second server opening the database reads them as written.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(&db, &other_dir).await;
    let records = timeout(other.read(1, 100)).await.unwrap();
    assert_eq!(records, exported);
    assert_eq!(
        other.head().hash.to_hex(),
        std::fs::read_to_string(golden.join("ledger-v001.head"))
            .unwrap()
            .trim()
    );
    let events: Vec<ledger::Ledger> = records.iter().map(|r| decode(r).unwrap()).collect();
    let expected: Vec<ledger::Ledger> = exported.iter().map(|r| decode(r).unwrap()).collect();
    assert_eq!(events, expected);
    assert_eq!(events.len(), 8);
    pg.close().await;
    other.close().await;
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_local_files_checked_against_the_table() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = open(&db, &dir).await;
    assert!(timeout(log.latest_snapshot()).await.unwrap().is_none());
    timeout(log.append((1..=5).map(rec).collect(), AppendCondition::Any))
        .await
        .unwrap();
    timeout(log.save_snapshot(3, b"state at 3".to_vec()))
        .await
        .unwrap();
    let third = timeout(log.read(3, 1)).await.unwrap().remove(0);
    let snap = timeout(log.latest_snapshot()).await.unwrap().unwrap();
    assert_eq!(
        (snap.seq, snap.hash, &snap.data[..]),
        (3, third.hash, &b"state at 3"[..])
    );
    let stream = timeout(log.latest_snapshot_stream())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stream.seq, stream.len), (3, 10));
    let beyond = timeout(log.save_snapshot(99, vec![])).await;
    assert!(
        matches!(beyond, Err(LogError::SnapshotMismatch { seq: 99, .. })),
        "{beyond:?}"
    );
    log.close().await;

    // Reopening from the snapshot checks only what follows it.
    let mut config = db.config(dir.path());
    config.open_check = OpenCheck::FromLatestSnapshot;
    let reopened = timeout(PgLog::open(config, clock())).await.unwrap();
    assert_eq!(reopened.head().seq, 5);
    reopened.close().await;

    // The same snapshot directory against another history: a mismatch, not a wrong state.
    let other_db = database().await.unwrap();
    let mut config = other_db.config(dir.path());
    config.open_check = OpenCheck::Off;
    let other = timeout(PgLog::open(config, clock())).await.unwrap();
    timeout(other.append((10..=14).map(rec).collect(), AppendCondition::Any))
        .await
        .unwrap();
    let mismatch = timeout(other.latest_snapshot()).await;
    assert!(
        matches!(mismatch, Err(LogError::SnapshotMismatch { seq: 3, .. })),
        "{mismatch:?}"
    );
    other.close().await;
    let mut config = other_db.config(dir.path());
    config.open_check = OpenCheck::FromLatestSnapshot;
    let refused = timeout(PgLog::open(config, clock())).await;
    assert!(
        matches!(refused, Err(LogError::Corrupt { seq: 3, .. })),
        "{refused:?}"
    );
    other_db.cleanup().await.unwrap();
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_promptly_and_appends_resume() {
    let Some(db) = database().await else { return };
    // Nothing listens on a port just released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = PgConfig::new(
        format!("postgres://postgres:secret-password@127.0.0.1:{closed}/test"),
        dir.path(),
    );
    config.connect_timeout = Duration::from_secs(2);
    let refused = timeout(PgLog::open(config.clone(), clock())).await;
    match refused {
        Err(LogError::Unavailable { location, message }) => {
            assert_eq!(location, format!("PostgreSQL at 127.0.0.1:{closed}/test"));
            assert!(!message.contains("secret-password"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(!format!("{config:?}").contains("secret-password"));

    // A server whose database goes away (a proxy in front of it is stopped) answers appends
    // with Unavailable, then appends again once it is back, without reopening.
    let upstream = upstream_of(db.url());
    let mut proxy = Proxy::start(0, upstream.clone()).await;
    let mut config = db.config(dir.path());
    config.url = proxy_url(db.url(), proxy.port);
    config.connect_timeout = Duration::from_secs(2);
    config.statement_timeout = Duration::from_secs(2);
    let log = timeout(PgLog::open(config, clock())).await.unwrap();
    let mut sub = log.subscribe(1);
    timeout(log.append(vec![rec(1)], AppendCondition::Any))
        .await
        .unwrap();
    assert_eq!(take(&mut sub, 1).await[0].seq, 1);

    proxy.stop();
    let down = timeout(log.append(vec![rec(2)], AppendCondition::Any)).await;
    assert!(
        matches!(down, Err(LogError::Unavailable { .. })),
        "{down:?}"
    );
    assert_eq!(log.head().seq, 1);

    let port = proxy.port;
    proxy = Proxy::start(port, upstream).await;
    let back = timeout(async {
        for _ in 0..100 {
            match log.append(vec![rec(2)], AppendCondition::Any).await {
                Ok(receipt) => return receipt,
                Err(LogError::Unavailable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("appends did not resume");
    })
    .await;
    assert_eq!(back.first_seq, 2);
    // The subscription waited through the outage and goes on.
    assert_eq!(take(&mut sub, 1).await[0].seq, 2);
    log.close().await;
    proxy.stop();
    db.cleanup().await.unwrap();
}

fn upstream_of(url: &str) -> (String, u16) {
    let config = tokio_postgres::Config::from_str(url).unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

fn proxy_url(url: &str, port: u16) -> String {
    let config = tokio_postgres::Config::from_str(url).unwrap();
    format!(
        "postgres://{}@127.0.0.1:{port}/{}",
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap()
    )
}

/// A TCP forwarder to the database that a test can stop (every connection cut, the port
/// closed) and start again on the same port.
struct Proxy {
    port: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(port: u16, upstream: (String, u16)) -> Proxy {
        // A port just released may take a moment to be free again.
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => break listener,
                Err(e) if attempts < 100 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind the proxy on port {port}: {e}"),
            }
        };
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(task);
            }
        });
        Proxy {
            port,
            tasks,
            accept,
        }
    }

    fn stop(&self) {
        self.accept.abort();
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
