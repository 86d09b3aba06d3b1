//! The server the agent talks to now: one connection at a time, shared by the sync stream and
//! the calls. A failure (unreachable, stream ended or broken, `Unavailable`) drops it, closes
//! the sync stream still open on it (so the stream moves too), and tells [`Servers`]; the
//! next call or reconnection chooses another server. Every switch is logged with the address
//! and shown by the `tessera_agent_server_connected` gauge.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::transport::Channel;

use crate::node::metrics::NodeMetrics;
use crate::node::servers::{Servers, Target};

/// A connection to one server.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// The server.
    pub(crate) target: Target,
    /// Its channel (rebuilt, same server and generation, when the agent SVID changes).
    pub(crate) channel: Channel,
    /// Tells this connection from later ones to the same server.
    pub(crate) generation: u64,
    /// Set when the connection is dropped after a failure.
    closed: Arc<watch::Sender<bool>>,
}

impl Connection {
    /// Resolves once the connection is dropped after a failure (never, if it is replaced
    /// otherwise).
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            if rx.wait_for(|closed| *closed).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    current: Option<Connection>,
    /// The server used last, kept after a failure for the switch log and gauge.
    previous: Option<Target>,
    next_generation: u64,
}

/// The current connection, and the servers to choose the next one from.
#[derive(Debug)]
pub(crate) struct Link {
    servers: Arc<Servers>,
    metrics: Option<NodeMetrics>,
    state: Mutex<State>,
}

impl Link {
    /// No connection yet.
    pub(crate) fn new(servers: Arc<Servers>, metrics: Option<NodeMetrics>) -> Self {
        Self {
            servers,
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    /// The servers.
    pub(crate) fn servers(&self) -> &Arc<Servers> {
        &self.servers
    }

    /// The metrics, when registered.
    pub(crate) fn metrics(&self) -> Option<&NodeMetrics> {
        self.metrics.as_ref()
    }

    /// The connection in use, if any.
    pub(crate) fn current(&self) -> Option<Connection> {
        self.lock().current.clone()
    }

    /// Uses `channel` to `target` from now on (dropping the current connection, if any).
    pub(crate) fn install(&self, target: Target, channel: Channel) -> Connection {
        let mut state = self.lock();
        if let Some(old) = state.current.take() {
            old.closed.send_replace(true);
        }
        let generation = state.next_generation;
        state.next_generation += 1;
        let connection = Connection {
            target: target.clone(),
            channel,
            generation,
            closed: Arc::new(watch::channel(false).0),
        };
        let previous = state.previous.replace(target.clone());
        state.current = Some(connection.clone());
        drop(state);
        match previous {
            Some(p) if p == target => {
                tracing::info!(server = %target, "connecting to the same server again");
            }
            previous => {
                let from = previous.as_ref().map(ToString::to_string);
                match &from {
                    None => tracing::info!(server = %target, "agent connected to its first server"),
                    Some(from) => {
                        tracing::info!(server = %target, previous = %from, "agent switched server");
                    }
                }
                if let Some(m) = &self.metrics {
                    m.switched(from.as_deref(), &target.to_string());
                }
            }
        }
        connection
    }

    /// Rebuilds the current connection's channel with `rebuild` (same server, same
    /// generation: streams open on it stay open). No connection: nothing to do.
    pub(crate) fn rechannel(
        &self,
        rebuild: impl FnOnce(&Target) -> Result<Channel, String>,
    ) -> Result<(), String> {
        let mut state = self.lock();
        if let Some(current) = state.current.as_mut() {
            current.channel = rebuild(&current.target)?;
        }
        Ok(())
    }

    /// Connection `generation` failed (`why`): drop it, close its sync stream, and choose
    /// another server next time. A failure of an older connection changes nothing.
    pub(crate) fn failed(&self, generation: u64, why: &str) {
        let mut state = self.lock();
        let Some(current) = state.current.take_if(|c| c.generation == generation) else {
            return;
        };
        drop(state);
        current.closed.send_replace(true);
        self.servers.failed(&current.target);
        if let Some(m) = &self.metrics {
            m.disconnected(&current.target.to_string());
        }
        if self.servers.several() {
            tracing::warn!(server = %current.target, reason = %why, "lost the server; moving to another one");
        } else {
            tracing::warn!(server = %current.target, reason = %why, "lost the server; reconnecting");
        }
    }

    /// Connection `generation` answered: every server is a candidate again.
    pub(crate) fn succeeded(&self, generation: u64) {
        let current = self
            .lock()
            .current
            .as_ref()
            .is_some_and(|c| c.generation == generation);
        if current {
            self.servers.succeeded();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays valid whatever panicked while holding the lock.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tessera_actors::random::SeededRandom;

    use super::*;
    use crate::config::ServerAddress;

    /// Two servers on addresses nothing listens on (channels are lazy: nothing connects).
    pub(crate) fn two() -> (Link, NodeMetrics) {
        let servers = ["127.0.0.1:1", "127.0.0.2:1"]
            .map(|a| ServerAddress::parse(a, 1).unwrap())
            .to_vec();
        let metrics = NodeMetrics::unregistered();
        let servers = Arc::new(Servers::new(servers, Arc::new(SeededRandom::new(3))));
        (Link::new(servers, Some(metrics.clone())), metrics)
    }

    pub(crate) async fn connect(link: &Link) -> Connection {
        let target = link.servers().next().await.unwrap();
        let ch = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        link.install(target, ch)
    }

    fn socket(c: &Connection) -> SocketAddr {
        c.target.socket
    }

    #[tokio::test]
    async fn a_failure_moves_to_the_other_server_and_closes_the_old_connection() {
        let (link, metrics) = two();
        let first = connect(&link).await;
        assert_eq!(metrics.connected(&first.target.to_string()), 1);
        assert_eq!(metrics.switches(), 1);

        link.failed(first.generation, "test");
        assert!(link.current().is_none());
        tokio::time::timeout(Duration::from_secs(5), first.closed())
            .await
            .expect("the failed connection is closed");
        assert_eq!(metrics.connected(&first.target.to_string()), 0);

        let second = connect(&link).await;
        assert_ne!(socket(&second), socket(&first), "not the failed one again");
        assert_eq!(metrics.connected(&second.target.to_string()), 1);
        assert_eq!(metrics.switches(), 2);
    }

    #[tokio::test]
    async fn a_stale_failure_or_a_new_channel_leaves_the_connection_alone() {
        let (link, _) = two();
        let first = connect(&link).await;
        link.failed(first.generation, "test");
        let second = connect(&link).await;
        // The first connection's late errors do not drop the second.
        link.failed(first.generation, "late");
        assert_eq!(
            link.current().map(|c| c.generation),
            Some(second.generation)
        );
        // A renewed SVID rebuilds the channel: same server, same generation, not closed.
        link.rechannel(|_| {
            Ok(tonic::transport::Endpoint::from_static("http://127.0.0.1:2").connect_lazy())
        })
        .unwrap();
        let now = link.current().unwrap();
        assert_eq!(
            (now.generation, socket(&now)),
            (second.generation, socket(&second))
        );
        let closed = tokio::time::timeout(Duration::from_millis(50), second.closed()).await;
        assert!(closed.is_err(), "still open");
    }
}
