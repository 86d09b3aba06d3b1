//! Event log figures, printed (not asserted): `cargo bench -p tessera-eventlog --bench eventlog`.
//!
//! - append throughput with 1, 8 and 64 concurrent appenders on the sled backend, next to the
//!   bare `fdatasync` rate of the same directory measured in the same run;
//! - replay of 1,000,000 events: open (chain walk) + decode + fold, from the start and from a
//!   snapshot;
//! - subscribe latency: append returned → subscriber has the record (p50, p99).
//!
//! Each throughput figure is the median of `ROUNDS` runs. Set `TESSERA_BENCH_DIR` to measure
//! a particular disk (default: the system temp dir). `TESSERA_BENCH_QUICK=1` shrinks every
//! size for a smoke run.

// A benchmark measures wall time by definition; the library ban on clocks does not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tessera_eventlog::typed::{decode_state, encode, encode_state};
use tessera_eventlog::{
    AppendCondition, Event, EventLog, LocalLog, LogLimits, OpenCheck, SystemClock, TypedLog,
};

const ROUNDS: usize = 5;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum BenchEvent {
    Registered {
        id: u64,
        name: String,
        selectors: Vec<String>,
    },
    Updated {
        id: u64,
        revision: u64,
    },
    Removed {
        id: u64,
    },
}

impl Event for BenchEvent {
    const SCHEMA_VERSION: u32 = 1;
    fn kind(&self) -> &'static str {
        match self {
            BenchEvent::Registered { .. } => "Registered",
            BenchEvent::Updated { .. } => "Updated",
            BenchEvent::Removed { .. } => "Removed",
        }
    }
}

fn sample(i: u64) -> BenchEvent {
    match i % 10 {
        0..=5 => BenchEvent::Registered {
            id: i,
            name: format!("spiffe://example.org/workload/{i}"),
            selectors: vec![
                format!("unix:uid:{}", 1000 + i % 100),
                "unix:gid:1000".into(),
            ],
        },
        6..=8 => BenchEvent::Updated {
            id: i / 2,
            revision: i,
        },
        _ => BenchEvent::Removed { id: i / 3 },
    }
}

