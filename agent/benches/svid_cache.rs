//! The agent's LRU SVID cache at scale (issue 12 §3-4), with real processes and real crypto:
//! one agent whose view holds 100,000 entries, 100 of them used by a workload (this process,
//! through an open `FetchX509SVID` stream). Printed, not asserted:
//!
//! - server X.509 signatures in the first minute after the agent starts (the server's
//!   `svids_signed_total` counter), goal ≈ used + cache size, not 100,000;
//! - the agent's resident memory at the end of that minute and its peak (VmRSS, VmHWM),
//!   goal < 64 MB; the size of its cache file and the SVIDs in it;
//! - the workload's wait from opening the stream to a message holding all its SVIDs.
//!
//! Two runs in one: `x509_svid_cache_max_size` = 1000 (the default) and a baseline of
//! 200,000 (at least the view: everything signed eagerly, the behaviour before the cache).
//!
//! ```sh
//! cargo build --release -p tessera-server -p tessera-agent
//! cargo bench -p tessera-agent --bench svid_cache
//! ```
//!
//! `TESSERA_BENCH_QUICK=1`: 10,000 entries and a 20 s window; `TESSERA_BENCH_ENTRIES=N`:
//! N entries; `TESSERA_BENCH_NO_BASELINE=1`: the default cache only.
//!
//! The entries name the agent as their parent. A node alias gives the agent the same view
//! (the agent does not see how an entry reached it), but join-token agents carry no node
//! selectors for an alias to match, and this bench uses join tokens.

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

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use processes::{my_uid, wait_until, AgentProc, ServerProc};
use support::{entry, uds};
use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::BatchCreateEntryRequest;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tessera_proto::workload::X509svidRequest;

const USED: usize = 100;
const BATCH: usize = 1_000;

/// `VmRSS` and `VmHWM` of `pid`, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The server's X.509 signatures so far, from its Prometheus endpoint.
fn x509_signatures(port: u16) -> u64 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("tessera_server_svids_signed_total{")
                && l.contains("kind=\"x509\"")
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cache_file(dir: &Path) -> (u64, usize) {
    let path = dir.join("agent/cache.bin");
    let bytes = std::fs::read(&path).unwrap_or_default();
    let svids =
        tessera_eventlog::typed::decode_state::<tessera_actors::agent::cache::Cache>(0, &bytes)
            .map_or(0, |c| c.svids.len());
    (bytes.len() as u64, svids)
}

struct Figures {
    signatures: u64,
    rss_kib: u64,
    hwm_kib: u64,
    file_bytes: u64,
    file_svids: usize,
    first_fetch: Option<Duration>,
}

