//! PostgreSQL event log figures, printed (not asserted): `cargo bench -p tessera-eventlog
//! --bench pg`.
//!
//! - append throughput with 1, 8 and 64 concurrent appenders on one `PgLog`;
//! - append throughput with 3 `PgLog` handles on one database (3 "servers") appending at
//!   once (`AppendCondition::Any`), with the races they lost;
//! - the sled backend's throughput for the same appender counts, measured in the same run.
//!
//! Each figure is the median of `ROUNDS` runs, each on a fresh database. The server is
//! `TESSERA_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`); without one the
//! bench prints a line and exits. `TESSERA_BENCH_QUICK=1` shrinks every size.

// A benchmark measures wall time by definition; the library ban on clocks does not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::sync::Arc;
use std::time::Instant;

use tessera_eventlog::pg::testing::TestDatabase;
use tessera_eventlog::{AppendCondition, EventLog, LocalLog, NewRecord, PgLog, SystemClock};

const ROUNDS: usize = 3;

fn quick() -> bool {
    std::env::var("TESSERA_BENCH_QUICK").is_ok_and(|v| v == "1")
}

fn record(i: u64) -> NewRecord {
    // About the size of a registration event.
    let mut payload =
        format!("spiffe://example.org/workload/{i} unix:uid:1000 unix:gid:1000").into_bytes();
    payload.resize(120, 0);
    NewRecord {
        kind: "Registered".into(),
        schema_version: 1,
        payload,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Appends per second: `appenders` tasks on each log in `logs`, `per_task` appends each.
async fn drive(logs: &[Arc<dyn EventLog>], appenders: usize, per_task: u64) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for log in logs {
        for t in 0..appenders {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_task {
                    log.append(vec![record(t as u64 * 1_000_000 + i)], AppendCondition::Any)
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    (logs.len() * appenders) as f64 * per_task as f64 / start.elapsed().as_secs_f64()
}

fn per_task(appenders: usize, total: u64) -> u64 {
    (total / appenders as u64).max(1)
}

async fn pg_round(servers: usize, appenders: usize, total: u64) -> Option<(f64, u64, u64)> {
    let db = TestDatabase::create().await.unwrap()?;
    let dirs: Vec<_> = (0..servers).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut logs = Vec::new();
    for dir in &dirs {
        let mut config = db.config(dir.path());
        config.pool_size = 8;
        logs.push(PgLog::open(config, Arc::new(SystemClock)).await.unwrap());
    }
    let shared: Vec<Arc<dyn EventLog>> = logs
        .iter()
        .map(|l| Arc::new(l.clone()) as Arc<dyn EventLog>)
        .collect();
    let rate = drive(&shared, appenders, per_task(appenders * servers, total)).await;
    let report = logs[0].verify().await.unwrap();
    assert!(report.is_ok(), "{report}");
    let (mut transactions, mut lost) = (0, 0);
    for log in &logs {
        let stats = log.stats();
        transactions += stats.transactions;
        lost += stats.lost_races;
        log.close().await;
    }
    drop(shared);
    drop(logs);
    db.cleanup().await.unwrap();
    Some((rate, transactions, lost))
}

async fn sled_round(appenders: usize, total: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let log = LocalLog::open_sled(dir.path(), Arc::new(SystemClock)).unwrap();
    let shared: Vec<Arc<dyn EventLog>> = vec![Arc::new(log.clone())];
    let rate = drive(&shared, appenders, per_task(appenders, total)).await;
    drop(shared);
    log.close();
    rate
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if TestDatabase::create().await.unwrap().is_none() {
            return;
        }
        let scale = if quick() { 10 } else { 1 };
        println!("append throughput, appends/s (median of {ROUNDS}; one record per append)");
        println!(
            "{:<34} {:>12} {:>12} {:>14}",
            "setup", "PostgreSQL", "sled", "transactions"
        );
        for (appenders, total) in [(1usize, 2_000u64), (8, 8_000), (64, 16_000)] {
            let total = total / scale;
            let mut pg = Vec::new();
            let mut txs = Vec::new();
            for _ in 0..ROUNDS {
                let (rate, transactions, _) = pg_round(1, appenders, total).await.unwrap();
                pg.push(rate);
                txs.push(transactions as f64);
            }
            let mut sled = Vec::new();
            for _ in 0..ROUNDS {
                sled.push(sled_round(appenders, total).await);
            }
            println!(
                "{:<34} {:>12.0} {:>12.0} {:>14.0}",
                format!("1 server, {appenders} appenders"),
                median(pg),
                median(sled),
                median(txs)
            );
        }
        for appenders in [1usize, 8, 64] {
            let total = 9_000 / scale;
            let mut pg = Vec::new();
            let mut txs = Vec::new();
            let mut lost = Vec::new();
            for _ in 0..ROUNDS {
                let (rate, transactions, races) = pg_round(3, appenders, total).await.unwrap();
                pg.push(rate);
                txs.push(transactions as f64);
                lost.push(races as f64);
            }
            println!(
                "{:<34} {:>12.0} {:>12} {:>14.0}   (lost races: {:.0})",
                format!("3 servers, {appenders} appenders each"),
                median(pg),
                "-",
                median(txs),
                median(lost)
            );
        }
    });
}
