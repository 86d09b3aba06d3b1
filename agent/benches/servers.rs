//! Several servers on one PostgreSQL log, with real processes; figures printed, not asserted.
//!
//! ```sh
//! cargo build --release --bins
//! cargo bench -p tessera-agent --bench servers
//! ```
//!
//! The bench runs the release binaries next to it (`target/release/`), so build them first;
//! it says so and stops if one is missing. Each part creates a throw-away database on the
//! PostgreSQL of `TESSERA_TEST_PG_URL` (default: postgres@127.0.0.1:5432, trust auth) and
//! drops it afterwards; without a reachable PostgreSQL the bench prints one line and skips.
//!
//! - **Propagation.** Servers A and B on one log; an agent given only B's address; an X.509
//!   context stream open on it. Trial: `BatchCreateEntry` on A's admin socket (gRPC, no CLI
//!   process) → the stream delivers a context holding the new SPIFFE ID (the entry is then
//!   deleted, off the clock, so every context holds two SVIDs). Baseline in the same run,
//!   interleaved: the entry created on B, the agent's own server.
//! - **Failover.** Three servers on one log; an agent given all three addresses, `[sync]`
//!   backoff 100 ms..1 s; a stream open. Trial: SIGKILL the server the agent is connected to
//!   (its log says which) → the agent's log says its sync resumed (or restarted from a
//!   snapshot) on another server. The killed server then restarts on its data dir and port.
//!   The stream must stay open throughout, and still deliver a new entry at the end.
//!
//! `TESSERA_BENCH_QUICK=1` shrinks the trial counts for a smoke run.

// A benchmark measures wall time by definition; the library ban on clocks does not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "../tests/e2e/processes.rs"]
#[allow(dead_code)]
mod processes;
#[path = "support.rs"]
#[allow(dead_code)]
mod support;

use std::io::Read;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use processes::{my_uid, wait_until, AgentProc, ServerProc};
use spiffe::{WorkloadApiClient, WorkloadApiError, X509Context};
use support::{entry, pct, uds};
use tessera_eventlog::pg::testing::TestDatabase;
use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::{
    BatchCreateEntryRequest, BatchDeleteEntryRequest,
};
use tessera_proto::spire::api::types::Entry;
use tonic::transport::Channel;

/// Longest wait for any one step before the bench gives up.
const STEP: Duration = Duration::from_secs(30);
/// Agent log lines that say the sync stream is running on a server again.
const RESUMED: &str = "sync resumed from the agent's cursor";
const SNAPSHOT: &str = "sync started from a snapshot";

type Contexts = Pin<Box<dyn Stream<Item = Result<X509Context, WorkloadApiError>> + Send>>;

// === helpers ===

/// Stops with a clear message unless both binaries are where [`processes::bin`] looks.
fn binaries_or_exit() {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let missing: Vec<&str> = ["tessera-server", "tessera-agent"]
        .into_iter()
        .filter(|name| !dir.join(name).exists())
        .collect();
    if !missing.is_empty() {
        println!(
            "servers bench: {} not found in {}: build the binaries first with \
             `cargo build --release --bins`, then run `cargo bench -p tessera-agent --bench servers`",
            missing.join(" and "),
            dir.display()
        );
        std::process::exit(1);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// "p50 .. p99 .. max .. (n trials)".
fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "p50 {:>9}  p99 {:>9}  max {:>9}  ({} trials)",
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.99)),
        ms(v[v.len() - 1]),
        v.len()
    )
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {STEP:?}"))
}

/// Creates one entry through the admin API; returns its id.
async fn create(admin: &mut EntryClient<Channel>, e: Entry) -> String {
    let reply = admin
        .batch_create_entry(BatchCreateEntryRequest {
            entries: vec![e],
            output_mask: None,
        })
        .await
        .expect("BatchCreateEntry")
        .into_inner();
    let result = reply.results.into_iter().next().expect("one result");
    let status = result.status.unwrap_or_default();
    assert_eq!(status.code, 0, "entry create: {}", status.message);
    result.entry.expect("the created entry").id
}

async fn delete(admin: &mut EntryClient<Channel>, id: String) {
    let reply = admin
        .batch_delete_entry(BatchDeleteEntryRequest { ids: vec![id] })
        .await
        .expect("BatchDeleteEntry")
        .into_inner();
    let status = reply
        .results
        .into_iter()
        .next()
        .and_then(|r| r.status)
        .unwrap_or_default();
    assert_eq!(status.code, 0, "entry delete: {}", status.message);
}

