//! `tessera-server run`: config → data dir → event log → actors → admin API on the Unix
//! socket → health/metrics endpoint → agent API; then wait for the shutdown (the CLI runner
//! fires it on SIGINT/SIGTERM, `tessera_edge::cli`) or an actor failure, and shut down in
//! reverse order.
//!
//! Every server here takes an already-bound listener and a shutdown future (DESIGN.md §6), so
//! tests drive the same functions with temp sockets and port 0.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::random::OsRandom;
use tessera_actors::server::keys::{DiskKeyManager, KeyError, KeyManager, MemoryKeyManager};
use tessera_actors::server::supervisor::{Server, StartError};
use tessera_eventlog::{Clock, LogError, SystemClock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::admin::{self, AdminContext, ServeError};
use crate::config::{Config, KeyManagerKind};
use crate::metrics::{Metrics, MetricsError};
use crate::uds::{self, SocketError};

mod store;
pub use self::store::{open_log, pg_config, server_id, OpenedLog};

/// How long each server gets to finish its in-flight requests at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory cannot be created.
    #[error("data_dir {}: cannot create it: {source}", .path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The event log does not open (damaged, locked by another server, unreadable).
    #[error("cannot open the event log: {0}")]
    OpenLog(#[from] LogError),
    /// The key manager's directory is unusable.
    #[error("key manager: {0}")]
    Keys(#[from] KeyError),
    /// The actors did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The admin socket cannot be bound.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// A TCP listener cannot be bound.
    #[error("cannot listen on {addr} for the {what}: {source}; choose another address or port")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metrics registry could not be built.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The admin API stopped with an error.
    #[error(transparent)]
    Admin(#[from] ServeError),
    /// An actor died; the process exits non-zero so that its supervisor restarts it.
    #[error("server failed: {0}")]
    Failed(String),
    /// The server id (config, or the file in the data dir) is unusable.
    #[error("server id: {0}")]
    ServerId(String),
    /// Federation (configured relationships, bundle endpoint) did not start.
    #[error(transparent)]
    Federation(#[from] crate::federation::startup::FederationStartError),
    /// A background task panicked or was cancelled.
    #[error("{what} task ended abnormally: {reason}")]
    Task {
        /// Which.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// A shutdown signal every server can wait on (`tessera_edge::shutdown`'s); cheap to clone.
pub use tessera_edge::shutdown::{Shutdown as ShutdownSignal, ShutdownTrigger};

/// Runs the server until `stop` fires or an actor fails.
pub async fn run(config: Config, stop: ShutdownSignal) -> Result<(), RunError> {
    let config = Arc::new(config);
    prepare_data_dir(&config.data_dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server_id = server_id(&config)?;
    let log = open_log(&config, clock.clone()).await?;
    tracing::info!(%server_id, head = log.head(), shared = config.store.is_shared(), "event log open");
    let key_manager: Arc<dyn KeyManager> = match config.key_manager {
        KeyManagerKind::Disk => Arc::new(DiskKeyManager::open(&config.data_dir)?),
        KeyManagerKind::Memory => Arc::new(MemoryKeyManager::default()),
    };
    let settings = config.server_settings(key_manager, &server_id);
    let server = match Server::start(
        settings,
        log.shared(),
        clock.clone(),
        Arc::new(OsRandom::new()),
    )
    .await
    {
        Ok(server) => server,
        Err(e) => {
            log.close().await;
            return Err(e.into());
        }
    };
    tracing::info!(trust_domain = %config.trust_domain, "actors started");
    // Have a CA of its own (and the bundle) before serving anything, as SPIRE prepares its CA
    // at start: `bundle show` and attestation work from the first moment. On a shared log the
    // bundle may already hold other servers' CAs; this server still needs its own to sign.
    if server.authority.signer().active_authority_id().is_none() {
        if let Err(e) = server.authority.tick().await {
            server.stop().await;
            log.close().await;
            return Err(RunError::Failed(format!(
                "cannot prepare the first CA: {e}"
            )));
        }
    }

    let result = serve_all(&config, &server, &server_id, clock, stop).await;
    server.stop().await;
    log.close().await;
    tracing::info!("server stopped");
    result
}

async fn serve_all(
    config: &Arc<Config>,
    server: &Server,
    server_id: &str,
    clock: Arc<dyn Clock>,
    stop: ShutdownSignal,
) -> Result<(), RunError> {
    let (trigger, shutdown) = ShutdownSignal::new();
    let metrics = Metrics::new(server.clone(), server_id)?;
    let federation = start_federation(config, server, clock, &metrics, shutdown.clone()).await?;
    let (socket, _socket_guard) =
        uds::bind_with_mode(&config.socket_path, config.admin_socket.mode).await?;
    let ctx = AdminContext::with_federation(
        server.clone(),
        config.api.clone(),
        federation.runtime.clone(),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut admin_task = tokio::spawn(admin::serve_with(
        socket,
        ctx,
        health.clone(),
        health_service,
        config.admin_socket.peers.clone(),
        shutdown.clone().wait(),
    ));
    tracing::info!(path = %config.socket_path.display(), "admin API listening");

    let metrics_task = match config.health_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind {
                    what: "health and metrics endpoint",
                    addr,
                    source,
                })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "health and metrics endpoint listening");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
                shutdown.clone().wait(),
            )))
        }
        None => None,
    };

    let agent_listener = TcpListener::bind(config.agent_api_addr)
        .await
        .map_err(|source| RunError::Bind {
            what: "agent API",
            addr: config.agent_api_addr,
            source,
        })?;
    let agent_task = start_agent_api(
        config.clone(),
        server.clone(),
        agent_listener,
        shutdown.clone(),
    );

    // The federation tasks end only at shutdown: one that ends before is a fault the process
    // must not hide behind a healthy admin API (fail-stop, as for an actor).
    let mut refresher = federation.refresher;
    let mut endpoint = federation.endpoint;
    let endpoint_ended = async {
        match endpoint.as_mut() {
            Some((serve, _)) => serve.await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        // In this order: a failed actor ends the refresher too (its view closes), and must
        // be reported as what it is.
        biased;
        () = stop.wait() => { tracing::info!("shutting down"); Ok(()) }
        reason = server.failed() => {
            tracing::error!(%reason, "an actor failed: shutting down");
            metrics.set_failed();
            health.set_service_status("", ServingStatus::NotServing).await;
            Err(RunError::Failed(reason))
        }
        ended = &mut refresher => Err(RunError::Task {
            what: "federation refresher",
            reason: match ended {
                Ok(()) => "stopped on its own".into(),
                Err(e) => e.to_string(),
            },
        }),
        ended = endpoint_ended => Err(RunError::Task {
            what: "federation bundle endpoint",
            reason: match ended {
                Ok(Ok(())) => "stopped on its own".into(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            },
        }),
        ended = &mut admin_task => Err(match ended {
            Ok(Ok(())) => RunError::Task { what: "admin API", reason: "stopped on its own".into() },
            Ok(Err(e)) => RunError::Admin(e),
            Err(e) => RunError::Task { what: "admin API", reason: e.to_string() },
        }),
    };
    trigger.fire();
    drain("admin API", admin_task).await;
    if let Some(task) = metrics_task {
        drain("metrics endpoint", task).await;
    }
    drain("agent API", agent_task).await;
    drain("federation refresher", refresher).await;
    if let Some((endpoint, cert)) = endpoint {
        drain("federation bundle endpoint", endpoint).await;
        drain("bundle endpoint certificate", cert).await;
    }
    outcome
}

/// Applies the configured federation relationships, starts the bundle refresher and, when
/// `[federation.bundle_endpoint]` is set, binds and serves the bundle endpoint.
async fn start_federation(
    config: &Config,
    server: &Server,
    clock: Arc<dyn Clock>,
    metrics: &Metrics,
    shutdown: ShutdownSignal,
) -> Result<crate::federation::startup::Started, RunError> {
    let listener = match &config.federation.bundle_endpoint {
        Some(ep) => Some(
            TcpListener::bind(ep.addr)
                .await
                .map_err(|source| RunError::Bind {
                    what: "federation bundle endpoint",
                    addr: ep.addr,
                    source,
                })?,
        ),
        None => None,
    };
    let deps = crate::federation::startup::Deps {
        server,
        clock,
        random: Arc::new(OsRandom::new()),
        registry: Some(metrics.registry()),
    };
    Ok(crate::federation::startup::start(&config.federation, deps, listener, shutdown).await?)
}

/// Serves the agent API (`crate::agent_api`: TCP + TLS, attestation, sync, signing) on
/// `listener` until `shutdown`.
fn start_agent_api(
    config: Arc<Config>,
    server: Server,
    listener: TcpListener,
    shutdown: ShutdownSignal,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let x509pop = x509pop_verifier(&config)?;
        let deps = crate::agent_api::AgentApiDeps {
            authority: server.authority.clone(),
            server,
            x509pop,
            settings: crate::agent_api::AgentApiSettings {
                limits: config.agent_api.clone(),
                ..crate::agent_api::AgentApiSettings::default()
            },
        };
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "agent API listening");
        crate::agent_api::serve(listener, deps, shutdown.wait())
            .await
            .map_err(|e| e.to_string())
    })
}

