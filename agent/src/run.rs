//! `tessera-agent run`: from a validated [`AgentConfig`] to a running agent. The node side
//! (`crate::node`: attestation to the server, the sync stream, cache, rotation) produces the
//! identity source and serves the Workload API from it with
//! [`crate::workload_api::run`]; this module is the single place `run` hands over to it.

use crate::config::AgentConfig;
use crate::shutdown::Shutdown;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The node side failed (attestation, server, data directory, Workload API...).
    #[error(transparent)]
    Node(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Runs the agent with `config` until `shutdown` fires.
pub async fn run(config: AgentConfig, shutdown: Shutdown) -> Result<(), RunError> {
    tracing::info!(
        trust_domain = %config.trust_domain,
        servers = %config
            .servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        socket = %config.socket_path.display(),
        data_dir = %config.data_dir.display(),
        "starting tessera-agent"
    );
    run_node(config, shutdown).await
}

/// The one call into the node side: `crate::node::run(config, shutdown)`, which returns once
/// `shutdown` fires (Ok) or the agent cannot go on (Err).
async fn run_node(config: AgentConfig, shutdown: Shutdown) -> Result<(), RunError> {
    let settings = crate::workload_api::Settings::new(config.limits.clone())
        .map_err(|e| RunError::Node(Box::new(e)))?;
    let node = crate::node::start(&config, settings.metrics.registry())
        .await
        .map_err(|e| RunError::Node(Box::new(e)))?;
    let source = node.source();
    let outcome = tokio::select! {
        served = crate::workload_api::run(&config, source, settings, shutdown.clone()) => {
            served.map_err(|e| RunError::Node(Box::new(e)))
        }
        failed = node.failed() => Err(RunError::Node(Box::new(failed))),
    };
    node.stop().await;
    outcome
}
