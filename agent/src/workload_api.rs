//! The SPIFFE Workload API server, byte-compatible with the standard, on a Unix socket.
//!
//! [`serve`] takes an already-bound listener, the identity source, the attestors, settings and
//! a shutdown future, so tests bind a temp socket and stop cleanly; [`run`] binds the
//! configured socket ([`socket::bind`]: `tessera_edge`'s binder with the Workload API's
//! policy) and serves until shutdown. Connections come through `tessera_edge::peer`: bounded
//! in all and per uid, closed when idle (`[workload_api]` in the config), with the grpc
//! `:authority` fix. On each call the caller's credentials come from the connection
//! ([`incoming`]), the attestors turn them into
//! selectors, and the caller gets the identities whose entry selectors are a subset of
//! them. The standard's rules: a call without `workload.spiffe.io: true` is
//! `InvalidArgument`; a caller with no identity gets `PermissionDenied`; streams send their
//! first message at once and the full view again on every change ([`stream`]). The WIT-SVID
//! RPCs answer `Unimplemented`. The gRPC health service is served on the same socket, for
//! `tessera-agent healthcheck`, Envoy's SDS ([`crate::sds`], as SPIRE's agent serves it), and
//! gRPC reflection listing exactly these services, for `grpcurl -plaintext -unix`. Error codes
//! are chosen once, in [`error`].

pub mod error;
/// Connections and their callers' credentials: `tessera_edge::peer`.
pub use tessera_edge::peer as incoming;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub(crate) mod render;
mod service;
pub mod socket;
pub(crate) mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::agent::view::WorkloadSource;
use tessera_edge::authority::{MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE};
use tessera_edge::peer::{PeerPolicy, TrackRequests};
use tessera_eventlog::{Clock, SystemClock};
use tessera_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::net::UnixListener;
use tonic::server::NamedService;

pub use self::error::ApiError;
pub use self::limits::{Limits, StreamLimitError};
pub use self::metrics::{Metrics, MetricsError};
use self::service::WorkloadService;
pub use self::service::SECURITY_HEADER;
pub use self::socket::{SocketError, SocketGuard};
use crate::attestor::unix::UnixAttestor;
use crate::attestor::Attestors;
use crate::config::AgentConfig;
use crate::sds::SdsConfig;
use crate::shutdown::Shutdown;

/// Longest wait, after shutdown, for open connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server needs besides the source and the attestors.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bounds on what workloads control.
    pub limits: Limits,
    /// Where "now" comes from (SVID and token expiry).
    pub clock: Arc<dyn Clock>,
    /// Where calls and streams are counted.
    pub metrics: Arc<Metrics>,
}

impl Settings {
    /// `limits`, the system clock and fresh metrics.
    pub fn new(limits: Limits) -> Result<Self, MetricsError> {
        Ok(Self {
            limits,
            clock: Arc::new(SystemClock),
            metrics: Metrics::new()?,
        })
    }
}

/// Runs `call` as RPC `method` of `api` (for logs): records its outcome and latency in
/// `settings.metrics`, logs a failure at WARN (`Unavailable`, `Internal`) or a refusal at
/// DEBUG. Shared by the Workload API and SDS services.
pub(crate) async fn timed<T, E>(
    settings: &Settings,
    api: &'static str,
    method: &'static str,
    code_of: impl FnOnce(&E) -> tonic::Code,
    call: impl Future<Output = Result<T, E>>,
) -> Result<tonic::Response<T>, tonic::Status>
where
    E: std::fmt::Display + Into<tonic::Status>,
{
    let clock = &settings.clock;
    let started = clock.now_unix_nanos();
    let result = call.await;
    // Nanoseconds to seconds for the histogram; precision loss is irrelevant here.
    #[allow(clippy::cast_precision_loss)]
    let seconds = (clock.now_unix_nanos().saturating_sub(started)).max(0) as f64 / 1e9;
    let code = result.as_ref().map_or_else(code_of, |_| tonic::Code::Ok);
    settings.metrics.observe(method, code, seconds);
    match result {
        Ok(v) => Ok(tonic::Response::new(v)),
        Err(e) => {
            if code == tonic::Code::Unavailable || code == tonic::Code::Internal {
                tracing::warn!(method, error = %e, "{api} call failed");
            } else {
                tracing::debug!(method, error = %e, "{api} call refused");
            }
            Err(e.into())
        }
    }
}

