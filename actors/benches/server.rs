//! Server figures, printed (not asserted): `cargo bench -p tessera-actors --bench server`.
//!
//! - X.509-SVID signing through the authority (batches of CSRs, concurrent), next to the raw
//!   CSR-verify + sign rate of the same crypto (rcgen/ring, P-256) on as many threads as the
//!   signer may use, measured in the same run;
//! - entry creation through the registry actor on the sled log (batches of 1 and 100);
//! - start-up with 1,000,000 events in the log, without and with a snapshot.
//!
//! `TESSERA_BENCH_QUICK=1` shrinks every size for a smoke run.

// A benchmark measures wall time by definition; the library ban on clocks does not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls_pki_types::CertificateSigningRequestDer;
use tessera_actors::random::OsRandom;
use tessera_actors::server::authority::X509SvidRequest;
use tessera_actors::server::registry::{NewEntry, RegistryCommand};
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_eventlog::{EventLog, LocalLog, LogLimits, OpenCheck, SystemClock};
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn csrs(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let key = KeyPair::generate().unwrap();
            CertificateParams::new(Vec::<String>::new())
                .unwrap()
                .serialize_request(&key)
                .unwrap()
                .der()
                .to_vec()
        })
        .collect()
}

/// Raw: parse + verify each CSR and sign a leaf with a P-256 CA, on `threads` threads.
fn raw_sign_rate(csrs: &Arc<Vec<Vec<u8>>>, threads: usize, per_thread: usize) -> f64 {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Arc::new(Issuer::new(ca, ca_key));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let csrs = csrs.clone();
            let issuer = issuer.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let der = &csrs[(t * per_thread + i) % csrs.len()];
                    let mut req = CertificateSigningRequestParams::from_der(
                        &CertificateSigningRequestDer::from(der.as_slice()),
                    )
                    .unwrap();
                    req.params.subject_alt_names =
                        vec![SanType::URI("spiffe://example.org/w".try_into().unwrap())];
                    std::hint::black_box(req.signed_by(&issuer).unwrap());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (threads * per_thread) as f64 / start.elapsed().as_secs_f64()
}

async fn start_server(log: Arc<dyn EventLog>) -> Server {
    let mut settings = ServerSettings::new(td());
    // Snapshots only when the bench asks for one.
    settings.snapshot_every = 0;
    let server = Server::start(
        settings,
        log,
        Arc::new(SystemClock),
        Arc::new(OsRandom::new()),
    )
    .await
    .unwrap();
    if std::env::var("TESSERA_BENCH_PHASES").is_ok() {
        eprintln!(
            "phase: Server::start returned at {:?}",
            std::time::SystemTime::now()
        );
    }
    if server.authority.bundle().is_none() {
        server.authority.tick().await.unwrap();
    }
    server
}

