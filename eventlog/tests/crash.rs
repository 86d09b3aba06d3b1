//! A process killed with SIGKILL in the middle of appends loses no acknowledged record, and the
//! chain still verifies after reopen.
//!
//! The test re-runs its own binary as a child (`crash_child`, which does nothing unless
//! `TESSERA_CRASH_DIR` is set). The child appends from 8 tasks to a sled log and prints
//! `ack <first> <last>` to stdout after each append returns; the parent kills it with SIGKILL
//! at a varying moment, reopens the log and checks every acknowledged seq is there. Rounds
//! default to 12 (`TESSERA_CRASH_ROUNDS` raises it for soak runs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tessera_eventlog::{AppendCondition, EventLog, LocalLog, NewRecord, SystemClock};

const DIR_ENV: &str = "TESSERA_CRASH_DIR";

fn record(task: u64, i: u64) -> NewRecord {
    NewRecord {
        kind: "CrashProbe".into(),
        schema_version: 1,
        payload: [task.to_be_bytes(), i.to_be_bytes()].concat(),
    }
}

/// The child's body: append forever (until killed), acknowledging on stdout.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return; // Only meaningful as the child of `sigkill_during_appends_loses_nothing_acknowledged`.
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = Arc::new(LocalLog::open_sled(&dir, Arc::new(SystemClock)).unwrap());
        let (tx, rx) = mpsc::channel::<(u64, u64)>();
        for task in 0..8u64 {
            let log = log.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                // Bounded: the parent kills us long before this ends.
                for i in 0..1_000_000u64 {
                    let batch = (0..(1 + i % 4)).map(|k| record(task, i * 4 + k)).collect();
                    let r = log.append(batch, AppendCondition::Any).await.unwrap();
                    if tx.send((r.first_seq, r.last_seq)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let out = std::io::stdout();
        tokio::task::spawn_blocking(move || {
            let mut out = out.lock();
            while let Ok((first, last)) = rx.recv() {
                writeln!(out, "ack {first} {last}").unwrap();
                out.flush().unwrap();
            }
        })
        .await
        .unwrap();
    });
}

#[tokio::test]
async fn sigkill_during_appends_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var("TESSERA_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut max_acked_overall = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() == Some("ack") {
                    let first: u64 = parts.next().unwrap().parse().unwrap();
                    let last: u64 = parts.next().unwrap().parse().unwrap();
                    if tx.send((first, last)).is_err() {
                        break;
                    }
                }
            }
        });
        // Wait for the child to be appending, then kill it at a varying moment.
        let first_ack = rx.recv_timeout(Duration::from_secs(30));
        assert!(
            first_ack.is_ok(),
            "round {round}: child never acknowledged an append"
        );
        std::thread::sleep(Duration::from_millis(20 + (round * 37) % 180));
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        reader.join().unwrap();
        let acked: Vec<(u64, u64)> = first_ack.into_iter().chain(rx.try_iter()).collect();
        let max_acked = acked.iter().map(|&(_, last)| last).max().unwrap();
        assert!(max_acked > max_acked_overall, "round {round} made progress");
        max_acked_overall = max_acked;

        let log = LocalLog::open_sled(dir.path(), Arc::new(SystemClock))
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        assert!(
            log.head().seq >= max_acked,
            "round {round}: acknowledged seq {max_acked} but head is {}",
            log.head().seq
        );
        for &(first, last) in acked.iter().step_by(97) {
            let got = log.read(first, (last - first + 1) as usize).await.unwrap();
            assert_eq!(
                got.len() as u64,
                last - first + 1,
                "round {round}: acked {first}..={last}"
            );
        }
        let report = log.verify().await.unwrap();
        assert!(report.is_ok(), "round {round}: {report}");
        log.close();
    }
}
