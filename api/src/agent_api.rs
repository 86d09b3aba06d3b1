//! The agent API: what agents call over TCP + TLS (`bind_address:bind_port`, default
//! `0.0.0.0:8081`). `Attest` is anonymous TLS (it is how an agent gets an SVID); every other
//! call is mTLS with the agent's current X.509-SVID, verified against the live bundle.
//!
//! ```text
//!  TcpListener ─ tls_incoming (accept; per-IP and total connection caps; handshake
//!      tasks with a timeout) ─ tonic (HTTP/2 bounds, max age) ─ AgentService (auth per call,
//!      per-IP attestation rate, per-agent limits)
//!                                                        ├─ attest: join_token / x509pop
//!                                                        ├─ renew, sign, mint: Authority
//!                                                        └─ sync: SyncHub stream
//!  server SVID task: issues and renews spiffe://<td>/spire/server, follows bundle changes
//! ```

mod attest;
mod auth;
mod convert;
mod incoming;
pub mod limits;
pub(crate) mod server_svid;
mod service;
mod sync;
pub mod tls;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::attestation::x509pop;
use tessera_actors::server::authority::AuthorityHandle;
use tessera_actors::server::supervisor::Server;
use tessera_proto::tessera::agent::v1::agent_server_server::AgentServerServer;
use tokio::net::TcpListener;

pub use auth::AgentAuthError;
pub use limits::{AgentApiLimits, LimitError};

/// Settings of the agent API.
#[derive(Clone, Debug)]
pub struct AgentApiSettings {
    /// Lifetime of agent X.509-SVIDs (SPIRE's `agent_ttl`; `None`: the default X.509-SVID TTL).
    pub agent_svid_ttl: Option<Duration>,
    /// Largest sync message, bytes (snapshot chunks are filled up to it).
    pub max_sync_message_bytes: usize,
    /// HTTP/2 pings on idle connections, and how long an answer may take before the
    /// connection is closed (a peer that stopped reading or vanished).
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
    /// Bounds on what agents (and anyone reaching the port) control: `[limits]`.
    pub limits: AgentApiLimits,
}

impl Default for AgentApiSettings {
    fn default() -> Self {
        Self {
            agent_svid_ttl: None,
            max_sync_message_bytes: 1024 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            limits: AgentApiLimits::default(),
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
    let config = tls::server_config(
        live.clone(),
        deps.server.settings.trust_domain.clone(),
        deps.server.clock.clone(),
    )
    .map_err(|e| AgentApiError::Tls(e.to_string()))?;
    let limits = deps.settings.limits.clone();
    let connections = limits::Counter::<IpAddr>::new(
        limits.max_connections.max(1),
        limits.max_connections_per_ip.max(1),
    );
    let incoming = incoming::tls_incoming(listener, Arc::new(config), &limits, connections);
    let keepalive = (
        deps.settings.keepalive_interval,
        deps.settings.keepalive_timeout,
    );
    let service = AgentServerServer::new(service::AgentService::new(deps))
        .max_decoding_message_size(limits.max_request_bytes);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive.0))
        .http2_keepalive_timeout(Some(keepalive.1))
        // tonic passes `None` (h2 then allows usize::MAX streams, and unlimited locally
        // reset ones): bound both.
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_max_pending_accept_reset_streams(Some(20))
        .http2_max_header_list_size(limits.max_header_list_bytes)
        // Receive windows bound what a peer can make the server buffer per stream and per
        // connection before it reads.
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(2 * 1024 * 1024)
        // GOAWAY at the max age; the connection itself cuts at age plus grace (`TlsConn`).
        .max_connection_age(limits.connection_max_age)
        // One span per RPC, continuing the agent's trace (`traceparent`).
        .layer(tessera_edge::telemetry::TraceLayer::TRUSTED_CALLERS)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
