//! A legitimate agent's TLS handshake to the agent API (TCP connect + full TLS 1.3 handshake
//! with its SVID as the client certificate), median over `N` runs, while 10 and then 1,000
//! idle TCP sockets from the same host are held open on the server (issue 11 §1: 600 idle
//! sockets made it take 8.5 s). The idle sockets are kept pending on the server for the
//! whole run (handshake timeout raised to 120 s, per-IP cap above 1,000): the worst case,
//! not the default where they are closed after `limits.agent_handshake_timeout` (5 s).
//!
//! `cargo bench -p tessera-server --bench slowloris` prints both medians and their ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
#![allow(clippy::disallowed_methods)] // A bench measures real time.

#[path = "../tests/hostile/support.rs"]
mod support;

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use support::*;

const N: usize = 50;

async fn median_handshake(r: &Running, config: &std::sync::Arc<rustls::ClientConfig>) -> Duration {
    let mut times = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let tls = tls_connect(r.addr, config.clone()).await.unwrap();
        times.push(t.elapsed());
        drop(tls);
    }
    times.sort();
    times[N / 2]
}

async fn with_idle(
    r: &Running,
    config: &std::sync::Arc<rustls::ClientConfig>,
    idle: usize,
) -> Duration {
    let mut sockets = Vec::with_capacity(idle);
    for _ in 0..idle {
        sockets.push(TcpStream::connect(r.addr).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let median = median_handshake(r, config).await;
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(500)).await;
    median
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = settings();
        s.limits.handshake_timeout = Duration::from_secs(120);
        s.limits.max_connections_per_ip = 2_000;
        let r = start(s, false).await;
        let agent = attest_new(&r, "bench-1").await;
        let config = client_config(&r.bundle, Some(&agent));
        // Warm up.
        let _ = median_handshake(&r, &config).await;
        let ten = with_idle(&r, &config, 10).await;
        let thousand = with_idle(&r, &config, 1_000).await;
        println!("agent API TLS handshake, median of {N}:");
        println!(
            "  with    10 idle sockets open: {:>9.3} ms",
            ten.as_secs_f64() * 1e3
        );
        println!(
            "  with 1,000 idle sockets open: {:>9.3} ms",
            thousand.as_secs_f64() * 1e3
        );
        println!(
            "  ratio (1,000 / 10): {:.2}",
            thousand.as_secs_f64() / ten.as_secs_f64()
        );
        r.stop().await;
    });
}
