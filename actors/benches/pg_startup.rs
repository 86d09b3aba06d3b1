//! Server start-up on a PostgreSQL log of 1,000,000 events, printed (not asserted), next to
//! the sled start-up of the same log measured in the same run:
//!
//! ```sh
//! cargo bench -p tessera-actors --bench pg_startup
//! ```
//!
//! A sled log of 1,000,000 `EntryCreated` events is built (registry commands of 1,000
//! entries), then copied into a throw-away PostgreSQL database with `PgLog::import`. Each
//! start-up runs in a fresh process (this binary again), as an operator restarting a server
//! sees it: open the log, `Server::start` (replay), timed until it returns. Three ways:
//!
//! - no snapshot, `open_check = full_chain` (the chain walked, then every record replayed);
//! - from a snapshot, `full_chain` (the default config: whole chain walked, snapshot + tail);
//! - from a snapshot, `from_latest_snapshot` (chain checked from the snapshot only).
//!
//! The database is the one `TESSERA_TEST_PG_URL` names (default: postgres@127.0.0.1:5432);
//! without one the bench prints one line and skips. `TESSERA_BENCH_QUICK=1` shrinks the log
//! to 20,000 events and runs each start-up once.

// A benchmark measures wall time by definition; the library ban on clocks does not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_actors::random::OsRandom;
use tessera_actors::server::registry::{NewEntry, RegistryCommand};
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_eventlog::pg::testing::TestDatabase;
use tessera_eventlog::pg::{PgConfig, PgLog};
use tessera_eventlog::store::sled::SledStore;
use tessera_eventlog::{EventLog, LocalLog, LogLimits, OpenCheck, SystemClock};
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

/// Environment of a child run: what to do, on which log, and how.
const MODE: &str = "TESSERA_PGSTART_MODE";
const DIR: &str = "TESSERA_PGSTART_DIR";
const URL: &str = "TESSERA_PGSTART_URL";
const CHECK: &str = "TESSERA_PGSTART_CHECK";
const SAVE: &str = "TESSERA_PGSTART_SAVE";
const EVENTS: &str = "TESSERA_PGSTART_EVENTS";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn settings() -> ServerSettings {
    let mut s = ServerSettings::new(TrustDomain::new("example.org").unwrap());
    // No snapshot unless the bench takes one.
    s.snapshot_every = 0;
    s
}

async fn start(log: Arc<dyn EventLog>) -> Server {
    Server::start(
        settings(),
        log,
        Arc::new(SystemClock),
        Arc::new(OsRandom::new()),
    )
    .await
    .unwrap()
}

fn open_sled(dir: &Path, check: OpenCheck) -> Arc<LocalLog> {
    let store = SledStore::open(dir).unwrap();
    let limits = LogLimits {
        open_check: check,
        // As tessera-server opens it: the check runs while start-up replays.
        check_in_background: true,
        ..LogLimits::default()
    };
    Arc::new(LocalLog::open(Arc::new(store), Arc::new(SystemClock), limits).unwrap())
}

/// As tessera-server opens it with the config's defaults (conf/server.toml).
fn pg_config(url: &str, snapshots: &Path, check: OpenCheck) -> PgConfig {
    let mut c = PgConfig::new(url, snapshots);
    c.open_check = check;
    c
}

fn new_entry(i: usize) -> NewEntry {
    NewEntry {
        id: None,
        entry: RegistrationEntry {
            id: EntryId::new("unset").unwrap(),
            spiffe_id: SpiffeId::new(&format!("spiffe://example.org/svc/{i}")).unwrap(),
            parent_id: SpiffeId::new(&format!(
                "spiffe://example.org/spire/agent/join_token/node-{}",
                i % 1_000
            ))
            .unwrap(),
            selectors: SelectorSet::parse_all([format!("unix:uid:{}", 2_000 + i % 64).as_str()])
                .unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: vec![],
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            created_at: 0,
            revision: 0,
        },
    }
}

