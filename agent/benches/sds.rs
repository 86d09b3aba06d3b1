//! Envoy SDS on the Workload API socket, printed (not asserted): the time from opening a new
//! `StreamSecrets` stream (first request, `default`, already queued) to its first secret, p50
//! and p99 over `TRIALS`, and in the same run, interleaved trial by trial, the Workload API's
//! `FetchX509SVID` first message, with the ratio of the two.
//!
//! Both go to the same server: the real Workload API + SDS server on a temp Unix socket with
//! the real `unix` attestor, serving the black-box tests' identity source (one SVID for this
//! process, real certificates) — the in-process fixture of `tests/agent/support.rs`, so no
//! server process and no node attestation are needed. Each trial opens a new gRPC stream on
//! one connection, as a long-lived Envoy or workload does.
//!
//! ```sh
//! cargo bench -p tessera-agent --bench sds
//! ```
//!
//! `TESSERA_BENCH_QUICK=1`: 20 trials.

// A benchmark measures wall time by definition; the library ban on clocks does not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "support.rs"]
#[allow(dead_code)]
mod bench_support;
#[path = "../tests/agent/support.rs"]
mod support;

use std::time::{Duration, Instant};

use bench_support::pct;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use futures::StreamExt;
use support::{TestAgent, World};
use tessera_agent::sds::SECRET_TYPE_URL;
use tessera_proto::workload::X509svidRequest;

fn main() {
    let trials = if std::env::var("TESSERA_BENCH_QUICK").is_ok() {
        20
    } else {
        200
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let world = World::new();
        let agent = TestAgent::start(world.source.clone()).await;
        let mut workload = agent.client().await;
        let mut sds = SecretDiscoveryServiceClient::new(agent.channel().await);
        let request = DiscoveryRequest {
            resource_names: vec!["default".into()],
            type_url: SECRET_TYPE_URL.into(),
            ..DiscoveryRequest::default()
        };
        // Warm-up: connections, attestation paths, allocator.
        for _ in 0..10 {
            first_secret(&mut sds, &request).await;
            first_svid(&mut workload).await;
        }
        let (mut s, mut w) = (Vec::with_capacity(trials), Vec::with_capacity(trials));
        for _ in 0..trials {
            s.push(first_secret(&mut sds, &request).await);
            w.push(first_svid(&mut workload).await);
        }
        s.sort();
        w.sort();
        println!("tessera-agent SDS bench (in-process server, real unix attestor; {trials} trials, interleaved)");
        println!(
            "SDS StreamSecrets, new stream -> first secret:   p50 {:?}  p99 {:?}",
            pct(&s, 0.5),
            pct(&s, 0.99)
        );
        println!(
            "Workload API FetchX509SVID -> first message:     p50 {:?}  p99 {:?}",
            pct(&w, 0.5),
            pct(&w, 0.99)
        );
        println!(
            "ratio SDS / Workload API:                         p50 {:.2}x  p99 {:.2}x",
            ratio(pct(&s, 0.5), pct(&w, 0.5)),
            ratio(pct(&s, 0.99), pct(&w, 0.99))
        );
    });
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Opens a stream, its first request queued, and waits for the first secret.
async fn first_secret(
    sds: &mut SecretDiscoveryServiceClient<tonic::transport::Channel>,
    request: &DiscoveryRequest,
) -> Duration {
    let t = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request.clone()).await.unwrap();
    let mut stream = sds
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let elapsed = t.elapsed();
    assert_eq!(first.resources.len(), 1);
    elapsed
}

async fn first_svid(workload: &mut support::WorkloadClient) -> Duration {
    let t = Instant::now();
    let mut stream = workload
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let elapsed = t.elapsed();
    assert_eq!(first.svids.len(), 1);
    elapsed
}
