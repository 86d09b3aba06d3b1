//! A cloneable shutdown signal: one [`ShutdownTrigger`] fires it, any number of [`Shutdown`]
//! handles wait for it. Servers take `shutdown.wait()` as their shutdown future; long-lived
//! tasks (Workload API streams) select on it so a graceful stop never waits on a client.

use std::future::Future;

use tokio::sync::watch;

/// Fires the shutdown. Dropping it without firing also counts as shutdown, so a crashed
/// owner never leaves waiters hanging.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Waits for the shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A new signal, not yet fired.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// A signal that never fires (for callers that stop by dropping the task).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive forever: a dropped sender would read as "shut down".
        std::mem::forget(tx);
        Shutdown(rx)
    }

    /// Whether the shutdown has fired.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once the shutdown fires (or its trigger is dropped).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            // `wait_for` returns an error once the trigger is gone: shut down as well.
            let _ = rx.wait_for(|fired| *fired).await;
        }
    }
}

impl ShutdownTrigger {
    /// Fires the shutdown; every waiter resolves.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// A new handle on this signal.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

/// A [`Shutdown`] fired when `future` resolves (e.g. a signal handler).
pub fn from_future(future: impl Future<Output = ()> + Send + 'static) -> Shutdown {
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        future.await;
        trigger.fire();
    });
    shutdown
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_for_every_waiter_and_on_drop() {
        let (trigger, shutdown) = Shutdown::new();
        let a = tokio::spawn(shutdown.wait());
        let b = tokio::spawn(shutdown.clone().wait());
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
        tokio::time::timeout(Duration::from_secs(1), shutdown.wait())
            .await
            .unwrap();
        assert!(shutdown.is_fired());
    }

    #[tokio::test(start_paused = true)]
    async fn never_does_not_fire() {
        let shutdown = Shutdown::never();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
                .await
                .is_err()
        );
        assert!(!shutdown.is_fired());
    }
}
