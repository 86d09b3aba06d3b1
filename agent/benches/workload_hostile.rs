//! The Workload API's memory under the issue-11 attack, printed (not asserted): the real
//! Workload API in this process on a temp socket (default `[workload_api]` policy), then
//! `CONNS` local connections that each send a 1 MiB header block without END_HEADERS and stay
//! open. Resident memory (VmRSS) is read before, at the end of the attack and once the server
//! has had a moment to drop what it refused; VmHWM is the peak.
//!
//! ```sh
//! cargo bench -p tessera-agent --bench workload_hostile
//! ```
//!
//! Two shapes: (a) one 1 MiB HEADERS frame (the reviewer's: 400 such connections took the
//! agent from 12 MB to 851 MB before the fix); (b) a 16 KiB HEADERS frame followed by 63
//! CONTINUATION frames of 16 KiB (each frame within h2's frame size). Goal: growth under 50 MB.
//! `TESSERA_BENCH_CONNS` changes the connection count (default 400).

// A benchmark measures wall time by definition; the library ban on clocks does not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tessera_actors::agent::view::{
    HeldJwtSvid, Identity, IdentitySnapshot, JwtFetchError, WorkloadSource,
};
use tessera_agent::attestor::unix::{UnixAttestor, UnixAttestorConfig};
use tessera_agent::attestor::Attestors;
use tessera_agent::config::workload_api::WorkloadApiSection;
use tessera_agent::workload_api::{self, Limits, Settings};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::watch;

#[derive(Debug)]
struct Empty(watch::Sender<Arc<IdentitySnapshot>>);

impl WorkloadSource for Empty {
    fn identities(&self) -> watch::Receiver<Arc<IdentitySnapshot>> {
        self.0.subscribe()
    }

    fn fetch_jwt<'a>(
        &'a self,
        _: &'a Identity,
        _: &'a [String],
    ) -> BoxFuture<'a, Result<HeldJwtSvid, JwtFetchError>> {
        Box::pin(async { Err(JwtFetchError::Unavailable("bench".into())) })
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut h = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    h.extend(stream.to_be_bytes());
    h
}

/// One attacking connection: the preface, SETTINGS, then `shape`'s header block (1 MiB in
/// all) without END_HEADERS. Write errors (the server closed) end the attack early.
async fn attack(path: &std::path::Path, continuation: bool, filler: Arc<Vec<u8>>) -> UnixStream {
    let mut s = UnixStream::connect(path).await.unwrap();
    let go = async {
        s.write_all(PREFACE).await?;
        s.write_all(&frame_header(0, 0x4, 0, 0)).await?;
        if continuation {
            s.write_all(&frame_header(16_384, 0x1, 0, 1)).await?;
            s.write_all(&filler[..16_384]).await?;
            for _ in 0..63 {
                s.write_all(&frame_header(16_384, 0x9, 0, 1)).await?;
                s.write_all(&filler[..16_384]).await?;
            }
        } else {
            s.write_all(&frame_header(1 << 20, 0x1, 0, 1)).await?;
            s.write_all(&filler).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), go).await;
    s
}

async fn run(conns: usize, continuation: bool) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("public/api.sock");
    let (listener, _guard) = workload_api::socket::bind(&socket).await.unwrap();
    let (tx, _) = watch::channel(Arc::new(IdentitySnapshot::default()));
    let source: Arc<dyn WorkloadSource> = Arc::new(Empty(tx));
    let limits = Limits::default();
    let attestors = Attestors::new(
        vec![Arc::new(UnixAttestor::new(UnixAttestorConfig::default()))],
        limits.attestation_timeout,
    );
    let settings = Settings::new(limits).unwrap();
    let policy = WorkloadApiSection::default().to_policy();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(workload_api::serve_with(
        listener,
        source,
        attestors,
        settings,
        policy,
        async move {
            let _ = stopped.await;
        },
    ));
    // One attack first, so that what the server allocates once (lazily) is in the baseline.
    drop(attack(&socket, false, Arc::new(vec![0u8; 1 << 20])).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let filler = Arc::new(vec![b'a'; 1 << 20]);
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(attack_owned(socket.clone(), continuation, filler.clone())))
        .collect();
    let mut open = Vec::with_capacity(conns);
    for t in tasks {
        open.push(t.await.unwrap());
    }
    let took = started.elapsed();
    let during = status_kib("VmRSS:");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    println!(
        "{} x {}: RSS before {:.1} MB, after the attack {:.1} MB (+{:.1} MB), 1 s later {:.1} MB (+{:.1} MB), peak {:.1} MB; attack took {:.2?}",
        conns,
        if continuation {
            "16 KiB HEADERS + 63 x 16 KiB CONTINUATION, no END_HEADERS"
        } else {
            "1 MiB HEADERS frame, no END_HEADERS"
        },
        mb(before),
        mb(during),
        mb(during.saturating_sub(before)),
        mb(after),
        mb(after.saturating_sub(before)),
        mb(peak),
        took,
    );
    drop(open);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

async fn attack_owned(
    path: std::path::PathBuf,
    continuation: bool,
    filler: Arc<Vec<u8>>,
) -> UnixStream {
    attack(&path, continuation, filler).await
}

fn main() {
    let conns = std::env::var("TESSERA_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(conns, false));
    rt.block_on(run(conns, true));
}
