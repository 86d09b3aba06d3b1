//! One shutdown signal for every task of a process, and the operator's stop signals that fire
//! it.
//!
//! A [`ShutdownTrigger`] fires; any number of [`Shutdown`] handles wait. Servers take
//! `shutdown.wait()` as their shutdown future (DESIGN.md §6); long-lived tasks (streams) select
//! on it so that a graceful stop never waits on a client.
//!
//! [`Signals`] turns SIGINT and SIGTERM into two of them: the first signal fires
//! [`Signals::shutdown`] (finish in-flight work, close listeners, flush the log); a second
//! signal, or [`Signals::grace`] after the first, fires [`Signals::forced`], on which the CLI
//! runner exits at once ([`crate::cli`]). An operator who presses Ctrl-C twice, or a supervisor
//! that sends SIGTERM again, is obeyed; a process stuck in its graceful stop still ends.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;

/// How long a graceful stop may take before the process is stopped at once, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Fires the shutdown. Dropping it without firing also counts as shutdown, so that a crashed
/// owner never leaves waiters hanging.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Waits for the shutdown; cheap to clone.
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
        // Keep the sender alive for good: a dropped sender reads as "shut down".
        std::mem::forget(tx);
        Shutdown(rx)
    }

    /// Whether the shutdown has fired (or its trigger is gone).
    pub fn is_fired(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once the shutdown fires (or its trigger is dropped).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            // `wait_for` fails once the trigger is gone: that is a shutdown as well.
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

/// A [`Shutdown`] fired when `future` resolves (e.g. a signal handler). Must be called inside
/// a tokio runtime.
pub fn from_future(future: impl Future<Output = ()> + Send + 'static) -> Shutdown {
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        future.await;
        trigger.fire();
    });
    shutdown
}

/// A stop request from the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, systemd, Kubernetes).
    Terminate,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        })
    }
}

/// The stop signals' handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install a {signal} handler: {source}")]
pub struct SignalError {
    /// Which signal.
    pub signal: StopSignal,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// The process's stop signals, as two shutdowns: graceful, then forced.
#[derive(Debug, Clone)]
pub struct Signals {
    /// Fires on the first SIGINT or SIGTERM.
    pub shutdown: Shutdown,
    /// Fires on a second stop signal, or `grace` after the first.
    pub forced: Shutdown,
    /// How long the graceful stop may take.
    pub grace: Duration,
}

impl Signals {
    /// Installs SIGINT and SIGTERM handlers. Must be called inside a tokio runtime with its
    /// signal driver enabled (`enable_all`).
    pub fn install(grace: Duration) -> Result<Signals, SignalError> {
        use tokio::signal::unix::{signal, SignalKind};
        let err = |signal| move |source| SignalError { signal, source };
        let int = signal(SignalKind::interrupt()).map_err(err(StopSignal::Interrupt))?;
        let term = signal(SignalKind::terminate()).map_err(err(StopSignal::Terminate))?;
        let stream = futures::stream::unfold((int, term), |(mut int, mut term)| async move {
            let got = tokio::select! {
                Some(()) = int.recv() => StopSignal::Interrupt,
                Some(()) = term.recv() => StopSignal::Terminate,
                else => return None,
            };
            Some((got, (int, term)))
        });
        Ok(Self::from_stream(Box::pin(stream), grace))
    }

    /// The same two shutdowns over any stream of stop requests (what `install` does with the
    /// real signals; tests feed a channel).
    pub fn from_stream(
        mut requests: impl Stream<Item = StopSignal> + Send + Unpin + 'static,
        grace: Duration,
    ) -> Signals {
        let (stop, shutdown) = Shutdown::new();
        let (force, forced) = Shutdown::new();
        tokio::spawn(async move {
            let Some(first) = requests.next().await else {
                // No more signals can come: keep both triggers (a dropped one would fire).
                std::future::pending::<()>().await;
                return;
            };
            tracing::info!(
                "{first}: shutting down gracefully (within {}s; send it again to stop at once)",
                grace.as_secs()
            );
            stop.fire();
            tokio::select! {
                Some(second) = requests.next() => {
                    tracing::warn!("{second} again: stopping at once");
                }
                () = tokio::time::sleep(grace) => {
                    tracing::warn!("still stopping {}s after {first}: stopping at once", grace.as_secs());
                }
            }
            force.fire();
            // Hold the graceful trigger until the process ends.
            std::future::pending::<()>().await;
            drop(stop);
        });
        Signals {
            shutdown,
            forced,
            grace,
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM (for client verbs that follow a stream until the
/// operator stops them). Where the handlers cannot be installed, it logs why and never
/// resolves: the default action of the signal then ends the process.
pub async fn stop_requested() {
    match Signals::install(DEFAULT_GRACE) {
        Ok(signals) => signals.shutdown.wait().await,
        Err(e) => {
            tracing::warn!(error = %e, "stop with the signal's default action");
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests;
