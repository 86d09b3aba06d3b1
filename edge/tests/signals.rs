//! Real stop signals sent to this test process (its own binary: the handlers, once
//! installed, stay for the life of the process, so no other test may share it).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rustix::process::{getpid, kill_process, Signal};
use tessera_edge::cli::{run_daemon, RunError};
use tessera_edge::shutdown::{Shutdown, Signals};

async fn fired_within(shutdown: &Shutdown, limit: Duration) -> bool {
    tokio::time::timeout(limit, shutdown.wait()).await.is_ok()
}

/// One test, so that no two parts see each other's signals.
#[test]
fn stop_signals() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(sigterm_twice_stops_then_forces());
    drop(runtime);
    the_cli_runner_stops_a_daemon_gracefully_then_by_force();
}

async fn sigterm_twice_stops_then_forces() {
    let signals = Signals::install(Duration::from_secs(3600)).unwrap();
    assert!(!signals.shutdown.is_fired());
    kill_process(getpid(), Signal::TERM).unwrap();
    assert!(fired_within(&signals.shutdown, Duration::from_secs(5)).await);
    assert!(!signals.forced.is_fired());
    kill_process(getpid(), Signal::INT).unwrap();
    assert!(fired_within(&signals.forced, Duration::from_secs(5)).await);
}

fn the_cli_runner_stops_a_daemon_gracefully_then_by_force() {
    // Graceful: the process sees the shutdown and returns.
    let got = run_daemon(
        "edge-test",
        Duration::from_secs(3600),
        |shutdown| async move {
            if shutdown.is_fired() {
                return Err("fired before any signal".to_owned());
            }
            kill_process(getpid(), Signal::TERM).map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
                .await
                .map_err(|_| "no shutdown within 5 s".to_owned())
        },
    );
    assert!(got.is_ok(), "{got:?}");
    // Forced: a process that ignores its shutdown is abandoned after the grace.
    let got = run_daemon("edge-test", Duration::from_millis(200), |_| async move {
        kill_process(getpid(), Signal::INT).map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_secs(60)).await;
        Err::<(), _>("ran past the grace".to_owned())
    });
    assert!(matches!(got, Err(RunError::Forced { .. })), "{got:?}");
    // Its error is passed on as it is.
    let got = run_daemon("edge-test", Duration::from_secs(1), |_| async {
        Err::<(), _>("server failed: registry".to_owned())
    });
    match got {
        Err(RunError::Failed(e)) => assert_eq!(e, "server failed: registry"),
        other => panic!("{other:?}"),
    }
}
