use std::time::Duration;

use futures::channel::mpsc;

use super::*;

async fn fired_within(shutdown: &Shutdown, limit: Duration) -> bool {
    tokio::time::timeout(limit, shutdown.wait()).await.is_ok()
}

#[tokio::test(start_paused = true)]
async fn fires_for_every_waiter_and_on_drop() {
    let (trigger, shutdown) = Shutdown::new();
    let a = tokio::spawn(shutdown.wait());
    let b = tokio::spawn(trigger.subscribe().wait());
    assert!(!shutdown.is_fired());
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(1), a)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), b)
        .await
        .unwrap()
        .unwrap();
    assert!(shutdown.is_fired());

    let (trigger, shutdown) = Shutdown::new();
    drop(trigger);
    assert!(fired_within(&shutdown, Duration::from_secs(1)).await);
    assert!(shutdown.is_fired());
}

#[tokio::test(start_paused = true)]
async fn never_does_not_fire() {
    let shutdown = Shutdown::never();
    assert!(!fired_within(&shutdown, Duration::from_secs(3600)).await);
    assert!(!shutdown.is_fired());
}

#[tokio::test(start_paused = true)]
async fn from_future_fires_when_the_future_resolves() {
    let shutdown = from_future(tokio::time::sleep(Duration::from_secs(5)));
    assert!(!fired_within(&shutdown, Duration::from_secs(4)).await);
    assert!(fired_within(&shutdown, Duration::from_secs(2)).await);
}

#[tokio::test(start_paused = true)]
async fn first_signal_stops_gracefully_and_a_second_forces() {
    let (tx, rx) = mpsc::unbounded();
    let signals = Signals::from_stream(rx, Duration::from_secs(30));
    assert!(!fired_within(&signals.shutdown, Duration::from_secs(60)).await);
    tx.unbounded_send(StopSignal::Terminate).unwrap();
    assert!(fired_within(&signals.shutdown, Duration::from_secs(1)).await);
    assert!(!fired_within(&signals.forced, Duration::from_secs(10)).await);
    tx.unbounded_send(StopSignal::Interrupt).unwrap();
    assert!(fired_within(&signals.forced, Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn a_stop_that_outlasts_the_grace_is_forced() {
    let (tx, rx) = mpsc::unbounded();
    let signals = Signals::from_stream(rx, Duration::from_secs(30));
    tx.unbounded_send(StopSignal::Interrupt).unwrap();
    assert!(fired_within(&signals.shutdown, Duration::from_secs(1)).await);
    assert!(!fired_within(&signals.forced, Duration::from_secs(29)).await);
    assert!(fired_within(&signals.forced, Duration::from_secs(2)).await);
}

#[tokio::test(start_paused = true)]
async fn an_ended_signal_stream_fires_nothing() {
    let (tx, rx) = mpsc::unbounded::<StopSignal>();
    drop(tx);
    let signals = Signals::from_stream(rx, Duration::from_secs(1));
    assert!(!fired_within(&signals.shutdown, Duration::from_secs(3600)).await);
    assert!(!signals.forced.is_fired());
}

#[test]
fn signals_are_named_as_operators_know_them() {
    assert_eq!(StopSignal::Interrupt.to_string(), "SIGINT");
    assert_eq!(StopSignal::Terminate.to_string(), "SIGTERM");
}
