//! Signing priority, printed (not asserted):
//! `cargo bench -p tessera-actors --bench signing_priority`.
//!
//! A fleet's bulk renewal fills the signer (batches of CSRs signed as `Priority::Bulk`); while
//! that backlog is queued, single CSRs are signed one after another, first as on-demand work
//! (a workload waiting on its first SVID), then, for comparison, as bulk work (the order
//! without priorities). Prints the first sample (the one that meets the whole backlog), the
//! median, 90th percentile and maximum of each, and what was left of the backlog.
//!
//! `TESSERA_BENCH_QUICK=1` shrinks the sizes for a smoke run.

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

use rcgen::{CertificateParams, KeyPair};
use tessera_actors::random::OsRandom;
use tessera_actors::server::authority::signer::priority::Priority;
use tessera_actors::server::authority::X509SvidRequest;
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_eventlog::{LocalLog, SystemClock};
use tessera_identity::{SpiffeId, TrustDomain};

fn csr() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

fn request(csr: &[u8], path: &str) -> X509SvidRequest {
    X509SvidRequest {
        csr_der: csr.to_vec(),
        spiffe_id: SpiffeId::new(&format!("spiffe://example.org{path}")).unwrap(),
        dns_names: vec![],
        ttl: None,
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Latencies (ms) of `samples` single CSRs signed at `priority` while `batches` bulk batches
/// of `batch` CSRs are queued; and how many bulk CSRs were still queued at the end.
async fn run(
    server: &Server,
    priority: Priority,
    batches: usize,
    batch: usize,
    samples: usize,
) -> (Vec<f64>, usize) {
    let signer = server.authority.signer().clone();
    let one = csr();
    let mut backlog = Vec::new();
    for b in 0..batches {
        let signer = signer.clone();
        let requests: Vec<X509SvidRequest> = (0..batch)
            .map(|i| request(&one, &format!("/bulk/{b}/{i}")))
            .collect();
        backlog.push(tokio::spawn(async move {
            signer
                .sign_x509_batch_as(requests, Priority::Bulk)
                .await
                .unwrap();
        }));
    }
    // Until the backlog is admitted and waiting for the workers.
    for _ in 0..10_000 {
        if signer.jobs_waiting() >= batches * batch / 64 / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut latencies = Vec::new();
    for s in 0..samples {
        let started = Instant::now();
        let out = signer
            .sign_x509_batch_as(vec![request(&one, &format!("/first/{s}"))], priority)
            .await
            .unwrap();
        assert!(out[0].is_ok());
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let left = signer.queued();
    for t in backlog {
        t.await.unwrap();
    }
    (latencies, left)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok();
    let (batches, batch, samples) = if quick { (4, 500, 5) } else { (8, 1_000, 20) };
    let clock = Arc::new(SystemClock);
    let log = Arc::new(LocalLog::in_memory(clock.clone()));
    let mut settings = ServerSettings::new(TrustDomain::new("example.org").unwrap());
    settings.authority.tick_interval = None;
    let server = Server::start(settings, log, clock, Arc::new(OsRandom::new()))
        .await
        .unwrap();
    server.authority.tick().await.unwrap();
    let jobs = server.authority.signer().settings().max_concurrent_jobs;
    println!(
        "signing priority: backlog of {batches} bulk batches x {batch} CSRs, {samples} single CSRs \
         signed one after another while it is queued; {jobs} signing jobs at once"
    );
    for (name, priority) in [
        ("on demand (first SVID)", Priority::OnDemand),
        ("as bulk (no priority)", Priority::Bulk),
    ] {
        let (latencies, left) = run(&server, priority, batches, batch, samples).await;
        println!(
            "  {name:24} first {:8.1} ms   median {:8.1} ms   p90 {:8.1} ms   max {:8.1} ms   (bulk CSRs still queued after: {left})",
            latencies.first().copied().unwrap_or_default(),
            percentile(latencies.clone(), 0.5),
            percentile(latencies.clone(), 0.9),
            percentile(latencies, 1.0),
        );
    }
    server.stop().await;
}
