//! Agent figures with real processes, printed (not asserted). Build both binaries first:
//!
//! ```sh
//! cargo build --release -p tessera-server -p tessera-agent
//! cargo bench -p tessera-agent --bench agent
//! ```
//!
//! - entry created on the server (admin API call returned) → new SVID on an already open
//!   `FetchX509SVID` stream: p50 / p99 over `TRIALS` entries;
//! - `FetchX509SVID` first message (cached SVID) p50 / p99, next to a bare tonic unary call
//!   (gRPC health `Check`) over a Unix socket in the same run;
//! - agent resident memory with 10,000 cached SVIDs.
//!
//! `TESSERA_BENCH_QUICK=1` shrinks every size.

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

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use processes::{my_uid, wait_until, AgentProc, ServerProc};
use support::{entry, pct, uds};
use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::BatchCreateEntryRequest;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tessera_proto::workload::X509svidRequest;

fn workload_request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn cached_svids(data_dir: &Path) -> usize {
    std::fs::read(data_dir.join("agent/cache.bin"))
        .ok()
        .and_then(|b| {
            tessera_eventlog::typed::decode_state::<tessera_actors::agent::cache::Cache>(0, &b).ok()
        })
        .map_or(0, |c| c.svids.len())
}

fn main() {
    let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok();
    let trials = if quick { 20 } else { 200 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), 0);
    let bundle = server.bundle_file();
    let token = server.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    // Every entry signed eagerly (an SVID cache past the 10,000 entries below): the memory
    // figure is per cached SVID. benches/svid_cache.rs measures the default cache.
    let agent_conf = dir.path().join("agent.toml");
    std::fs::write(&agent_conf, "[agent]\nx509_svid_cache_max_size = 1000000\n").unwrap();
    let agent = AgentProc::start_with(
        dir.path(),
        server.port,
        &bundle,
        Some(&token),
        Some(&agent_conf),
    );
    wait_until("attestation", || {
        String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).contains(&agent_id)
    });
    let uid = my_uid();
    println!("tessera-agent bench (server and agent as processes; {trials} trials)");

    rt.block_on(async {
        let mut admin = EntryClient::new(uds(server.sock.clone()));
        let mut workload = SpiffeWorkloadApiClient::new(uds(agent.sock.clone()));

        // --- entry created -> SVID on an open stream ---
        admin.batch_create_entry(BatchCreateEntryRequest { entries: vec![entry("/bench/0", &agent_id, uid)], output_mask: None }).await.unwrap();
        let mut stream = loop {
            match workload.fetch_x509svid(workload_request(X509svidRequest {})).await {
                Ok(s) => {
                    let mut s = s.into_inner();
                    if let Some(Ok(first)) = s.next().await {
                        if !first.svids.is_empty() {
                            break s;
                        }
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        // --- FetchX509SVID first message vs a bare unary call (one SVID for this caller) ---
        let bare_sock = dir.path().join("bare.sock");
        let listener = tokio::net::UnixListener::bind(&bare_sock).unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(tonic::transport::Server::builder().add_service(health).serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)));
        let mut bare = tonic_health::pb::health_client::HealthClient::new(uds(bare_sock));
        let n = if quick { 100 } else { 2_000 };
        let (mut b, mut f) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let t = Instant::now();
            bare.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
            b.push(t.elapsed());
            let t = Instant::now();
            let mut s = workload.fetch_x509svid(workload_request(X509svidRequest {})).await.unwrap().into_inner();
            let first = s.next().await.unwrap().unwrap();
            f.push(t.elapsed());
            assert!(!first.svids.is_empty());
        }
        b.sort();
        f.sort();
        println!(
            "bare tonic unary over a Unix socket:           p50 {:?}  p99 {:?}",
            pct(&b, 0.5),
            pct(&b, 0.99)
        );
        println!(
            "FetchX509SVID first message ({} SVIDs cached): p50 {:?}  p99 {:?}  ({:.2}x the bare p50)",
            1,
            pct(&f, 0.5),
            pct(&f, 0.99),
            pct(&f, 0.5).as_secs_f64() / pct(&b, 0.5).as_secs_f64()
        );

        let mut lat = Vec::with_capacity(trials);
        for i in 1..=trials {
            let want = format!("spiffe://example.org/bench/{i}");
            admin.batch_create_entry(BatchCreateEntryRequest { entries: vec![entry(&format!("/bench/{i}"), &agent_id, uid)], output_mask: None }).await.unwrap();
            let created = Instant::now();
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.unwrap().unwrap().unwrap();
                if msg.svids.iter().any(|s| s.spiffe_id == want) {
                    lat.push(created.elapsed());
                    break;
                }
            }
        }
        lat.sort();
        println!("entry created -> SVID on an open stream: p50 {:?}  p99 {:?}  max {:?}", pct(&lat, 0.5), pct(&lat, 0.99), lat[lat.len() - 1]);
        drop(stream);
        // --- resident memory with 10,000 cached SVIDs ---
        let target = if quick { 1_000 } else { 10_000 };
        let before = rss_kib(agent.child.id());
        let other_uid = uid + 1_000_000; // cached, not served to this process
        for chunk in 0..(target / 1_000) {
            let entries = (0..1_000).map(|i| entry(&format!("/mem/{}", chunk * 1_000 + i), &agent_id, other_uid)).collect();
            admin.batch_create_entry(BatchCreateEntryRequest { entries, output_mask: None }).await.unwrap();
        }
        let start = Instant::now();
        while cached_svids(dir.path()) < target + trials && start.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let cached = cached_svids(dir.path());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(agent.child.id());
        println!(
            "agent resident memory: {:.1} MiB with {} cached SVIDs ({:.1} MiB before the {target} extra; {:.1} s to sign them all)",
            after as f64 / 1024.0,
            cached,
            before as f64 / 1024.0,
            start.elapsed().as_secs_f64()
        );
    });
    drop(agent);
    drop(server);
}