/// Creates `events` entries (each one `EntryCreated` record) in batches of 1,000, from four
/// callers at once.
async fn fill(server: &Server, events: usize) {
    const BATCH: usize = 1_000;
    const CALLERS: usize = 4;
    let batches = events.div_ceil(BATCH);
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let server = server.clone();
            tokio::spawn(async move {
                for b in (caller..batches).step_by(CALLERS) {
                    let items = (b * BATCH..((b + 1) * BATCH).min(events))
                        .map(new_entry)
                        .collect();
                    server
                        .registry
                        .command(RegistryCommand::Create(items))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

// === child side ===

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

/// Builds the log (mode "build"), or opens one and starts a server on it, printing how long
/// that took; with `SAVE` set, leaves a snapshot behind for the next start.
fn child(mode: &str) {
    let dir = PathBuf::from(env(DIR));
    let events: usize = env(EVENTS).parse().unwrap();
    let check = if env(CHECK) == "snapshot" {
        OpenCheck::FromLatestSnapshot
    } else {
        OpenCheck::FullChain
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if mode == "build" {
            let log = open_sled(&dir, OpenCheck::FullChain);
            let server = start(log.clone()).await;
            fill(&server, events).await;
            server.stop().await;
            log.close();
            println!("startup_ms=0");
            return;
        }
        let began = Instant::now();
        let (server, pg, sled) = if mode == "pg" {
            let log = PgLog::open(pg_config(&env(URL), &dir, check), Arc::new(SystemClock))
                .await
                .unwrap();
            (start(Arc::new(log.clone())).await, Some(log), None)
        } else {
            let log = open_sled(&dir, check);
            (start(log.clone()).await, None, Some(log))
        };
        let took = began.elapsed();
        let entries = server.registry.read(|r| r.len()).await.unwrap();
        assert!(
            entries >= events,
            "{entries} entries after start-up, expected {events}"
        );
        if !env(SAVE).is_empty() {
            server.snapshot_now().await.unwrap();
        }
        println!("startup_ms={}", took.as_secs_f64() * 1_000.0);
        server.stop().await;
        if let Some(log) = pg {
            log.close().await;
        }
        if let Some(log) = sled {
            log.close();
        }
    });
}

// === parent side ===

/// One run of this binary as a child; its start-up time.
fn run(mode: &str, dir: &Path, url: &str, check: &str, save: bool, events: usize) -> Duration {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(MODE, mode)
        .env(DIR, dir)
        .env(URL, url)
        .env(CHECK, check)
        .env(SAVE, if save { "1" } else { "" })
        .env(EVENTS, events.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ms: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("startup_ms="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "child ({mode}, {check}) failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    Duration::from_secs_f64(ms / 1_000.0)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &to.join(item.file_name()));
        } else {
            std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
        }
    }
}

fn line(what: &str, runs: &[f64]) {
    let shown: Vec<String> = runs.iter().map(|s| format!("{s:.2}")).collect();
    println!(
        "  {what:<58} median {:>6.2} s  ({} runs: {} s)",
        median(runs.to_vec()),
        runs.len(),
        shown.join(", ")
    );
}

fn main() {
    let mode = env(MODE);
    if !mode.is_empty() {
        child(&mode);
        return;
    }
    let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok();
    let events: usize = if quick { 20_000 } else { 1_000_000 };
    let rounds = if quick { 1 } else { 3 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(TestDatabase::create()).unwrap() else {
        println!("pg_startup bench: skipped, no PostgreSQL reachable (see the line above)");
        return;
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("tessera-actors pg_startup bench: {events} events in the log ({cpus} CPUs)");
    let root = tempfile::tempdir().unwrap();
    let sled_dir = root.path().join("sled");
    let pristine = root.path().join("sled-pristine");

    let t = Instant::now();
    run("build", &sled_dir, "", "full", false, events);
    println!(
        "  built a sled log of {events} entries in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    copy_dir(&sled_dir, &pristine);

    // The copy into PostgreSQL, from the pristine log (no snapshot in it).
    let imported = rt.block_on(async {
        // Import walks and checks the chain itself.
        let source = open_sled(&pristine, OpenCheck::Off);
        let target = PgLog::open(
            pg_config(
                db.url(),
                &root.path().join("import-snapshots"),
                OpenCheck::FullChain,
            ),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let t = Instant::now();
        let n = target.import(source.as_ref()).await.unwrap();
        let took = t.elapsed();
        target.close().await;
        source.close();
        (n, took)
    });
    println!(
        "  imported {} records into PostgreSQL (PgLog::import, one transaction, verified) in {:.1} s",
        imported.0,
        imported.1.as_secs_f64()
    );

    let secs = |d: Duration| d.as_secs_f64();
    // Sled: without a snapshot from a copy of the log as built (each run leaves one behind);
    // then from the snapshot the last of them left.
    let mut sled_none = Vec::new();
    for _ in 0..rounds {
        std::fs::remove_dir_all(&sled_dir).unwrap();
        copy_dir(&pristine, &sled_dir);
        sled_none.push(secs(run("sled", &sled_dir, "", "full", true, events)));
    }
    let sled_snap_full: Vec<f64> = (0..rounds)
        .map(|_| secs(run("sled", &sled_dir, "", "full", false, events)))
        .collect();
    let sled_snap_latest: Vec<f64> = (0..rounds)
        .map(|_| secs(run("sled", &sled_dir, "", "snapshot", false, events)))
        .collect();

    // PostgreSQL: snapshots are this server's local files; an empty directory means none.
    let mut pg_none = Vec::new();
    let snapshots = root.path().join("pg-snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    for i in 0..rounds {
        let empty = root.path().join(format!("pg-none-{i}"));
        std::fs::create_dir_all(&empty).unwrap();
        pg_none.push(secs(run("pg", &empty, db.url(), "full", false, events)));
    }
    // One more start without a snapshot leaves the one the next runs start from.
    run("pg", &snapshots, db.url(), "full", true, events);
    let pg_snap_full: Vec<f64> = (0..rounds)
        .map(|_| secs(run("pg", &snapshots, db.url(), "full", false, events)))
        .collect();
    let pg_snap_latest: Vec<f64> = (0..rounds)
        .map(|_| secs(run("pg", &snapshots, db.url(), "snapshot", false, events)))
        .collect();

    println!("start-up with {events} events (open the log + Server::start), fresh process each:");
    line("PostgreSQL, no snapshot (full_chain)", &pg_none);
    line("sled,       no snapshot (full_chain)", &sled_none);
    line(
        "PostgreSQL, from a snapshot, full_chain (default config)",
        &pg_snap_full,
    );
    line(
        "sled,       from a snapshot, full_chain (default config)",
        &sled_snap_full,
    );
    line(
        "PostgreSQL, from a snapshot, from_latest_snapshot",
        &pg_snap_latest,
    );
    line(
        "sled,       from a snapshot, from_latest_snapshot",
        &sled_snap_latest,
    );
    rt.block_on(db.cleanup()).unwrap();
}
