//! Golden files: logs written once by an earlier build, decoded by every CI run. A change to
//! the record layout, the hash, the export format, bincode's configuration or a stored event
//! variant makes this fail, which is the point: stored logs must decode forever.
//!
//! The files were made once with `cargo test -p tessera-eventlog --test golden -- --ignored
//! make_golden_files` and are never regenerated: a new schema version gets a new file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "support/ledger.rs"]
#[allow(dead_code)]
mod ledger;

use std::path::PathBuf;
use std::sync::Arc;

use ledger::{Ledger, LedgerV1};
use tessera_eventlog::export::{read_export, write_export};
use tessera_eventlog::typed::{decode, encode_state};
use tessera_eventlog::{
    verify_records, AppendCondition, Clock, EventLog, LocalLog, ManualClock, NewRecord,
};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn v1_events() -> Vec<LedgerV1> {
    vec![
        LedgerV1::Opened {
            account: "alice".into(),
        },
        LedgerV1::Deposited {
            account: "alice".into(),
            cents: 1_250,
        },
        LedgerV1::Opened {
            account: "bob".into(),
        },
        LedgerV1::Deposited {
            account: "bob".into(),
            cents: u32::MAX,
        },
        LedgerV1::Closed {
            account: "alice".into(),
        },
    ]
}

fn v2_events() -> Vec<Ledger> {
    vec![
        Ledger::Deposited {
            account: "bob".into(),
            cents: u64::from(u32::MAX) + 1,
            memo: Some("wide".into()),
        },
        Ledger::Opened {
            account: "carol".into(),
        },
        Ledger::Closed {
            account: "bob".into(),
        },
    ]
}

/// What the golden log must decode to, as today's event type.
fn expected() -> Vec<Ledger> {
    vec![
        Ledger::Opened {
            account: "alice".into(),
        },
        Ledger::Deposited {
            account: "alice".into(),
            cents: 1_250,
            memo: None,
        },
        Ledger::Opened {
            account: "bob".into(),
        },
        Ledger::Deposited {
            account: "bob".into(),
            cents: u64::from(u32::MAX),
            memo: None,
        },
        Ledger::Closed {
            account: "alice".into(),
        },
        Ledger::Deposited {
            account: "bob".into(),
            cents: u64::from(u32::MAX) + 1,
            memo: Some("wide".into()),
        },
        Ledger::Opened {
            account: "carol".into(),
        },
        Ledger::Closed {
            account: "bob".into(),
        },
    ]
}

#[test]
fn golden_export_v001_decodes_verifies_and_upcasts() {
    let bytes = std::fs::read(golden("ledger-v001.tlog")).expect("golden file is in the repo");
    let records = read_export(&mut bytes.as_slice()).unwrap();
    assert_eq!(records.len(), 8);
    let report = verify_records(&records);
    assert!(report.is_ok(), "{report}");
    // The hash of the last record pins every byte of the layout and hashing scheme.
    assert_eq!(
        report.head.hash.to_hex(),
        std::fs::read_to_string(golden("ledger-v001.head"))
            .unwrap()
            .trim()
    );
    let versions: Vec<u32> = records.iter().map(|r| r.schema_version).collect();
    assert_eq!(versions, [1, 1, 1, 1, 1, 2, 2, 2]);
    let events: Vec<Ledger> = records.iter().map(|r| decode(r).unwrap()).collect();
    assert_eq!(events, expected());
    assert_eq!(records[0].recorded_at, 1_700_000_000_000_000_000);
    assert_eq!(records[7].kind, "Closed");
    // Re-encoding reproduces the file byte for byte.
    let mut again = Vec::new();
    write_export(&mut again, &records).unwrap();
    assert_eq!(again, bytes);
}

#[test]
fn golden_sled_directory_opens_and_replays() {
    // A sled log directory from the first build, copied so the test never writes the original.
    let src = golden("ledger-v001.sled");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, dir.path());
    let log = LocalLog::open_sled(dir.path(), Arc::new(ManualClock::at_unix_secs(0))).unwrap();
    assert_eq!(log.head().seq, 8);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let records = rt.block_on(log.read(1, 100)).unwrap();
    let events: Vec<Ledger> = records.iter().map(|r| decode(r).unwrap()).collect();
    assert_eq!(events, expected());
    let snap = rt
        .block_on(log.latest_snapshot())
        .unwrap()
        .expect("golden snapshot");
    assert_eq!(snap.seq, 5);
    assert_eq!(snap.data, encode_state(&vec!["bob".to_string()]).unwrap());
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

/// Writes the golden files. Run once; never again for the same version.
#[test]
#[ignore = "writes the golden files; run by hand only when adding a new version"]
fn make_golden_files() {
    let clock = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
    let dir = golden("ledger-v001.sled");
    assert!(!dir.exists(), "golden files are never regenerated");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = LocalLog::open_sled(&dir, clock.clone() as Arc<dyn Clock>).unwrap();
    rt.block_on(async {
        for e in v1_events() {
            let raw = NewRecord {
                kind: e.kind().into(),
                schema_version: 1,
                payload: bincode::serde::encode_to_vec(&e, bincode::config::standard()).unwrap(),
            };
            log.append(vec![raw], AppendCondition::Any).await.unwrap();
            clock.advance(std::time::Duration::from_secs(1));
        }
        log.save_snapshot(5, encode_state(&vec!["bob".to_string()]).unwrap())
            .await
            .unwrap();
        for e in v2_events() {
            let raw = tessera_eventlog::typed::encode(&e).unwrap();
            log.append(vec![raw], AppendCondition::Any).await.unwrap();
            clock.advance(std::time::Duration::from_secs(1));
        }
        let records = log.read(1, 100).await.unwrap();
        let mut out = Vec::new();
        write_export(&mut out, &records).unwrap();
        std::fs::write(golden("ledger-v001.tlog"), out).unwrap();
        std::fs::write(golden("ledger-v001.head"), format!("{}\n", log.head().hash)).unwrap();
    });
    log.close();
}
