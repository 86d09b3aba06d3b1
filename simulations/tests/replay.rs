#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `tessera-sim replay` over a real sled log written as the server writes it: the state at a
//! middle seq or time, text and JSON, snapshots, the log left byte-identical, and each bad
//! input refused by name.

#[path = "replay/log_writer.rs"]
mod log_writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_actors::server::events::ServerEvent;
use tessera_sim::replay::{self, Output, ReplayArgs, ReplayError};

use log_writer::{agent, ca, entry, id, jwt_key, now_secs, LogWriter};

const DAY: Duration = Duration::from_secs(86_400);
const MINUTE: Duration = Duration::from_secs(60);

/// Seq of the last record of the third batch, committed at START + 2 min.
const MIDDLE: u64 = 7;
const HEAD: u64 = 12;

/// A server data dir whose log holds: a CA and a JWT key (seq 1-4), entries 1 and 2 (5-6),
/// agent 1 (7, the middle), entry 1 deleted (8), entry 3 created and a second CA prepared
/// (9-10), the second CA activated and agent 1 banned (11-12); one batch a minute. With
/// `snapshot_at_10`, the server's snapshot after seq 10 is stored too.
async fn server_dir(snapshot_at_10: bool) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let log_dir = data.path().join("log");
    let mut w = LogWriter::create(&log_dir);
    let t = now_secs(&w.clock);
    let ca1 = ca(1, t, DAY);
    let key1 = jwt_key(1, t, DAY);
    w.append(vec![
        ServerEvent::CaPrepared(ca1.clone()),
        ServerEvent::CaActivated {
            authority_id: ca1.authority_id.clone(),
        },
        ServerEvent::JwtKeyPrepared(key1.clone()),
        ServerEvent::JwtKeyActivated {
            kid: key1.kid.clone(),
        },
    ])
    .await;
    w.advance(MINUTE);
    w.append(vec![
        ServerEvent::EntryCreated(entry(1, 1, None)),
        ServerEvent::EntryCreated(entry(2, 1, Some(600))),
    ])
    .await;
    w.advance(MINUTE);
    let seq = w
        .append(vec![ServerEvent::AgentAttested(agent(
            1,
            now_secs(&w.clock),
        ))])
        .await;
    assert_eq!(seq, MIDDLE);
    w.advance(MINUTE);
    w.append(vec![ServerEvent::EntryDeleted {
        id: entry(1, 1, None).id,
    }])
    .await;
    w.advance(MINUTE);
    let ca2 = ca(2, now_secs(&w.clock), DAY);
    w.append(vec![
        ServerEvent::EntryCreated(entry(3, 1, None)),
        ServerEvent::CaPrepared(ca2.clone()),
    ])
    .await;
    if snapshot_at_10 {
        w.snapshot().await;
    }
    w.advance(MINUTE);
    let seq = w
        .append(vec![
            ServerEvent::CaActivated {
                authority_id: ca2.authority_id,
            },
            ServerEvent::AgentBanned {
                agent_id: id("spiffe://example.org/spire/agent/join_token/1"),
            },
        ])
        .await;
    assert_eq!(seq, HEAD);
    w.close(&log_dir);
    data
}

fn args(dir: &Path, at: Option<&str>) -> ReplayArgs {
    ReplayArgs {
        data_dir: Some(dir.to_owned()),
        at: at.map(str::to_owned),
        output: Output::Json,
        limit: 20,
        seed: 1,
        ..ReplayArgs::default()
    }
}

fn json(a: &ReplayArgs) -> Value {
    let mut out = Vec::new();
    replay::run(a, &mut out).unwrap();
    serde_json::from_slice(&out).unwrap()
}

