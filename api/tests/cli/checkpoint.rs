//! Signed checkpoints (issue 14 §3) against a `tessera-server` process: the server signs the
//! head every 3 records (config `[audit]`), `events checkpoint --output json` saves it as an
//! anchor, `events verify --anchor` proves the log still holds it; then the stopped server's
//! sled log is cut short before the anchor, or rewritten (and re-chained) before it, and the
//! same verbs name the seq.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tessera_eventlog::store::sled::SledStore;
use tessera_eventlog::store::Store;
use tessera_eventlog::{Digest32, NewRecord, Record};

use crate::support::{cli, fails, ok, ok_json, Deadline, ServerProc, Workspace};

/// A checkpoint every 3 records, none by time.
const EVERY_3: &str = "[audit]\ncheckpoint_every_records = 3\ncheckpoint_interval = \"0s\"\n";
/// No checkpoints: the restarted server appends nothing of its own to the damaged log.
const OFF: &str = "[audit]\ncheckpoint_every_records = 0\ncheckpoint_interval = \"0s\"\n";

fn start(ws: &Workspace, config: &str) -> ServerProc {
    let path = ws.path().join("server.toml");
    std::fs::write(&path, config).unwrap();
    ws.start_with(&["--config", path.to_str().unwrap()])
}

fn create_entries(s: &Path, names: &[&str]) {
    for name in names {
        ok(
            s,
            &[
                "entry",
                "create",
                "--spiffeID",
                &format!("spiffe://example.org/{name}"),
                "--parentID",
                "spiffe://example.org/p",
                "--selector",
                "unix:uid:1",
            ],
        );
    }
}

fn head(s: &Path) -> u64 {
    ok(s, &["events", "tail"]).lines().count() as u64
}

