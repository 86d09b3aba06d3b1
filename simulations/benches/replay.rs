//! Replay of a 1,000,000-event server log (issue 12 §4): time to the middle seq, and to the
//! head as the baseline, median of a few runs each. Prints its figures.
//!
//! The log is written once, as the server writes it (sled under `LocalLog`, `TypedLog`
//! encoding), and kept under `target/replay-bench-log/` so that reruns only replay; delete
//! the directory to rebuild it. Contents, over 48 virtual hours: 10,000 agents attested
//! (SVID renewals through the run), 400,000 entries created, 200,000 updated, 200,000
//! deleted, a CA and JWT key rotation every 12 hours. No snapshot: every run folds records.
//!
//! Run: `cargo bench -p tessera-sim --bench replay` (release profile).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
// A benchmark measures wall time: the one place in this crate that reads it.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/replay/log_writer.rs"]
mod log_writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tessera_actors::server::events::ServerEvent;
use tessera_sim::replay::{self, Output, ReplayArgs};

use log_writer::{agent, ca, entry, id, jwt_key, now_secs, LogWriter};

// The binary's allocator (src/main.rs): glibc malloc spent most of a replay consolidating
// free lists.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: u64 = 1_000_000;
const AGENTS: u64 = 10_000;
const CREATED: u64 = 400_000;
const RUNS: usize = 5;
/// Events per append (one commit time each).
const BATCH: usize = 5_000;

fn bench_dir() -> PathBuf {
    // target/ next to the workspace's Cargo.lock.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("..").join("target"));
    target.join("replay-bench-log")
}

/// The event of number `i` (0-based) of the log, in a fixed order: first the authority and
/// the agents, then entries created, updated and deleted, with renewals and rotations mixed in.
fn event(i: u64, now: i64) -> ServerEvent {
    if i < AGENTS {
        return ServerEvent::AgentAttested(agent(i, now));
    }
    let k = i - AGENTS;
    // Every 50th event: an agent renewal.
    if k % 50 == 49 {
        let n = (k / 50) % AGENTS;
        return ServerEvent::AgentSvidRenewed {
            agent_id: id(&format!("spiffe://example.org/spire/agent/join_token/{n}")),
            svid_serial: format!("{k:032x}"),
            svid_expires_at: now + 3600,
        };
    }
    let j = k - k / 50;
    if j < CREATED {
        ServerEvent::EntryCreated(entry(j, j % AGENTS, None))
    } else if j < CREATED + 200_000 {
        let n = (j - CREATED) * 2;
        let mut e = entry(n, (n + 1) % AGENTS, Some(1800));
        e.revision = 1;
        ServerEvent::EntryUpdated(e)
    } else if j < CREATED + 400_000 {
        ServerEvent::EntryDeleted {
            id: entry((j - CREATED - 200_000) * 2 + 1, 0, None).id,
        }
    } else {
        // Filler past the planned mix: more renewals.
        ServerEvent::AgentSvidRenewed {
            agent_id: id(&format!(
                "spiffe://example.org/spire/agent/join_token/{}",
                j % AGENTS
            )),
            svid_serial: format!("{j:032x}"),
            svid_expires_at: now + 3600,
        }
    }
}

async fn build(dir: &Path) {
    let log_dir = dir.join("log");
    let mut w = LogWriter::create(&log_dir);
    let span = Duration::from_secs(48 * 3600);
    let batches = EVENTS.div_ceil(BATCH as u64);
    let step = span / u32::try_from(batches).unwrap();
    let mut next_rotation = 0i64;
    let mut cas = 0u64;
    // `i` counts records written; `n` numbers the generated (non-rotation) events.
    let mut i = 0u64;
    let mut n = 0u64;
    while i < EVENTS {
        let now = now_secs(&w.clock);
        let mut batch = Vec::with_capacity(BATCH);
        if now >= next_rotation && i + 4 <= EVENTS {
            cas += 1;
            let record = ca(cas, now, Duration::from_secs(24 * 3600));
            let key = jwt_key(cas, now, Duration::from_secs(24 * 3600));
            batch.push(ServerEvent::CaPrepared(record.clone()));
            batch.push(ServerEvent::CaActivated {
                authority_id: record.authority_id,
            });
            batch.push(ServerEvent::JwtKeyPrepared(key.clone()));
            batch.push(ServerEvent::JwtKeyActivated { kid: key.kid });
            i += 4;
            next_rotation = now + 12 * 3600;
        }
        while batch.len() < BATCH && i < EVENTS {
            batch.push(event(n, now));
            n += 1;
            i += 1;
        }
        w.append(batch).await;
        w.advance(step);
    }
    assert_eq!(w.seq, EVENTS);
    w.close(&log_dir);
    std::fs::write(dir.join("complete"), b"1").unwrap();
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time_replay(dir: &Path, at: Option<u64>) -> (Duration, Vec<Duration>) {
    let args = ReplayArgs {
        data_dir: Some(dir.to_owned()),
        at: at.map(|s| s.to_string()),
        output: Output::Json,
        limit: 20,
        seed: 1,
        ..ReplayArgs::default()
    };
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let folded = replay::fold(&args).unwrap();
        runs.push(start.elapsed());
        assert_eq!(folded.seq, at.unwrap_or(EVENTS));
        std::hint::black_box(folded.state.registry.len());
    }
    (median(runs.clone()), runs)
}

fn main() {
    let dir = bench_dir();
    if !dir.join("complete").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        println!(
            "building a {EVENTS}-event log in {} (once) ...",
            dir.display()
        );
        let start = Instant::now();
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(build(&dir));
        println!("  built in {:.1} s", start.elapsed().as_secs_f64());
    }
    let size: u64 = walk_size(&dir.join("log"));
    println!(
        "replay of {} ({EVENTS} events, {:.0} MB on disk), {RUNS} runs each:",
        dir.display(),
        size as f64 / 1e6
    );
    let (mid, runs) = time_replay(&dir, Some(EVENTS / 2));
    println!(
        "  to the middle (seq {}): median {:.2} s  (runs: {})",
        EVENTS / 2,
        mid.as_secs_f64(),
        list(&runs)
    );
    let (full, runs) = time_replay(&dir, None);
    println!(
        "  to the head   (seq {EVENTS}): median {:.2} s  (runs: {})",
        full.as_secs_f64(),
        list(&runs)
    );
}

fn list(runs: &[Duration]) -> String {
    runs.iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn walk_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(items) = std::fs::read_dir(dir) {
        for item in items.flatten() {
            let path = item.path();
            total += if path.is_dir() {
                walk_size(&path)
            } else {
                item.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}
