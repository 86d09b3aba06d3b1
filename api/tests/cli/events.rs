//! `events tail|show|verify`, following included.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{ok, ok_json, Deadline, Workspace, BIN};

#[test]
fn event_verbs_against_a_running_server() {
    let ws = Workspace::new();
    let server = ws.start();
    let s = server.socket.as_path();
    for i in 0..3 {
        ok(
            s,
            &[
                "entry",
                "create",
                "--spiffeID",
                &format!("spiffe://example.org/w{i}"),
                "--parentID",
                "spiffe://example.org/p",
                "--selector",
                "unix:uid:1",
            ],
        );
    }
    let tail = ok(s, &["events", "tail"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert!(lines.iter().any(|l| l.contains("CaPrepared")), "{tail}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("EntryCreated")).count(),
        3,
        "{tail}"
    );
    let head = lines.len() as u64;

    let created = ok(
        s,
        &[
            "events",
            "tail",
            "--kind",
            "EntryCreated",
            "--output",
            "json",
        ],
    );
    let records: Vec<serde_json::Value> = created
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[2]["seq"], head);
    assert_eq!(
        records[0]["payload"]["EntryCreated"]["spiffe_id"],
        "spiffe://example.org/w0"
    );
    let limited = ok(s, &["events", "tail", "--fromSeq", "2", "--limit", "2"]);
    assert_eq!(limited.lines().count(), 2);

    let one = ok_json(s, &["events", "show", "--seq", &head.to_string()]);
    assert_eq!(one["kind"], "EntryCreated");
    assert_eq!(one["hash"], records[2]["hash"]);
    let pretty = ok(s, &["events", "show", "--seq", "1"]);
    assert!(
        pretty.contains("Seq              : 1") && pretty.contains("Prev hash        : 0000"),
        "{pretty}"
    );

    let verify = ok(s, &["events", "verify"]);
    assert!(
        verify.starts_with(&format!("OK: {head} records verified")),
        "{verify}"
    );
    let part = ok_json(s, &["events", "verify", "--fromSeq", "2", "--toSeq", "3"]);
    assert_eq!(part["ok"], true);
    assert_eq!(part["records_checked"], 2);

    // A follower sees a record committed after it started.
    let mut follower = Command::new(BIN)
        .args([
            "events",
            "tail",
            "--follow",
            "--limit",
            "1",
            "--kind",
            "EntryDeleted",
            "--socketPath",
        ])
        .arg(s)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It tails from seq 1, so it sees the deletion whenever it connects.
    let id = records[0]["payload"]["EntryCreated"]["id"]
        .as_str()
        .unwrap();
    ok(s, &["entry", "delete", "--entryID", id]);
    let deadline = Deadline::after(Duration::from_secs(30));
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        if deadline.passed() {
            let _ = follower.kill();
            panic!("the follower did not see the deletion");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut out = String::new();
    follower
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("EntryDeleted") && out.contains(id), "{out}");
    server.stop();
}
