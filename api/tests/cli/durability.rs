//! Restarts: a clean one keeps everything; SIGKILL during a burst of `entry create` loses no
//! acknowledged entry.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{cli, ok, ok_json, Deadline, Workspace};

#[test]
fn restart_keeps_entries_agents_bundle_and_the_chain() {
    let ws = Workspace::new();
    ws.seed_agents(&["n1"]);
    let server = ws.start();
    let s = server.socket.clone();
    for i in 0..5 {
        ok(
            &s,
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
    ok(
        &s,
        &[
            "entry",
            "update",
            "--entryID",
            &first_id(&s),
            "--hint",
            "kept",
        ],
    );
    ok(
        &s,
        &[
            "agent",
            "ban",
            "--spiffeID",
            "spiffe://example.org/spire/agent/x509pop/n1",
        ],
    );
    ok(&s, &["token", "generate"]);
    let entries = ok_json(&s, &["entry", "show"]);
    let agents = ok_json(&s, &["agent", "list"]);
    let bundle = ok(&s, &["bundle", "show", "--format", "spiffe"]);
    let verify = ok_json(&s, &["events", "verify"]);
    server.stop();

    let server = ws.start();
    let s = server.socket.clone();
    assert_eq!(ok_json(&s, &["entry", "show"]), entries);
    assert_eq!(ok_json(&s, &["agent", "list"]), agents);
    assert_eq!(
        ok(&s, &["bundle", "show", "--format", "spiffe"]),
        bundle,
        "the CA and JWT key survive (disk key manager)"
    );
    let again = ok_json(&s, &["events", "verify"]);
    assert_eq!(again["ok"], true);
    assert_eq!(
        again["records_checked"], verify["records_checked"],
        "nothing new was written by the restart"
    );
    assert_eq!(again["last_good_hash"], verify["last_good_hash"]);
    // The reloaded CA key still signs.
    ok(
        &s,
        &[
            "x509",
            "mint",
            "--spiffeID",
            "spiffe://example.org/after-restart",
        ],
    );
    server.stop();
}

fn first_id(socket: &std::path::Path) -> String {
    ok_json(socket, &["entry", "show"])["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn sigkill_during_a_burst_of_creates_loses_no_acknowledged_entry() {
    const WORKERS: usize = 4;
    const PER_WORKER: usize = 60;
    const ACKED_BEFORE_KILL: usize = 40;

    let ws = Workspace::new();
    let server = ws.start();
    let socket = server.socket.clone();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (socket, acked, stop) = (socket.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..PER_WORKER {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let out = cli(
                        &socket,
                        &[
                            "entry",
                            "create",
                            "--spiffeID",
                            &format!("spiffe://example.org/burst/{w}/{i}"),
                            "--parentID",
                            "spiffe://example.org/p",
                            "--selector",
                            "unix:uid:1",
                            "--output",
                            "json",
                        ],
                    );
                    // Exit 0 means the server acknowledged: the entry must survive.
                    if out.status.success() {
                        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                        let id = v["results"][0]["entry"]["id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().insert(id);
                    }
                }
            })
        })
        .collect();

    let deadline = Deadline::after(Duration::from_secs(120));
    while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
        assert!(!deadline.passed(), "the burst is too slow");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Creates are in flight right now.
    server.kill();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    assert!(
        ws.socket().exists(),
        "SIGKILL leaves the socket file behind"
    );

    // The stale socket is replaced; the log replays.
    let server = ws.start();
    let s = server.socket.clone();
    let shown = ok_json(&s, &["entry", "show"]);
    let present: BTreeSet<String> = shown["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged entries lost: {lost:?}");
    assert_eq!(ok_json(&s, &["events", "verify"])["ok"], true);
    server.stop();
}