/// Waits (bounded) for a checkpoint covering `at_least`; returns its anchor document.
fn anchor_covering(s: &Path, at_least: u64) -> Value {
    let deadline = Deadline::after(Duration::from_secs(30));
    loop {
        let out = cli(s, &["events", "checkpoint", "--output", "json"]);
        if out.status.success() {
            let anchor: Value = serde_json::from_slice(&out.stdout).unwrap();
            if anchor["seq"].as_u64().unwrap() >= at_least {
                return anchor;
            }
        }
        assert!(
            !deadline.passed(),
            "no checkpoint of seq {at_least} within 30 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Edits the stopped server's records: `edit` gets them all and returns what to keep.
fn edit_log(ws: &Workspace, edit: impl FnOnce(Vec<Record>) -> Vec<Record>) {
    let store = SledStore::open(ws.data_dir().join("log")).unwrap();
    let records = store.read(1, usize::MAX).unwrap();
    let last = records.last().unwrap().seq;
    let kept = edit(records);
    for seq in kept.last().map_or(1, |r| r.seq + 1)..=last {
        store.raw_records().remove(seq.to_be_bytes()).unwrap();
    }
    // Rewrites the kept records and the acknowledged-head marker, as a careful intruder would.
    store.write(&kept).unwrap();
    drop(store);
}

fn write_anchor(ws: &Workspace, anchor: &Value) -> PathBuf {
    let path = ws.path().join("anchor.json");
    std::fs::write(&path, serde_json::to_vec_pretty(anchor).unwrap()).unwrap();
    path
}

#[test]
fn an_anchor_round_trips_and_a_log_cut_short_before_it_fails_naming_the_seq() {
    let ws = Workspace::new();
    let server = start(&ws, EVERY_3);
    let s = server.socket.clone();
    create_entries(&s, &["a", "b", "c"]);
    let anchor = anchor_covering(&s, head(&s));
    let seq = anchor["seq"].as_u64().unwrap();
    assert_eq!(anchor["format"], "tessera-log-checkpoint-v1");
    assert_eq!(anchor["trust_domain"], "example.org");
    assert_eq!(anchor["hash"].as_str().unwrap().len(), 64);
    let shown = ok_json(&s, &["events", "show", "--seq", &seq.to_string()]);
    assert_eq!(
        shown["hash"], anchor["hash"],
        "the anchor signs the record's hash"
    );
    let file = write_anchor(&ws, &anchor);
    let f = file.to_str().unwrap();

    // The log grows; the anchor still holds, and every checkpoint verifies.
    create_entries(&s, &["d", "e", "f", "g"]);
    let verified = ok(&s, &["events", "verify", "--anchor", f]);
    assert!(verified.starts_with("OK: "), "{verified}");
    assert!(
        verified.contains(&format!(
            "still holds seq {seq} with hash {}",
            anchor["hash"].as_str().unwrap()
        )),
        "{verified}"
    );
    let report = ok_json(&s, &["events", "verify", "--anchor", f]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["checkpoints_checked"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(report["anchor_seq"], seq);

    // An altered anchor file is refused before the log is blamed.
    let mut forged = anchor.clone();
    forged["seq"] = Value::from(seq - 1);
    let forged_file = ws.path().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    let err = fails(
        &s,
        &[
            "events",
            "verify",
            "--anchor",
            forged_file.to_str().unwrap(),
        ],
    );
    assert!(err.contains("--anchor"), "{err}");
    assert!(err.contains("signature does not verify"), "{err}");

    // Cut the log short before the anchored record.
    server.stop();
    edit_log(&ws, |mut records| {
        records.truncate(usize::try_from(seq - 1).unwrap());
        records
    });
    let server = start(&ws, OFF);
    let s = server.socket.clone();
    assert_eq!(head(&s), seq - 1);
    // The chain alone cannot tell: what is left is intact.
    assert_eq!(ok_json(&s, &["events", "verify"])["ok"], true);
    let err = fails(&s, &["events", "verify", "--anchor", f]);
    assert!(
        err.contains(&format!(
            "log truncated: the anchor covers seq {seq} but the log ends at seq {}",
            seq - 1
        )),
        "{err}"
    );
    assert!(err.contains("restore the log from a backup"), "{err}");
    let out = cli(&s, &["events", "verify", "--anchor", f, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fault"], "TRUNCATED", "{report}");
    assert_eq!(report["first_bad_seq"], seq);
    server.stop();
}

#[test]
fn a_log_rewritten_before_the_anchor_fails_the_anchor_and_its_checkpoints() {
    let ws = Workspace::new();
    let server = start(&ws, EVERY_3);
    let s = server.socket.clone();
    create_entries(&s, &["a", "b", "c"]);
    let anchor = anchor_covering(&s, head(&s));
    let seq = anchor["seq"].as_u64().unwrap();
    let file = write_anchor(&ws, &anchor);
    let f = file.to_str().unwrap();
    server.stop();

    // Change the record before the anchored one and re-chain everything after it, so the
    // hash chain alone still verifies.
    let changed = seq - 1;
    edit_log(&ws, |records| {
        let mut prev = Digest32::GENESIS;
        records
            .into_iter()
            .map(|r| {
                let at = if r.seq == changed {
                    r.recorded_at + 1
                } else {
                    r.recorded_at
                };
                let new = NewRecord {
                    kind: r.kind,
                    schema_version: r.schema_version,
                    payload: r.payload,
                };
                let sealed = Record::seal(new, r.seq, at, prev);
                prev = sealed.hash;
                sealed
            })
            .collect()
    });
    let server = start(&ws, OFF);
    let s = server.socket.clone();

    let err = fails(&s, &["events", "verify", "--anchor", f]);
    assert!(
        err.contains(&format!("log rewritten at or before seq {seq}")),
        "{err}"
    );
    // Without the anchor, the log's own signed checkpoints give it away.
    let err = fails(&s, &["events", "verify"]);
    assert!(err.contains("signed checkpoint"), "{err}");
    assert!(
        err.contains(&format!("rewritten at or before seq {seq}")),
        "{err}"
    );
    let out = cli(&s, &["events", "verify", "--output", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fault"], "CHECKPOINT", "{report}");
    server.stop();
}

#[test]
fn without_checkpoints_the_verb_says_so() {
    let ws = Workspace::new();
    let server = start(&ws, OFF);
    let err = fails(&server.socket, &["events", "checkpoint"]);
    assert!(err.contains("NotFound"), "{err}");
    assert!(err.contains("no signed checkpoint yet"), "{err}");
    server.stop();
}
