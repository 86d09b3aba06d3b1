//! The agent's `/live`, `/ready` and `/metrics` (off by default; `[health_checks]`), served by
//! [`tessera_edge::health`]. The agent is live while it runs; `/ready` answers 200 once it
//! holds its trust domain's bundle (it can serve), 503 before.

use std::future::Future;
use std::sync::Arc;

use tessera_actors::agent::view::WorkloadSource;
use tessera_edge::health::Health;
use tokio::net::TcpListener;

use crate::workload_api::Metrics;

#[derive(Debug)]
struct AgentHealth {
    metrics: Arc<Metrics>,
    source: Arc<dyn WorkloadSource>,
}

impl Health for AgentHealth {
    async fn live(&self) -> Result<(), String> {
        Ok(())
    }

    async fn ready(&self) -> Result<(), String> {
        if self.source.identities().borrow().bundle.is_some() {
            Ok(())
        } else {
            Err("no trust bundle yet".into())
        }
    }

    async fn metrics(&self) -> String {
        self.metrics.render()
    }
}

/// Serves `/live`, `/ready` and `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    source: Arc<dyn WorkloadSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let health = Arc::new(AgentHealth { metrics, source });
    tessera_edge::health::serve(listener, health, shutdown).await
}