fn has(ctx: &X509Context, spiffe_id: &str) -> bool {
    ctx.svids()
        .iter()
        .any(|s| s.spiffe_id().to_string() == spiffe_id)
}

fn ids(ctx: &X509Context) -> Vec<String> {
    let mut v: Vec<String> = ctx
        .svids()
        .iter()
        .map(|s| s.spiffe_id().to_string())
        .collect();
    v.sort();
    v
}

/// Connects to the agent's Workload API and opens an X.509 context stream once it holds an
/// identity for `spiffe_id` (before that the agent answers PermissionDenied).
async fn open_stream(endpoint: &str, spiffe_id: &str) -> Contexts {
    within("an X.509 context stream holding the first entry", async {
        loop {
            if let Ok(client) = WorkloadApiClient::connect_to(endpoint).await {
                if let Ok(s) = client.stream_x509_contexts().await {
                    let mut s: Contexts = Box::pin(s);
                    if let Some(Ok(first)) = s.next().await {
                        if has(&first, spiffe_id) {
                            return s;
                        }
                        // The entry is on its way: the next contexts will hold it.
                        while let Some(Ok(ctx)) = s.next().await {
                            if has(&ctx, spiffe_id) {
                                return s;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

async fn next_context(stream: &mut Contexts, what: &str) -> X509Context {
    match within(what, stream.next()).await {
        Some(Ok(ctx)) => ctx,
        Some(Err(e)) => panic!("{what}: the Workload API stream failed: {e}"),
        None => panic!("{what}: the Workload API stream ended"),
    }
}

fn agent_id(token: &str) -> String {
    format!("spiffe://example.org/spire/agent/join_token/{token}")
}

fn wait_attested(server: &ServerProc, agent_id: &str, agent_dir: &Path) {
    let log = agent_dir.join("agent.log");
    wait_until(
        &format!("the agent's attestation (agent log: {})", log.display()),
        || String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).contains(agent_id),
    );
}

/// Reads the lines an agent appends to its log, and which server it is connected to.
struct AgentLog {
    file: std::fs::File,
    /// Bytes after the last complete line.
    partial: Vec<u8>,
    /// The address of the last "connected to its first server" / "switched server" line.
    current: Option<String>,
}

impl AgentLog {
    fn open(path: &Path) -> AgentLog {
        AgentLog {
            file: std::fs::File::open(path).expect("the agent's log"),
            partial: Vec::new(),
            current: None,
        }
    }

    /// Complete lines written since the last call.
    fn lines(&mut self) -> Vec<String> {
        self.file.read_to_end(&mut self.partial).unwrap();
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        let lines: Vec<String> = String::from_utf8_lossy(&done)
            .lines()
            .map(str::to_owned)
            .collect();
        for line in &lines {
            if line.contains("agent connected to its first server")
                || line.contains("agent switched server")
            {
                self.current = field(line, "server");
            }
        }
        lines
    }
}

/// The value of `key=` in a tracing line (`... server=127.0.0.1:8081 cursor=7`).
fn field(line: &str, key: &str) -> Option<String> {
    line.split(&format!(" {key}="))
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_owned)
}

fn port_of(address: &str) -> Option<u16> {
    address.rsplit(':').next().and_then(|p| p.parse().ok())
}

// === propagation ===

/// One trial: creates `path` through `admin`, waits for it on the stream, deletes it and waits
/// for it to go. Returns (create sent → context with it, create sent → create answered).
async fn propagate(
    admin: &mut EntryClient<Channel>,
    stream: &mut Contexts,
    agent_id: &str,
    uid: u32,
    path: &str,
) -> (Duration, Duration) {
    let want = format!("spiffe://example.org{path}");
    let start = Instant::now();
    let id = create(admin, entry(path, agent_id, uid)).await;
    let answered = start.elapsed();
    while !has(&next_context(stream, "the new entry's SVID").await, &want) {}
    let seen = start.elapsed();
    delete(admin, id).await;
    while has(&next_context(stream, "the deletion").await, &want) {}
    (seen, answered)
}

async fn propagation(url: &str, root: &Path, trials: usize) {
    let a = ServerProc::start_pg(&root.join("a"), url, "server-a", "");
    let b = ServerProc::start_pg(&root.join("b"), url, "server-b", "");
    let bundle = b.bundle_file();
    let token = b.token();
    let agent_id = agent_id(&token);
    let agent_dir = root.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let b_address = format!("127.0.0.1:{}", b.port);
    let agent = AgentProc::start_servers(
        &agent_dir,
        &[b_address.as_str()],
        &bundle,
        Some(&token),
        None,
    );
    wait_attested(&b, &agent_id, &agent_dir);
    let uid = my_uid();
    let mut admin_a = EntryClient::new(uds(a.sock.clone()));
    let mut admin_b = EntryClient::new(uds(b.sock.clone()));
    create(&mut admin_b, entry("/base", &agent_id, uid)).await;
    let mut stream = open_stream(&agent.endpoint(), "spiffe://example.org/base").await;

    let warm_up = 5;
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    let (mut answered_a, mut answered_b) = (Vec::new(), Vec::new());
    // Interleaved, so both see the same machine and the same database.
    for i in 0..warm_up + trials {
        let (seen, answered) = propagate(
            &mut admin_a,
            &mut stream,
            &agent_id,
            uid,
            &format!("/via-a/{i}"),
        )
        .await;
        if i >= warm_up {
            on_a.push(seen);
            answered_a.push(answered);
        }
        let (seen, answered) = propagate(
            &mut admin_b,
            &mut stream,
            &agent_id,
            uid,
            &format!("/via-b/{i}"),
        )
        .await;
        if i >= warm_up {
            on_b.push(seen);
            answered_b.push(answered);
        }
    }
    println!(
        "propagation: servers A and B on one PostgreSQL log, agent connected to B only; \
         BatchCreateEntry sent -> X.509 context with the new SPIFFE ID on the agent's open stream"
    );
    println!("  entry created on A (the other server): {}", summary(on_a));
    println!(
        "  entry created on B (baseline, agent's): {}",
        summary(on_b)
    );
    println!(
        "  BatchCreateEntry answered, on A:       {}",
        summary(answered_a)
    );
    println!(
        "  BatchCreateEntry answered, on B:       {}",
        summary(answered_b)
    );
    drop(stream);
    drop(agent);
    drop((a, b));
}

// === failover ===

/// What one failover trial saw.
struct Failover {
    /// SIGKILL → "agent switched server".
    switched: Duration,
    /// SIGKILL → "sync resumed" / "sync started from a snapshot" on another server.
    resumed: Duration,
    /// Resumed from the agent's cursor (not a snapshot).
    from_cursor: bool,
    /// The killed server's restart (start → admin socket answering).
    restart: Duration,
}

/// Kills the server the agent is connected to and waits until its sync runs on another.
async fn fail_over(servers: &mut [ServerProc], log: &mut AgentLog, round: usize) -> Failover {
    log.lines();
    let current = log
        .current
        .clone()
        .expect("the agent's log names its server");
    let port = port_of(&current).expect("a port in the agent's server address");
    let victim = servers
        .iter()
        .position(|s| s.port == port)
        .unwrap_or_else(|| panic!("the agent is connected to {current}, which is none of ours"));
    let start = Instant::now();
    servers[victim].kill();
    let mut switched = None;
    let (resumed, from_cursor, on) = loop {
        let mut done = None;
        for line in log.lines() {
            if switched.is_none() && line.contains("agent switched server") {
                switched = Some(start.elapsed());
            }
            if done.is_none() && (line.contains(RESUMED) || line.contains(SNAPSHOT)) {
                done = Some((
                    start.elapsed(),
                    line.contains(RESUMED),
                    field(&line, "server"),
                ));
            }
        }
        if let Some(done) = done {
            break done;
        }
        assert!(
            start.elapsed() < STEP,
            "round {round}: the agent's sync did not resume within {STEP:?} of killing {current}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let on = on.unwrap_or_default();
    assert_ne!(
        port_of(&on),
        Some(port),
        "round {round}: the sync resumed on the killed server {on}"
    );
    // Back on its data dir and port (the agent keeps its address list); its log kept aside.
    let dir = servers[victim].dir.clone();
    let _ = std::fs::rename(
        dir.join("server.log"),
        dir.join(format!("server.log.{round}")),
    );
    let restart = Instant::now();
    servers[victim] = ServerProc::start_with(&dir, port, Some(&dir.join("server.toml")));
    Failover {
        switched: switched.unwrap_or(resumed),
        resumed,
        from_cursor,
        restart: restart.elapsed(),
    }
}

async fn failover(url: &str, root: &Path, trials: usize) {
    let mut servers: Vec<ServerProc> = (0..3)
        .map(|i| ServerProc::start_pg(&root.join(format!("s{i}")), url, &format!("server-{i}"), ""))
        .collect();
    // Every server's CA in the bootstrap bundle: the agent may attest on any of them.
    wait_until("every server's CA in each bundle", || {
        servers.iter().all(|s| {
            String::from_utf8_lossy(&s.cli(&["bundle", "show"]).stdout)
                .matches("BEGIN CERTIFICATE")
                .count()
                >= 3
        })
    });
    let bundle = servers[0].bundle_file();
    let token = servers[0].token();
    let agent_id = agent_id(&token);
    let agent_dir = root.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let conf = agent_dir.join("agent.toml");
    std::fs::write(
        &conf,
        "[sync]\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n",
    )
    .unwrap();
    let addresses: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let agent =
        AgentProc::start_servers(&agent_dir, &addresses, &bundle, Some(&token), Some(&conf));
    wait_attested(&servers[0], &agent_id, &agent_dir);
    let uid = my_uid();
    let mut admin = EntryClient::new(uds(servers[0].sock.clone()));
    create(&mut admin, entry("/base", &agent_id, uid)).await;
    let mut stream = open_stream(&agent.endpoint(), "spiffe://example.org/base").await;

    // The stream is read throughout, off the trials' clock; whatever it yields is kept.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Vec<String>, String>>();
    let reader = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            if tx
                .send(item.map(|c| ids(&c)).map_err(|e| e.to_string()))
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Err("the stream ended".into()));
    });

    let mut log = AgentLog::open(&agent_dir.join("agent.log"));
    let warm_up = 1;
    let mut seen = Vec::new();
    let mut contexts = 0;
    for round in 0..warm_up + trials {
        let f = fail_over(&mut servers, &mut log, round).await;
        if round >= warm_up {
            seen.push(f);
        }
        while let Ok(item) = rx.try_recv() {
            match item {
                Ok(_) => contexts += 1,
                Err(e) => {
                    panic!("round {round}: the Workload API stream broke during the failover: {e}")
                }
            }
        }
        // Let the restarted server settle before the next kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Still open: an entry created now reaches it.
    let mut admin = EntryClient::new(uds(servers[0].sock.clone()));
    let start = Instant::now();
    create(&mut admin, entry("/after", &agent_id, uid)).await;
    let after = within("the entry created after the failovers", async {
        loop {
            match rx.recv().await {
                Some(Ok(v)) if v.iter().any(|id| id == "spiffe://example.org/after") => {
                    return start.elapsed();
                }
                Some(Ok(_)) => contexts += 1,
                Some(Err(e)) => panic!("the Workload API stream broke: {e}"),
                None => panic!("the stream's reader ended"),
            }
        }
    })
    .await;

    let cursor = seen.iter().filter(|f| f.from_cursor).count();
    let n = seen.len();
    let switched = seen.iter().map(|f| f.switched).collect();
    let resumed = seen.iter().map(|f| f.resumed).collect();
    let restart = seen.iter().map(|f| f.restart).collect();
    println!(
        "failover: 3 servers on one PostgreSQL log, agent given all three ([sync] backoff \
         100ms..1s); SIGKILL the agent's server ->"
    );
    println!(
        "  agent switched server (log):            {}",
        summary(switched)
    );
    println!(
        "  sync running on another server (log):   {}",
        summary(resumed)
    );
    println!(
        "  resumed from the agent's cursor in {cursor} of {n} trials ({} from a snapshot)",
        n - cursor
    );
    println!(
        "  killed server restarted (not a target): {}",
        summary(restart)
    );
    println!(
        "  Workload API stream: stayed open through {} failovers ({contexts} contexts \
         received meanwhile); an entry created afterwards reached it in {}",
        warm_up + trials,
        ms(after)
    );
    reader.abort();
    drop(agent);
    drop(servers);
}

fn main() {
    binaries_or_exit();
    let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok();
    let (propagation_trials, failover_trials) = if quick { (20, 3) } else { (200, 30) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("tessera servers bench: real processes, one PostgreSQL log ({cpus} CPUs)");
    rt.block_on(async {
        let Some(db) = TestDatabase::create().await.unwrap() else {
            println!("servers bench: skipped, no PostgreSQL reachable (see the line above)");
            return;
        };
        let root = tempfile::tempdir().unwrap();
        propagation(
            db.url(),
            &root.path().join("propagation"),
            propagation_trials,
        )
        .await;
        db.cleanup().await.unwrap();

        let db = TestDatabase::create()
            .await
            .unwrap()
            .expect("PostgreSQL, as a moment ago");
        failover(db.url(), &root.path().join("failover"), failover_trials).await;
        db.cleanup().await.unwrap();
    });
}