async fn signer_rate(
    server: &Server,
    csrs: &Arc<Vec<Vec<u8>>>,
    batch: usize,
    in_flight: usize,
    total: usize,
) -> f64 {
    let id = SpiffeId::new("spiffe://example.org/w").unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let server = server.clone();
        let csrs = csrs.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..(total / batch / in_flight) {
                let requests = (0..batch)
                    .map(|i| X509SvidRequest {
                        csr_der: csrs[(t * 7919 + b * batch + i) % csrs.len()].clone(),
                        spiffe_id: id.clone(),
                        dns_names: vec![],
                        ttl: None,
                    })
                    .collect();
                let out = server.authority.sign_x509_batch(requests).await.unwrap();
                assert!(out.iter().all(Result::is_ok));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let done = (total / batch / in_flight) * batch * in_flight;
    done as f64 / start.elapsed().as_secs_f64()
}

fn entry(i: usize) -> NewEntry {
    NewEntry {
        id: None,
        entry: RegistrationEntry {
            id: EntryId::new("unset").unwrap(),
            spiffe_id: SpiffeId::new(&format!("spiffe://example.org/workload/{i}")).unwrap(),
            parent_id: SpiffeId::new(&format!(
                "spiffe://example.org/spire/agent/x509pop/node{}",
                i % 1000
            ))
            .unwrap(),
            selectors: SelectorSet::parse_all([format!("unix:uid:{}", 1000 + i % 50).as_str()])
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

async fn entry_rate(
    server: &Server,
    batch: usize,
    tasks: usize,
    per_task: usize,
    base: usize,
) -> f64 {
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let server = server.clone();
        handles.push(tokio::spawn(async move {
            for b in 0..(per_task / batch) {
                let items = (0..batch)
                    .map(|i| entry(base + t * per_task + b * batch + i))
                    .collect();
                server
                    .registry
                    .command(RegistryCommand::Create(items))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    (tasks * (per_task / batch) * batch) as f64 / start.elapsed().as_secs_f64()
}

fn open(dir: &std::path::Path, check: OpenCheck) -> Arc<LocalLog> {
    let store = Arc::new(tessera_eventlog::store::sled::SledStore::open(dir).unwrap());
    Arc::new(
        LocalLog::open(
            store,
            Arc::new(SystemClock),
            LogLimits {
                open_check: check,
                // As tessera-server opens it: the check runs while start-up replays.
                check_in_background: true,
                ..LogLimits::default()
            },
        )
        .unwrap(),
    )
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

/// Runs this binary as a child that builds the log in `dir`, or starts a server on it and
/// reports how long that took.
fn run_child(dir: &std::path::Path, mode: &str, events: usize) -> Duration {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("TESSERA_BENCH_STARTUP_DIR", dir)
        .env("TESSERA_BENCH_STARTUP_MODE", mode)
        .env("TESSERA_BENCH_STARTUP_MIN", events.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ms: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("startup_ms="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "child failed: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    Duration::from_secs_f64(ms / 1000.0)
}

/// The child side of [`startup_in_child`]: open, start, count, and (in "full" mode) leave a
/// snapshot behind for the next start.
fn startup_child(dir: &str, mode: &str, min: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if mode == "build" {
        rt.block_on(async {
            let log = open(std::path::Path::new(dir), OpenCheck::FullChain);
            let server = start_server(log.clone()).await;
            entry_rate(&server, 1_000, 4, min / 4, 20_000_000).await;
            server.stop().await;
            log.close();
            println!("startup_ms=0");
        });
        return;
    }
    rt.block_on(async {
        let t = Instant::now();
        let check = if mode == "snapshot" {
            OpenCheck::FromLatestSnapshot
        } else {
            OpenCheck::FullChain
        };
        let log = open(std::path::Path::new(dir), check);
        if std::env::var("TESSERA_BENCH_PHASES").is_ok() {
            eprintln!(
                "phase: log open {:?} at {:?}",
                t.elapsed(),
                std::time::SystemTime::now()
            );
        }
        let server = start_server(log.clone()).await;
        let took = t.elapsed();
        let n = server.registry.read(|r| r.len()).await.unwrap();
        assert!(n >= min, "{n} entries after start-up, expected {min}");
        if mode == "full" {
            server.snapshot_now().await.unwrap();
        }
        println!("startup_ms={}", took.as_secs_f64() * 1000.0);
        server.stop().await;
        log.close();
    });
}

fn main() {
    if let (Ok(dir), Ok(mode)) = (
        std::env::var("TESSERA_BENCH_STARTUP_DIR"),
        std::env::var("TESSERA_BENCH_STARTUP_MODE"),
    ) {
        let min = std::env::var("TESSERA_BENCH_STARTUP_MIN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        startup_child(&dir, &mode, min);
        return;
    }
    let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("tessera-actors server bench ({cpus} CPUs)");

    // --- signing ---
    let pool = Arc::new(csrs(if quick { 50 } else { 1_000 }));
    let per_thread = if quick { 100 } else { 2_000 };
    let total = if quick { 400 } else { 8_000 };
    let mut raw = Vec::new();
    let mut ours = Vec::new();
    rt.block_on(async {
        let server = start_server(Arc::new(LocalLog::in_memory(Arc::new(SystemClock)))).await;
        for _ in 0..3 {
            raw.push(raw_sign_rate(&pool, cpus, per_thread));
            ours.push(signer_rate(&server, &pool, 100, 4, total).await);
        }
        server.stop().await;
    });
    let (raw, ours) = (median(raw), median(ours));
    println!("raw CSR verify + sign (rcgen/ring P-256, {cpus} threads): {raw:>9.0} SVIDs/s");
    println!("authority signer, batches of 100, 4 in flight:        {ours:>9.0} SVIDs/s  ({:.0} % of raw)", 100.0 * ours / raw);

    // --- entry creation ---
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let server = start_server(open(&dir.path().join("entries"), OpenCheck::FullChain)).await;
        let one = entry_rate(&server, 1, 8, if quick { 40 } else { 400 }, 0).await;
        let hundred = entry_rate(&server, 100, 8, if quick { 400 } else { 5_000 }, 10_000_000).await;
        println!("entry creation, 8 concurrent callers, 1 entry per command:    {one:>9.0} entries/s");
        println!("entry creation, 8 concurrent callers, 100 entries per command: {hundred:>9.0} entries/s");
        server.stop().await;
    });

    // --- start-up with 1M events ---
    let events: usize = if quick { 20_000 } else { 1_000_000 };
    let log_dir = dir.path().join("startup");
    // The log is built, and each start-up measured, in fresh processes (this binary re-run),
    // as an operator restarting the server would see it.
    let build = Instant::now();
    run_child(&log_dir, "build", events);
    println!(
        "built a log of {events} entries in {:.1} s (batches of 1,000)",
        build.elapsed().as_secs_f64()
    );
    // Start-up without a snapshot three times, each from a copy of the log as built (a run
    // leaves a snapshot behind for the snapshot runs); from the snapshot five times (cheap,
    // and this VM's first-touch memory cost varies from run to run).
    let pristine = dir.path().join("startup-pristine");
    copy_dir(&log_dir, &pristine);
    let rounds = if quick { 1 } else { 3 };
    let mut no_snapshot = Vec::new();
    for _ in 0..rounds {
        std::fs::remove_dir_all(&log_dir).unwrap();
        copy_dir(&pristine, &log_dir);
        no_snapshot.push(run_child(&log_dir, "full", events).as_secs_f64());
    }
    let with_snapshot: Vec<f64> = (0..if quick { 1 } else { 5 })
        .map(|_| run_child(&log_dir, "snapshot", events).as_secs_f64())
        .collect();
    let show = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "start-up with {events} entries in the log, no snapshot (full chain check + replay): median {:.2} s (runs: {} s)",
        median(no_snapshot.clone()),
        show(&no_snapshot)
    );
    println!(
        "start-up with {events} entries in the log, from a snapshot (chain checked from it):  median {:.2} s (runs: {} s)",
        median(with_snapshot.clone()),
        show(&with_snapshot)
    );
}