fn fold(state: &mut BTreeMap<u64, u64>, e: BenchEvent) {
    match e {
        BenchEvent::Registered { id, .. } => {
            state.insert(id, 0);
        }
        BenchEvent::Updated { id, revision } => {
            if let Some(r) = state.get_mut(&id) {
                *r = revision;
            }
        }
        BenchEvent::Removed { id } => {
            state.remove(&id);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn bench_root() -> tempfile::TempDir {
    match std::env::var("TESSERA_BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

/// fdatasync()s per second of a small write to a file in `dir`: the disk's commit ceiling.
fn fdatasync_rate(dir: &std::path::Path, duration: Duration) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        f.write_all(&[0u8; 64]).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    rate
}

async fn append_throughput(appenders: usize, total: u64) -> f64 {
    let root = bench_root();
    let log = Arc::new(LocalLog::open_sled(root.path(), Arc::new(SystemClock)).unwrap());
    let per = total / appenders as u64;
    let payloads: Vec<_> = (0..per).map(|i| encode(&sample(i)).unwrap()).collect();
    let payloads = Arc::new(payloads);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let log = log.clone();
        let payloads = payloads.clone();
        tasks.push(tokio::spawn(async move {
            for p in payloads.iter() {
                log.append(vec![p.clone()], AppendCondition::Any)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (per * appenders as u64) as f64 / start.elapsed().as_secs_f64();
    log.close();
    rate
}

async fn build_log(dir: &std::path::Path, events: u64) -> (u64, BTreeMap<u64, u64>) {
    let log = Arc::new(LocalLog::open_sled(dir, Arc::new(SystemClock)).unwrap());
    let typed = TypedLog::<BenchEvent>::new(log.clone());
    let batch = 10_000u64;
    let snapshot_at = events - events / 100;
    let mut state = BTreeMap::new();
    let mut i = 0;
    while i < events {
        let n = batch.min(events - i);
        let chunk: Vec<_> = (i..i + n).map(sample).collect();
        typed.append(&chunk, AppendCondition::Any).await.unwrap();
        for e in chunk {
            if i < snapshot_at {
                fold(&mut state, e);
            }
            i += 1;
        }
        if i == snapshot_at {
            log.save_snapshot(snapshot_at, encode_state(&state).unwrap())
                .await
                .unwrap();
        }
    }
    log.close();
    (snapshot_at, state)
}

async fn replay(dir: &std::path::Path, use_snapshot: bool, check: OpenCheck) -> (Duration, usize) {
    let start = Instant::now();
    let limits = LogLimits {
        open_check: check,
        ..LogLimits::default()
    };
    let store = Arc::new(tessera_eventlog::store::sled::SledStore::open(dir).unwrap());
    let log = Arc::new(LocalLog::open(store, Arc::new(SystemClock), limits).unwrap());
    let typed = TypedLog::<BenchEvent>::new(log.clone());
    let (mut state, after) = match (use_snapshot, log.latest_snapshot().await.unwrap()) {
        (true, Some(s)) => (
            decode_state::<BTreeMap<u64, u64>>(s.seq, &s.data).unwrap(),
            s.seq,
        ),
        _ => (BTreeMap::new(), 0),
    };
    typed
        .replay(after, |_, e| fold(&mut state, e))
        .await
        .unwrap();
    let took = start.elapsed();
    log.close();
    (took, state.len())
}

async fn subscribe_latency(trials: usize) -> Vec<Duration> {
    let root = bench_root();
    let log = Arc::new(LocalLog::open_sled(root.path(), Arc::new(SystemClock)).unwrap());
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sub = log.subscribe(1);
    let follower = tokio::spawn(async move {
        while let Some(r) = sub.next().await {
            let r = r.unwrap();
            if seen_tx.send((r.seq, Instant::now())).is_err() {
                return;
            }
        }
    });
    let payload = encode(&sample(1)).unwrap();
    let mut lat = Vec::with_capacity(trials);
    for _ in 0..trials {
        let receipt = log
            .append(vec![payload.clone()], AppendCondition::Any)
            .await
            .unwrap();
        let returned = Instant::now();
        let (seq, seen) = seen_rx.recv().await.unwrap();
        assert_eq!(seq, receipt.first_seq);
        // The subscriber may see the record before the appender is answered: that is 0.
        lat.push(seen.saturating_duration_since(returned));
    }
    log.close();
    follower.await.unwrap();
    lat.sort();
    lat
}

fn main() {
    let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = bench_root();
    println!(
        "tessera-eventlog bench (dir: {}, medians of {ROUNDS} runs)",
        root.path().display()
    );

    let fsync: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            fdatasync_rate(
                root.path(),
                Duration::from_millis(if quick { 100 } else { 1000 }),
            )
        })
        .collect();
    let fsync = median(fsync);
    println!("bare fdatasync (64 B write + fdatasync):  {fsync:>10.0} /s");

    for appenders in [1usize, 8, 64] {
        let total = if quick {
            640
        } else {
            (appenders as u64 * 2_000).clamp(4_000, 256_000)
        };
        let rates: Vec<f64> = (0..ROUNDS)
            .map(|_| rt.block_on(append_throughput(appenders, total)))
            .collect();
        let rate = median(rates);
        println!(
            "append, {appenders:>2} appenders (1 event each): {rate:>10.0} events/s  ({:.2}x the fdatasync rate)",
            rate / fsync
        );
    }

    let events: u64 = if quick { 20_000 } else { 1_000_000 };
    let dir = root.path().join("replay");
    let build_start = Instant::now();
    let (snap_at, _) = rt.block_on(build_log(&dir, events));
    println!(
        "built a {events}-event log in {:.2} s (batches of 10,000)",
        build_start.elapsed().as_secs_f64()
    );
    let cases = [
        (
            "from the start, full chain check at open",
            false,
            OpenCheck::FullChain,
        ),
        (
            "from the snapshot, full chain check at open",
            true,
            OpenCheck::FullChain,
        ),
        (
            "from the snapshot, chain checked from the snapshot",
            true,
            OpenCheck::FromLatestSnapshot,
        ),
    ];
    let mut states = Vec::new();
    for (name, use_snapshot, check) in cases {
        let mut times = Vec::new();
        for _ in 0..3 {
            let (t, n) = rt.block_on(replay(&dir, use_snapshot, check));
            times.push(t.as_secs_f64());
            states.push(n);
        }
        println!(
            "replay {events} events {name} (open + decode + fold): {:.3} s",
            median(times)
        );
    }
    assert!(
        states.windows(2).all(|w| w[0] == w[1]),
        "snapshot + tail must fold to the same state"
    );
    println!(
        "(snapshot at seq {snap_at}: {} tail events)",
        events - snap_at
    );

    let trials = if quick { 100 } else { 2_000 };
    let lat = rt.block_on(subscribe_latency(trials));
    println!(
        "subscribe latency, append returned -> subscriber has it ({trials} trials): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
}
