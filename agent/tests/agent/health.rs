//! `/live`, `/ready` and `/metrics` of `[health_checks]`.

use std::sync::Arc;

use tessera_actors::agent::view::WorkloadSource;
use tessera_agent::shutdown::Shutdown;
use tessera_proto::workload::X509svidRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within(path, s.read_to_string(&mut out)).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_and_ready_follows_the_bundle() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let source: Arc<dyn WorkloadSource> = world.source.clone();
    let server = tokio::spawn(tessera_agent::health::serve(
        listener,
        agent.metrics.clone(),
        source,
        shutdown.wait(),
    ));

    let mut stream = agent
        .client()
        .await
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let _ = within("the first message", stream.message()).await.unwrap();
    let metrics = get(addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("tessera_agent_workload_api_open_streams{method=\"FetchX509SVID\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tessera_agent_workload_api_calls_total{code=\"OK\",method=\"FetchX509SVID\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tessera_agent_workload_api_call_duration_seconds_count{method=\"FetchX509SVID\"} 1"
        ),
        "{metrics}"
    );
    assert!(get(addr, "/live").await.starts_with("HTTP/1.1 200"));
    assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 200"));
    world.source.update(|s| s.bundle = None);
    assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 503"));

    trigger.fire();
    within("the health listener to stop", server)
        .await
        .unwrap()
        .unwrap();
}
