//! The agent API: what agents call over TCP + TLS (`bind_address:bind_port`, default
//! `0.0.0.0:8081`). `Attest` is anonymous TLS (it is how an agent gets an SVID); every other
//! call is mTLS with the agent's current X.509-SVID, verified against the live bundle.
//!
//! ```text
//!  TcpListener ─ tls_incoming (handshakes, bounded) ─ tonic ─ AgentService
//!                                                        ├─ attest: join_token / x509pop
//!                                                        ├─ renew, sign, mint: Authority
//!                                                        └─ sync: SyncHub stream
//!  server SVID task: issues and renews spiffe://<td>/spire/server, follows bundle changes
//! ```

mod attest;
mod convert;
mod incoming;
mod server_svid;
mod service;
mod sync;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::attestation::x509pop;
use tessera_actors::server::authority::AuthorityHandle;
use tessera_actors::server::supervisor::Server;
use tessera_proto::tessera::agent::v1::agent_server_server::AgentServerServer;
use tokio::net::TcpListener;

pub use incoming::AcceptLimits;

/// Settings of the agent API.
#[derive(Clone, Debug)]
pub struct AgentApiSettings {
    /// Lifetime of agent X.509-SVIDs (SPIRE's `agent_ttl`; `None`: the default X.509-SVID TTL).
    pub agent_svid_ttl: Option<Duration>,
    /// Most CSRs in one `BatchSignX509Svid`.
    pub max_sign_batch: usize,
    /// Most audiences in one JWT-SVID.
    pub max_audiences: usize,
    /// How long an attestation may take end to end.
    pub attest_timeout: Duration,
    /// Largest sync message, bytes (snapshot chunks are filled up to it).
    pub max_sync_message_bytes: usize,
    /// Accept-path bounds.
    pub accept: AcceptLimits,
}

impl Default for AgentApiSettings {
    fn default() -> Self {
        Self {
            agent_svid_ttl: None,
            max_sign_batch: 1_000,
            max_audiences: 16,
            attest_timeout: Duration::from_secs(30),
            max_sync_message_bytes: 1024 * 1024,
            accept: AcceptLimits::default(),
        }
    }
}

/// Everything the agent API needs.
#[derive(Clone, Debug)]
pub struct AgentApiDeps {
    /// The server's actors.
    pub server: Server,
    /// The authority.
    pub authority: AuthorityHandle,
    /// The x509pop attestor, if configured (`None`: only join tokens).
    pub x509pop: Option<x509pop::Verifier>,
    /// Settings.
    pub settings: AgentApiSettings,
}

/// Why the agent API could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentApiError {
    /// TLS could not be set up.
    #[error("agent API TLS: {0}")]
    Tls(String),
    /// The server SVID could not be issued.
    #[error("agent API: cannot issue the server's own SVID: {0}")]
    ServerSvid(String),
    /// tonic failed.
    #[error("agent API transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the agent API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    deps: AgentApiDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentApiError> {
    let live = server_svid::start(&deps).await?;
    let config = tls::server_config(live.clone()).map_err(|e| AgentApiError::Tls(e.to_string()))?;
    let incoming = incoming::tls_incoming(listener, Arc::new(config), deps.settings.accept.clone());
    let service = service::AgentService::new(deps);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(AgentServerServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
