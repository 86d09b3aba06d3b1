//! The `SecretDiscoveryService`: caller credentials and attestation as for the Workload API
//! (no security header), limits, then secrets from the identity source. Calls are timed and
//! counted in the Workload API's metrics under `FetchSecrets` and `StreamSecrets`.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use tessera_actors::agent::view::WorkloadSource;
use tessera_identity::SelectorSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::SdsError;
use super::metrics::SdsMetrics;
use super::render;
use super::stream::{self, StreamTask};
use super::{SdsConfig, SECRET_TYPE_URL};
use crate::attestor::{Attestors, PeerCredentials};
use crate::shutdown::Shutdown;
use crate::workload_api::limits::StreamSlots;
use crate::workload_api::stream::unix_now;
use crate::workload_api::{ApiError, Settings};

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// The service; cheap to clone.
#[derive(Debug, Clone)]
pub struct SdsService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Arc<dyn WorkloadSource>,
    attestors: Attestors,
    settings: Settings,
    config: Arc<SdsConfig>,
    slots: StreamSlots,
    metrics: SdsMetrics,
    shutdown: Shutdown,
}

impl SdsService {
    pub(crate) fn new(
        source: Arc<dyn WorkloadSource>,
        attestors: Attestors,
        settings: Settings,
        config: SdsConfig,
        metrics: SdsMetrics,
        shutdown: Shutdown,
    ) -> Self {
        // SDS streams are bounded like the Workload API's, in a pool of their own.
        let slots = StreamSlots::new(
            settings.limits.max_streams,
            settings.limits.max_streams_per_uid,
        );
        Self {
            inner: Arc::new(Inner {
                source,
                attestors,
                settings,
                config: Arc::new(config),
                slots,
                metrics,
                shutdown,
            }),
        }
    }

    /// Runs `call` as RPC `method`: records its outcome and latency.
    async fn timed<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T, SdsError>>,
    ) -> Result<Response<T>, Status> {
        crate::workload_api::timed(&self.inner.settings, "SDS", method, SdsError::code, call).await
    }

    /// The caller's credentials and selectors. Envoy sends no `workload.spiffe.io` header,
    /// and SDS (as in SPIRE) asks for none.
    async fn attest<R>(
        &self,
        req: &Request<R>,
    ) -> Result<(PeerCredentials, SelectorSet), SdsError> {
        let caller = req
            .extensions()
            .get::<PeerCredentials>()
            .copied()
            .ok_or(ApiError::NoCredentials)?;
        let selectors = self
            .inner
            .attestors
            .attest(&caller)
            .await
            .map_err(ApiError::from)?;
        Ok((caller, selectors))
    }

    async fn fetch(&self, req: Request<DiscoveryRequest>) -> Result<DiscoveryResponse, SdsError> {
        let (_, selectors) = self.attest(&req).await?;
        let req = req.into_inner();
        stream::check(&self.inner.config, &req)?;
        // Entries outside the agent's SVID cache are signed now, and held while we read them.
        let _held = self.inner.source.use_identities(&selectors, true).await;
        let snapshot = self.inner.source.identities().borrow().clone();
        let config = &self.inner.config;
        let rendered = render::secrets(
            &snapshot,
            &selectors,
            unix_now(&*self.inner.settings.clock),
            &render::requested(&req.resource_names),
            config,
            render::validation(config, req.node.as_ref()),
        )?;
        // As SPIRE: a fetch carries no version and no nonce.
        Ok(DiscoveryResponse {
            resources: rendered.message,
            type_url: SECRET_TYPE_URL.into(),
            ..DiscoveryResponse::default()
        })
    }

    async fn open(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Stream<DiscoveryResponse>, SdsError> {
        let caller = req
            .extensions()
            .get::<PeerCredentials>()
            .copied()
            .ok_or(ApiError::NoCredentials)?;
        // Take the slot before attesting, so the bound also covers the work of attestation.
        let slot = self
            .inner
            .slots
            .try_acquire(caller.uid)
            .map_err(ApiError::from)?;
        let (_, selectors) = self.attest(&req).await?;
        let held = self.inner.source.use_identities(&selectors, true).await;
        let source = self.inner.source.identities();
        // A caller with no identity is refused now, not at its first request.
        let now = unix_now(&*self.inner.settings.clock);
        crate::workload_api::render::entitled(&source.borrow(), &selectors, now)?;
        let task = StreamTask {
            selectors,
            source,
            requests: req.into_inner(),
            config: self.inner.config.clone(),
            clock: self.inner.settings.clock.clone(),
            shutdown: self.inner.shutdown.clone(),
            metrics: self.inner.metrics.clone(),
        };
        let gauge = self.inner.settings.metrics.stream_opened("StreamSecrets");
        Ok(task.spawn((slot, gauge, held)))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type DeltaSecretsStream = Stream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = Stream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "this agent serves SDS as state of the world (StreamSecrets, FetchSecrets), not as deltas",
        ))
    }

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        self.timed("StreamSecrets", self.open(req)).await
    }

    async fn fetch_secrets(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        self.timed("FetchSecrets", self.fetch(req)).await
    }
}