/// The x509pop node attestor, when `[node_attestor.x509pop] ca_bundle_path` is configured.
fn x509pop_verifier(
    config: &Config,
) -> Result<Option<tessera_actors::attestation::x509pop::Verifier>, String> {
    let Some(path) = &config.x509pop_ca_bundle_path else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("x509pop ca_bundle_path {}: {e}", path.display()))?;
    tessera_actors::attestation::x509pop::Verifier::from_pem(config.trust_domain.clone(), &pem)
        .map(Some)
        .map_err(|e| format!("x509pop ca_bundle_path {}: {e}", path.display()))
}

/// Waits a bounded time for a server task to finish its in-flight work, then stops it.
async fn drain<T: std::fmt::Debug>(what: &'static str, mut task: JoinHandle<T>) {
    if task.is_finished() {
        return;
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
        Ok(Ok(outcome)) => tracing::debug!(what, ?outcome, "stopped"),
        Ok(Err(e)) => tracing::warn!(what, error = %e, "task ended abnormally"),
        Err(_) => {
            // Open streams (`events tail --follow`) never end on their own.
            tracing::info!(what, "still busy after {DRAIN_TIMEOUT:?}: cancelling");
            task.abort();
        }
    }
}

/// Creates the data directory (mode 0700: it holds keys and the log) if absent.
pub fn prepare_data_dir(dir: &Path) -> Result<(), RunError> {
    let err = |source| RunError::DataDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}