/// Why the Workload API stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be bound.
    #[error("Workload API socket: {0}")]
    Socket(#[from] SocketError),
    /// Metrics could not be set up (a bug).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The health and metrics listener could not be bound.
    #[error("health_checks listener {addr}: {source}")]
    HealthListener {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("Workload API server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set (a build problem).
    #[error("Workload API: cannot build gRPC reflection: {0}")]
    Reflection(String),
}

/// The attestors `config` enables (today: `unix`).
pub fn attestors(config: &AgentConfig) -> Attestors {
    Attestors::new(
        vec![Arc::new(UnixAttestor::new(config.unix_attestor.clone()))],
        config.limits.attestation_timeout,
    )
}

/// Serves the Workload API on `listener` from `source` until `shutdown` resolves, with the
/// default connection policy (`[workload_api]`'s defaults); see [`serve_with`].
pub async fn serve(
    listener: UnixListener,
    source: Arc<dyn WorkloadSource>,
    attestors: Attestors,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let connections = crate::config::workload_api::WorkloadApiSection::default().to_policy();
    serve_with(listener, source, attestors, settings, connections, shutdown).await
}

/// The gRPC services the Workload API socket serves: what reflection lists.
pub fn served_names() -> [&'static str; 5] {
    [
        <SpiffeWorkloadApiServer<WorkloadService> as NamedService>::NAME,
        crate::sds::SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
}

/// Reflection over the socket's own services only.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    served_names().into_iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |b, name| b.with_service_name(name),
    )
}

/// Serves the Workload API on `listener` from `source`, its connections under `connections`,
/// with SDS's defaults; see [`serve_with_sds`].
pub async fn serve_with(
    listener: UnixListener,
    source: Arc<dyn WorkloadSource>,
    attestors: Attestors,
    settings: Settings,
    connections: PeerPolicy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let sds = SdsConfig::default();
    serve_with_sds(
        listener,
        source,
        attestors,
        settings,
        connections,
        sds,
        shutdown,
    )
    .await
}

/// Serves the Workload API and SDS (under `sds`) on `listener` from `source`, its connections
/// under `connections`, until `shutdown` resolves; open streams end then, and connections get
/// [`DRAIN_TIMEOUT`] to close.
pub async fn serve_with_sds(
    listener: UnixListener,
    source: Arc<dyn WorkloadSource>,
    attestors: Attestors,
    settings: Settings,
    connections: PeerPolicy,
    sds: SdsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (trigger, stop) = Shutdown::new();
    let limits = settings.limits.clone();
    let sds = crate::sds::server(
        source.clone(),
        attestors.clone(),
        settings.clone(),
        sds,
        stop.clone(),
    )?;
    let service = WorkloadService::new(source, attestors, settings, stop.clone());
    let (_health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let serving = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.max_requests_per_connection))
        // The `:authority` fix holds no more than these (tessera_edge::authority).
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_frame_size(MAX_FRAME_SIZE)
        .layer(TrackRequests)
        // One span per Workload API / SDS call (attestation and on-demand signing nest in it).
        .layer(tessera_edge::telemetry::TraceLayer::LOCAL_CALLERS)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            SpiffeWorkloadApiServer::new(service)
                .max_decoding_message_size(limits.max_request_bytes),
        )
        .add_service(sds)
        .serve_with_incoming_shutdown(incoming::incoming(listener, connections), stop.wait());
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return Ok(result?),
        () = shutdown => trigger.fire(),
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, serving).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!(after = ?DRAIN_TIMEOUT, "Workload API: connections still open at shutdown; closing them");
            Ok(())
        }
    }
}

/// Binds `config.socket_path` and serves the Workload API from `source` with the configured
/// attestors and `settings` until `shutdown`, with `/live`, `/ready` and `/metrics` (the
/// registry of `settings.metrics`, which the node side shares) on `config.health_addr` when
/// enabled. The socket file is removed on return.
pub async fn run(
    config: &AgentConfig,
    source: Arc<dyn WorkloadSource>,
    settings: Settings,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    settings.metrics.watch_cache(&source);
    if let Some(addr) = config.health_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::HealthListener { addr, source })?;
        let (metrics, source, stop) = (settings.metrics.clone(), source.clone(), shutdown.wait());
        tokio::spawn(async move {
            if let Err(e) = crate::health::serve(listener, metrics, source, stop).await {
                tracing::warn!(error = %e, "health_checks listener stopped");
            }
        });
    }
    let (listener, _guard) = socket::bind(&config.socket_path).await?;
    tracing::info!(socket = %config.socket_path.display(), "Workload API listening");
    serve_with_sds(
        listener,
        source,
        attestors(config),
        settings,
        config.connections.clone(),
        config.sds.clone(),
        shutdown.wait(),
    )
    .await
}