fn entry_ids(v: &Value) -> Vec<String> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn ca_statuses(v: &Value) -> Vec<String> {
    v["authorities"]["x509"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Every file under `dir` with the SHA-256 of its bytes.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for item in std::fs::read_dir(&d).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path, hex::encode(Sha256::digest(bytes)));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_middle_seq_shows_the_state_then_and_the_head_shows_it_now() {
    let data = server_dir(false).await;

    let mid = json(&args(data.path(), Some(&MIDDLE.to_string())));
    assert_eq!(mid["seq"], MIDDLE);
    assert_eq!(mid["head"], HEAD);
    // Entry 1 (deleted later) is there; entry 3 (created later) is not.
    assert_eq!(entry_ids(&mid), ["entry-00000001", "entry-00000002"]);
    assert_eq!(mid["entries"][1]["x509_svid_ttl"], 600);
    assert_eq!(mid["entries"][0]["selectors"][0], "unix:uid:1001");
    assert_eq!(
        mid["entries"][0]["parent_id"],
        "spiffe://example.org/spire/agent/join_token/1"
    );
    assert_eq!(mid["agents"][0]["banned"], false);
    assert_eq!(mid["agents"][0]["svid_expires_at"], "2026-01-01T01:02:00Z");
    assert_eq!(ca_statuses(&mid), ["active"]);
    assert_eq!(mid["authorities"]["jwt"][0]["status"], "active");
    assert_eq!(mid["bundle"]["sequence"], 2);
    assert_eq!(mid["bundle"]["trust_domain"], "example.org");
    assert_eq!(mid["recorded_at"], "2026-01-01T00:02:00Z");
    assert_eq!(mid["from_snapshot"], Value::Null);

    let head = json(&args(data.path(), None));
    assert_eq!(head["seq"], HEAD);
    assert_eq!(entry_ids(&head), ["entry-00000002", "entry-00000003"]);
    assert_eq!(head["agents"][0]["banned"], true);
    assert_eq!(ca_statuses(&head), ["old", "active"]);
    assert_eq!(
        head["bundle"]["x509_authorities"].as_array().unwrap().len(),
        2
    );
    assert_eq!(head["counts"]["banned_agents"], 1);

    // The log dir itself is accepted as well as the data dir.
    let same = json(&args(&data.path().join("log"), Some("7")));
    assert_eq!(entry_ids(&same), entry_ids(&mid));
}

#[tokio::test]
async fn a_time_replays_to_the_last_record_committed_at_or_before_it() {
    let data = server_dir(false).await;
    // Batch 3 (seq 7) was committed at 00:02:00, batch 4 (seq 8) at 00:03:00.
    let v = json(&args(data.path(), Some("2026-01-01T00:02:30Z")));
    assert_eq!(v["seq"], MIDDLE);
    let v = json(&args(data.path(), Some("2026-01-01T01:03:00+01:00")));
    assert_eq!(v["seq"], 8);
    let v = json(&args(data.path(), Some("2026-01-01T00:02:59.999999999Z")));
    assert_eq!(v["seq"], MIDDLE);
    let v = json(&args(data.path(), Some("2027-01-01T00:00:00Z")));
    assert_eq!(v["seq"], HEAD);
}

#[tokio::test]
async fn a_snapshot_at_or_before_the_target_is_used_and_changes_nothing() {
    let plain = server_dir(false).await;
    let snap = server_dir(true).await;
    for at in ["7", "10", "11", "12"] {
        let a = json(&args(plain.path(), Some(at)));
        let b = json(&args(snap.path(), Some(at)));
        let used = at.parse::<u64>().unwrap() >= 10;
        assert_eq!(
            b["from_snapshot"],
            if used { Value::from(10) } else { Value::Null },
            "--at {at}"
        );
        for key in [
            "entries",
            "agents",
            "authorities",
            "bundle",
            "counts",
            "seq",
            "recorded_at",
        ] {
            assert_eq!(a[key], b[key], "--at {at}: {key}");
        }
    }
}

#[tokio::test]
async fn the_log_is_byte_identical_after_replays() {
    let data = server_dir(true).await;
    let before = fingerprint(data.path());
    assert!(
        before
            .keys()
            .any(|p| p.to_string_lossy().contains("snapshots")),
        "{before:?}"
    );
    for at in [None, Some("3"), Some("11"), Some("2026-01-01T00:02:30Z")] {
        json(&args(data.path(), at));
        let mut text = args(data.path(), at);
        text.output = Output::Text;
        replay::run(&text, &mut Vec::new()).unwrap();
    }
    assert_eq!(fingerprint(data.path()), before);
}

#[tokio::test]
async fn text_puts_counts_first_and_caps_long_tables() {
    let data = server_dir(false).await;
    let mut a = args(data.path(), Some("7"));
    a.output = Output::Text;
    a.limit = 1;
    let mut out = Vec::new();
    replay::run(&a, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let entries_count = text.find("Entries:    2").expect(&text);
    let table = text.find("SPIFFE ID").expect(&text);
    assert!(entries_count < table, "{text}");
    assert!(text.contains("seq 7 of 12"), "{text}");
    assert!(text.contains("entry-00000001"), "{text}");
    assert!(!text.contains("entry-00000002"), "{text}");
    assert!(text.contains("... and 1 more"), "{text}");
    a.limit = 0;
    let mut out = Vec::new();
    replay::run(&a, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("entry-00000002") && !text.contains("more"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_by_name() {
    let data = server_dir(false).await;
    let err = |a: ReplayArgs| replay::run(&a, &mut Vec::new()).unwrap_err();

    let e = err(args(&data.path().join("absent"), None));
    assert!(matches!(e, ReplayError::DataDir { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let e = err(args(empty.path(), None));
    assert!(e.to_string().contains("is empty"), "{e}");

    std::fs::write(empty.path().join("notes.txt"), "hello").unwrap();
    let e = err(args(empty.path(), None));
    assert!(matches!(e, ReplayError::NotALog { .. }), "{e}");
    assert!(e.to_string().contains("not a Tessera log"), "{e}");

    let e = err(args(data.path(), Some("13")));
    assert!(
        matches!(e, ReplayError::BeyondHead { at: 13, head: 12 }),
        "{e}"
    );
    assert!(e.to_string().contains("from 1 to 12"), "{e}");

    for bad in ["last tuesday", "2026-02-30T25:00:00Z", "0"] {
        let e = err(args(data.path(), Some(bad)));
        assert!(matches!(e, ReplayError::BadAt { .. }), "{bad}: {e}");
    }

    let e = err(args(data.path(), Some("2025-01-01T00:00:00Z")));
    assert!(matches!(e, ReplayError::BeforeFirst { .. }), "{e}");
    assert!(e.to_string().contains("2026-01-01T00:00:00Z"), "{e}");

    let e = err(ReplayArgs::default());
    assert!(matches!(e, ReplayError::Usage(_)), "{e}");

    // A sled database with no records: an empty log, said so.
    let fresh = tempfile::tempdir().unwrap();
    let w = LogWriter::create(&fresh.path().join("log"));
    w.close(&fresh.path().join("log"));
    let e = err(args(fresh.path(), None));
    assert!(matches!(e, ReplayError::EmptyLog { .. }), "{e}");
}

/// A small recorded fleet: a CA of 2 hours, 3 agents with 5 entries each (no TTL of their
/// own), one entry deleted after 90 minutes.
async fn recorded_fleet() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let log_dir = data.path().join("log");
    let mut w = LogWriter::create(&log_dir);
    let t = now_secs(&w.clock);
    let ca1 = ca(1, t, Duration::from_secs(2 * 3600));
    w.append(vec![
        ServerEvent::CaPrepared(ca1.clone()),
        ServerEvent::CaActivated {
            authority_id: ca1.authority_id,
        },
    ])
    .await;
    w.advance(MINUTE);
    for a in 1..=3u64 {
        let mut batch = vec![ServerEvent::AgentAttested(agent(a, now_secs(&w.clock)))];
        for e in 0..5 {
            batch.push(ServerEvent::EntryCreated(entry(a * 10 + e, a, None)));
        }
        w.append(batch).await;
    }
    w.advance(Duration::from_secs(90 * 60));
    w.append(vec![ServerEvent::EntryDeleted {
        id: entry(10, 1, None).id,
    }])
    .await;
    w.close(&log_dir);
    data
}

fn what_if(dir: &Path, settings: &[&str]) -> Value {
    let mut a = args(dir, None);
    a.what_if = settings.iter().map(|s| (*s).to_owned()).collect();
    json(&a)
}

#[tokio::test]
async fn what_if_a_shorter_svid_ttl_signs_about_four_times_as_much() {
    let data = recorded_fleet().await;
    let before = fingerprint(data.path());
    let v = what_if(data.path(), &["default_x509_svid_ttl=15m"]);
    assert_eq!(fingerprint(data.path()), before);
    assert_eq!(v["scripted_facts"], 19, "{v:#}");
    assert!(
        v["baseline_settings"]["ca_ttl"]
            .as_str()
            .unwrap()
            .starts_with("2h "),
        "{v:#}"
    );
    let (base, changed) = (&v["baseline"], &v["what_if"]);
    assert_eq!(base["violation"], Value::Null, "{v:#}");
    assert_eq!(changed["violation"], Value::Null, "{v:#}");
    assert!(base["signatures"].as_u64().unwrap() > 0, "{v:#}");
    let ratio = v["difference"]["signatures_ratio"].as_f64().unwrap();
    assert!((3.0..=5.0).contains(&ratio), "ratio {ratio}: {v:#}");

    // Text, for people.
    let mut a = args(data.path(), None);
    a.what_if = vec!["default_x509_svid_ttl=15m".into()];
    a.output = Output::Text;
    let mut out = Vec::new();
    replay::run(&a, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("signatures") && text.contains("(x"), "{text}");
}

#[tokio::test]
async fn what_if_a_broken_setting_reports_the_violation_and_bad_keys_are_named() {
    let data = recorded_fleet().await;
    // A one-minute CA that signs the moment it is prepared: its SVIDs reach agents before it
    // reaches their bundles.
    let v = what_if(data.path(), &["ca_ttl=1m", "prepare_at=5/6"]);
    assert_eq!(v["baseline"]["violation"], Value::Null, "{v:#}");
    assert_eq!(
        v["what_if"]["violation"]["checker"], "ca_in_bundle_before_use",
        "{v:#}"
    );
    assert!(v["what_if"]["violation"]["agent"].is_string(), "{v:#}");
    assert_eq!(v["difference"]["new_violation"], true, "{v:#}");

    let err = |settings: &[&str]| {
        let mut a = args(data.path(), None);
        a.what_if = settings.iter().map(|s| (*s).to_owned()).collect();
        replay::run(&a, &mut Vec::new()).unwrap_err()
    };
    let e = err(&["ca_tll=12h"]);
    assert!(matches!(e, ReplayError::WhatIf(_)), "{e}");
    assert!(e.to_string().contains("ca_tll"), "{e}");
    let e = err(&["ca_ttl"]);
    assert!(e.to_string().contains("KEY=VALUE"), "{e}");

    // Up to seq 4 the log holds only the authority: no fleet to re-run, said so.
    let early = server_dir(false).await;
    let mut a = args(early.path(), Some("4"));
    a.what_if = vec!["ca_ttl=12h".into()];
    let e = replay::run(&a, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("no fleet"), "{e}");
}

/// Rows of the PostgreSQL log, digested: equal before and after a replay proves it wrote
/// nothing there.
async fn pg_digest(url: &str) -> (i64, String) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(encode(record, 'hex'), '' ORDER BY seq)), '') FROM tessera_log",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_log_replays_in_a_read_only_session() {
    use std::sync::Arc;
    use tessera_eventlog::pg::testing::TestDatabase;
    use tessera_eventlog::{AppendCondition, ManualClock, PgLog, TypedLog};

    let Some(db) = TestDatabase::create().await.unwrap() else {
        return; // no PostgreSQL here (TestDatabase said so on stderr)
    };
    let snaps = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix_secs(log_writer::START);
    let log = PgLog::open(db.config(snaps.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    let typed = TypedLog::<ServerEvent>::new(Arc::new(log.clone()));
    let ca1 = ca(1, now_secs(&clock), DAY);
    for batch in [
        vec![
            ServerEvent::CaPrepared(ca1.clone()),
            ServerEvent::CaActivated {
                authority_id: ca1.authority_id.clone(),
            },
        ],
        vec![
            ServerEvent::EntryCreated(entry(1, 1, None)),
            ServerEvent::EntryCreated(entry(2, 1, None)),
        ],
        vec![ServerEvent::EntryDeleted {
            id: entry(1, 1, None).id,
        }],
    ] {
        typed.append(&batch, AppendCondition::Any).await.unwrap();
        clock.advance(MINUTE);
    }
    log.close().await;
    let before = pg_digest(db.url()).await;
    assert_eq!(before.0, 5);

    let url = db.url().to_owned();
    let run = move |at: Option<&str>| {
        let a = ReplayArgs {
            database_url: Some(url.clone()),
            at: at.map(str::to_owned),
            output: Output::Json,
            ..ReplayArgs::default()
        };
        json(&a)
    };
    let (mid, head) = tokio::task::spawn_blocking(move || (run(Some("4")), run(None)))
        .await
        .unwrap();
    assert_eq!(entry_ids(&mid), ["entry-00000001", "entry-00000002"]);
    assert_eq!(entry_ids(&head), ["entry-00000002"]);
    assert_eq!(head["seq"], 5);
    assert_eq!(ca_statuses(&head), ["active"]);
    assert_eq!(pg_digest(db.url()).await, before);

    // A database with no Tessera log in it is named as such.
    let Some(empty) = TestDatabase::create().await.unwrap() else {
        return;
    };
    let url = empty.url().to_owned();
    let e = tokio::task::spawn_blocking(move || {
        let a = ReplayArgs {
            database_url: Some(url),
            ..ReplayArgs::default()
        };
        replay::run(&a, &mut Vec::new()).unwrap_err()
    })
    .await
    .unwrap();
    assert!(matches!(e, ReplayError::NotALog { .. }), "{e}");
    empty.cleanup().await.unwrap();
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_running_servers_directory_is_read_through_a_copy() {
    let data = tempfile::tempdir().unwrap();
    let log_dir = data.path().join("log");
    // The writer keeps sled open (and its lock held), as a running server does.
    let mut w = LogWriter::create(&log_dir);
    w.append(vec![ServerEvent::EntryCreated(entry(1, 1, None))])
        .await;
    w.append(vec![ServerEvent::EntryCreated(entry(2, 1, None))])
        .await;
    let v = json(&args(data.path(), None));
    assert_eq!(v["seq"], 2);
    assert_eq!(entry_ids(&v), ["entry-00000001", "entry-00000002"]);
    // The server goes on writing after the replay.
    assert_eq!(
        w.append(vec![ServerEvent::EntryDeleted {
            id: entry(1, 1, None).id,
        }])
        .await,
        3
    );
    w.close(&log_dir);
    assert_eq!(
        entry_ids(&json(&args(data.path(), None))),
        ["entry-00000002"]
    );
}

#[tokio::test]
async fn the_servers_config_file_says_where_the_log_is() {
    let data = server_dir(false).await;
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("server.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ntrust_domain = \"example.org\"\ndata_dir = {:?}\n",
            data.path().display().to_string()
        ),
    )
    .unwrap();
    let a = ReplayArgs {
        config: Some(path),
        at: Some(MIDDLE.to_string()),
        output: Output::Json,
        ..ReplayArgs::default()
    };
    assert_eq!(entry_ids(&json(&a)), ["entry-00000001", "entry-00000002"]);
    let both = ReplayArgs {
        data_dir: Some(data.path().to_owned()),
        ..a
    };
    let e = replay::run(&both, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, ReplayError::Usage(_)), "{e}");
}

#[tokio::test]
async fn an_altered_record_is_named_and_the_state_before_it_still_replays() {
    use tessera_eventlog::store::sled::SledStore;
    use tessera_eventlog::Record;

    let data = server_dir(false).await;
    let log_dir = data.path().join("log");
    {
        // Tamper with record 5 (entry 1 created) as an attacker with disk access would:
        // another payload under the same hash.
        let store = SledStore::open(&log_dir).unwrap();
        let raw = store.raw_records();
        let bytes = raw.get(5u64.to_be_bytes()).unwrap().unwrap();
        let mut record = Record::decode(&bytes).unwrap();
        let last = record.payload.len() - 1;
        record.payload[last] ^= 1;
        raw.insert(5u64.to_be_bytes(), record.encode()).unwrap();
        raw.flush().unwrap();
    }
    let db = std::fs::File::open(log_dir.join("sled").join("db")).unwrap();
    db.lock().unwrap();
    db.unlock().unwrap();

    let e = replay::run(&args(data.path(), None), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            e,
            ReplayError::Damaged {
                seq: 5,
                before: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--at 4"), "{e}");
    let v = json(&args(data.path(), Some("4")));
    assert_eq!(v["seq"], 4);
    assert_eq!(ca_statuses(&v), ["active"]);
}
