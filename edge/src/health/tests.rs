use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::shutdown::Shutdown;

#[derive(Debug, Default)]
struct Probe {
    failed: AtomicBool,
    ready: AtomicBool,
}

impl Health for Probe {
    async fn live(&self) -> Result<(), String> {
        if self.failed.load(Ordering::SeqCst) {
            Err("an actor died".into())
        } else {
            Ok(())
        }
    }

    async fn ready(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("no trust bundle yet".into())
        }
    }

    async fn metrics(&self) -> String {
        "tessera_up 1\n".into()
    }
}

/// One HTTP/1.1 GET on loopback: the whole response, bounded in time.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap()
}

#[tokio::test]
async fn live_ready_and_metrics_answer_as_the_process_says() {
    let probe = Arc::new(Probe::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let task = tokio::spawn(serve(listener, probe.clone(), shutdown.wait()));

    let live = get(addr, "/live").await;
    assert!(
        live.starts_with("HTTP/1.1 200") && live.ends_with("live\n"),
        "{live}"
    );
    let ready = get(addr, "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(
        ready.ends_with("not ready: no trust bundle yet\n"),
        "{ready}"
    );
    probe.ready.store(true, Ordering::SeqCst);
    let ready = get(addr, "/ready").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.ends_with("ready\n"),
        "{ready}"
    );
    let metrics = get(addr, "/metrics").await;
    assert!(
        metrics.contains("content-type: text/plain; version=0.0.4"),
        "{metrics}"
    );
    assert!(metrics.ends_with("tessera_up 1\n"), "{metrics}");
    probe.failed.store(true, Ordering::SeqCst);
    let live = get(addr, "/live").await;
    assert!(
        live.starts_with("HTTP/1.1 503") && live.ends_with("failed: an actor died\n"),
        "{live}"
    );
    let missing = get(addr, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    trigger.fire();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
