//! Federation at server start: the relationships of the config file made to exist (created, or
//! updated to match; nothing recorded when they already do), the refresher started, and the
//! bundle endpoint served when configured. Everything started here stops on the shutdown
//! signal it is given.

use std::sync::Arc;

use tessera_actors::random::RandomSource;
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::federation::{FederationCommand, FederationError, FederationHandle};
use tessera_actors::server::supervisor::Server;
use tessera_eventlog::Clock;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::endpoint::{self, cert, EndpointError, Published};
use super::fetch::Fetcher;
use super::metrics::FederationMetrics;
use super::refresher::Refresher;
use super::FederationRuntime;
use crate::config::federation::{
    BundleEndpointConfig, ConfiguredRelationship, EndpointCert, FederationConfig,
};
use crate::daemon::ShutdownSignal;

/// Refresh requests queued at once (`refresh_now` callers beyond it wait).
const REFRESH_QUEUE: usize = 64;

/// Why federation did not start.
#[derive(Debug, thiserror::Error)]
pub enum FederationStartError {
    /// A configured relationship was refused by the federation aggregate.
    #[error("federation.federates_with.{trust_domain:?}: {source}")]
    Relationship {
        /// The trust domain of the table.
        trust_domain: String,
        /// Why.
        source: CommandError<FederationError>,
    },
    /// The bundle endpoint cannot start.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The refresher's metrics cannot be registered (a bug).
    #[error("cannot register the federation metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The bundle endpoint's task and its certificate's renewal or reload task.
pub type EndpointTasks = (JoinHandle<Result<(), EndpointError>>, JoinHandle<()>);

/// What is running.
#[derive(Debug)]
pub struct Started {
    /// The refresher as the admin API sees it.
    pub runtime: Arc<FederationRuntime>,
    /// The refresher.
    pub refresher: JoinHandle<()>,
    /// The bundle endpoint and its certificate's renewal or reload, if configured.
    pub endpoint: Option<EndpointTasks>,
}

/// What the federation runtime needs of the server process.
#[derive(Debug)]
pub struct Deps<'a> {
    /// The running actors.
    pub server: &'a Server,
    /// The server's clock.
    pub clock: Arc<dyn Clock>,
    /// Backoff jitter.
    pub random: Arc<dyn RandomSource>,
    /// The metrics registry, if metrics are exported.
    pub registry: Option<&'a prometheus::Registry>,
}

/// Applies the configured relationships, starts the refresher and, with `listener`, the
/// bundle endpoint, until `shutdown`.
///
/// # Errors
/// [`FederationStartError`] naming the relationship or the endpoint setting at fault.
pub async fn start(
    config: &FederationConfig,
    deps: Deps<'_>,
    listener: Option<TcpListener>,
    shutdown: ShutdownSignal,
) -> Result<Started, FederationStartError> {
    apply_configured(&deps.server.federation, &config.relationships).await?;
    let (tx, rx) = mpsc::channel(REFRESH_QUEUE);
    let runtime = FederationRuntime::new(tx);
    let metrics = deps.registry.map(FederationMetrics::register).transpose()?;
    let refresher = Refresher {
        federation: deps.server.federation.clone(),
        fetcher: Fetcher::new(config.fetch.clone(), deps.clock.clone()),
        runtime: runtime.clone(),
        metrics,
        clock: deps.clock.clone(),
        random: deps.random.clone(),
        settings: config.refresher.clone(),
    };
    let refresher = tokio::spawn(refresher.run(rx, shutdown.wait()));
    let endpoint = match (&config.bundle_endpoint, listener) {
        (Some(ep), Some(listener)) => {
            Some(serve_endpoint(ep, config, deps.server, deps.clock, listener, shutdown).await?)
        }
        _ => None,
    };
    Ok(Started {
        runtime,
        refresher,
        endpoint,
    })
}

async fn serve_endpoint(
    ep: &BundleEndpointConfig,
    config: &FederationConfig,
    server: &Server,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
    shutdown: ShutdownSignal,
) -> Result<EndpointTasks, EndpointError> {
    let (live, cert_task) = match &ep.cert {
        EndpointCert::HttpsSpiffe => {
            cert::spiffe(
                server.authority.clone(),
                &server.settings.trust_domain,
                server.clock.clone(),
                shutdown.wait(),
            )
            .await?
        }
        EndpointCert::HttpsWeb {
            cert_file_path,
            key_file_path,
        } => cert::web(
            cert_file_path.clone(),
            key_file_path.clone(),
            shutdown.wait(),
        )?,
    };
    let tls = endpoint::server_config(live, clock)?;
    let published = Published {
        bundle: server.authority.subscribe_bundle(),
        refresh_hint: ep.refresh_hint,
    };
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        profile = match ep.cert { EndpointCert::HttpsSpiffe => "https_spiffe", EndpointCert::HttpsWeb { .. } => "https_web" },
        "federation bundle endpoint listening"
    );
    let task = tokio::spawn(endpoint::serve(
        listener,
        tls,
        published,
        config.endpoint.clone(),
        shutdown.wait(),
    ));
    Ok((task, cert_task))
}

/// Makes each configured relationship exist as written: created with its bootstrap bundle
/// (only if no bundle of the trust domain is held), or updated if it differs; nothing is
/// recorded for one that already matches.
///
/// # Errors
/// [`FederationStartError::Relationship`] for the first one the aggregate refuses.
pub async fn apply_configured(
    federation: &FederationHandle,
    configured: &[ConfiguredRelationship],
) -> Result<(), FederationStartError> {
    for c in configured {
        let td = &c.relationship.trust_domain;
        let view = federation.view();
        let command = match view.relationships.get(td) {
            Some(held) if *held == c.relationship => continue,
            Some(_) => FederationCommand::UpdateRelationship {
                relationship: c.relationship.clone(),
                bundle: None,
            },
            None => FederationCommand::CreateRelationship {
                relationship: c.relationship.clone(),
                bundle: c
                    .bootstrap
                    .clone()
                    .filter(|_| !view.bundles.contains_key(td)),
            },
        };
        federation
            .command(command)
            .await
            .map_err(|source| FederationStartError::Relationship {
                trust_domain: td.to_string(),
                source,
            })?;
        tracing::info!(trust_domain = %td, url = %c.relationship.bundle_endpoint_url, "federation relationship from the config file applied");
    }
    Ok(())
}