fn run(
    rt: &tokio::runtime::Runtime,
    cache_size: usize,
    entries: usize,
    window: Duration,
) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let health = free_port();
    let server_conf = dir.path().join("server.toml");
    std::fs::write(
        &server_conf,
        format!("[health_checks]\nlistener_enabled = true\nbind_address = \"127.0.0.1\"\nbind_port = {health}\n"),
    )
    .unwrap();
    let server = ServerProc::start_with(dir.path(), 0, Some(&server_conf));
    let bundle = server.bundle_file();
    let token = server.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let uid = my_uid();
    let other_uid = uid + 1_000_000;

    // The view, before the agent exists: 100,000 entries no workload here matches, and the
    // 100 this process matches.
    let created = Instant::now();
    rt.block_on(async {
        let mut admin = EntryClient::new(uds(server.sock.clone()));
        for chunk in 0..entries.div_ceil(BATCH) {
            let entries = (chunk * BATCH..((chunk + 1) * BATCH).min(entries))
                .map(|i| entry(&format!("/view/{i}"), &agent_id, other_uid))
                .collect();
            admin
                .batch_create_entry(BatchCreateEntryRequest {
                    entries,
                    output_mask: None,
                })
                .await
                .unwrap();
        }
        let entries = (0..USED)
            .map(|i| entry(&format!("/used/{i}"), &agent_id, uid))
            .collect();
        admin
            .batch_create_entry(BatchCreateEntryRequest {
                entries,
                output_mask: None,
            })
            .await
            .unwrap();
    });
    println!(
        "  {} entries created in {:.1} s",
        entries + USED,
        created.elapsed().as_secs_f64()
    );
    let before = x509_signatures(health);

    let agent_conf = dir.path().join("agent.toml");
    std::fs::write(
        &agent_conf,
        format!("[agent]\nx509_svid_cache_max_size = {cache_size}\n"),
    )
    .unwrap();
    let start = Instant::now();
    let agent = AgentProc::start_with(
        dir.path(),
        server.port,
        &bundle,
        Some(&token),
        Some(&agent_conf),
    );
    wait_until("the agent's socket", || agent.sock.exists());

    // The workload: an open stream, from the first moment the agent answers for it, until the
    // window ends. The wait counts from the first attempt that the agent accepted.
    let first_fetch = rt.block_on(async {
        let mut workload = SpiffeWorkloadApiClient::new(uds(agent.sock.clone()));
        let deadline = start + window;
        let mut stream = None;
        let mut waited = None;
        while Instant::now() < deadline {
            let mut req = tonic::Request::new(X509svidRequest {});
            req.metadata_mut()
                .insert("workload.spiffe.io", "true".parse().unwrap());
            let asked = Instant::now();
            if let Ok(s) = workload.fetch_x509svid(req).await {
                let mut s = s.into_inner();
                if let Ok(Some(Ok(first))) =
                    tokio::time::timeout(deadline - Instant::now(), s.next()).await
                {
                    if first.svids.len() == USED {
                        waited = Some(asked.elapsed());
                        stream = Some(s);
                        break;
                    }
                    // Fewer than all: keep reading this stream until all are there.
                    let mut s = s;
                    while let Ok(Some(Ok(next))) =
                        tokio::time::timeout(deadline - Instant::now(), s.next()).await
                    {
                        if next.svids.len() == USED {
                            waited = Some(asked.elapsed());
                            break;
                        }
                    }
                    stream = Some(s);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Hold the stream (the workload uses its SVIDs) until the window ends.
        let left = (start + window).saturating_duration_since(Instant::now());
        tokio::time::sleep(left).await;
        drop(stream);
        waited
    });
    let signatures = x509_signatures(health) - before;
    let (rss_kib, hwm_kib) = memory_kib(agent.child.id());
    let (file_bytes, file_svids) = cache_file(dir.path());
    drop(agent);
    drop(server);
    Figures {
        signatures,
        rss_kib,
        hwm_kib,
        file_bytes,
        file_svids,
        first_fetch,
    }
}

fn main() {
    let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok();
    let (mut entries, window) = if quick {
        (10_000, Duration::from_secs(20))
    } else {
        (100_000, Duration::from_secs(60))
    };
    if let Some(n) = std::env::var("TESSERA_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        entries = n;
    }
    let baseline = std::env::var("TESSERA_BENCH_NO_BASELINE").is_err();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "tessera-agent svid_cache bench: {entries} entries in view, {USED} used by an open \
         stream, {} s window (server and agent as release processes, real crypto)",
        window.as_secs()
    );
    let mut rows = Vec::new();
    let runs: &[(&str, usize)] = if baseline {
        &[
            ("x509_svid_cache_max_size = 1000 (default)", 1_000),
            ("baseline: 200000 (all eager)", 200_000),
        ]
    } else {
        &[("x509_svid_cache_max_size = 1000 (default)", 1_000)]
    };
    for &(name, size) in runs {
        println!("{name}:");
        let f = run(&rt, size, entries, window);
        println!(
            "  server X.509 signatures in the window: {}\n  agent resident memory: {:.1} MiB at the window's end, peak {:.1} MiB\n  cache file: {:.1} MiB, {} SVIDs\n  workload's wait for its {USED} SVIDs: {}",
            f.signatures,
            f.rss_kib as f64 / 1024.0,
            f.hwm_kib as f64 / 1024.0,
            f.file_bytes as f64 / 1_048_576.0,
            f.file_svids,
            f.first_fetch.map_or_else(|| "not within the window".to_owned(), |d| format!("{d:?}")),
        );
        rows.push((name, f));
    }
    println!(
        "summary ({entries} entries, {USED} used, first {} s):",
        window.as_secs()
    );
    for (name, f) in &rows {
        println!(
            "  {name:<44} signatures {:>7}  RSS {:>6.1} MiB  peak {:>6.1} MiB  file {:>6.1} MiB",
            f.signatures,
            f.rss_kib as f64 / 1024.0,
            f.hwm_kib as f64 / 1024.0,
            f.file_bytes as f64 / 1_048_576.0
        );
    }
}
