//! The admin API: SPIRE's server services (Entry, Agent, Bundle, SVID, TrustDomain) and
//! Tessera's EventLog on a Unix socket, with gRPC health and reflection (listing exactly the
//! services served here) so `grpcurl -plaintext -unix` works.
//!
//! Each service translates RPCs into actor messages (`tessera_actors::server::supervisor`);
//! conversions live in [`crate::convert`], error codes in [`crate::status`]. Who may call is
//! decided twice: by the socket's file modes (directory 0770, socket `[admin_socket] mode`),
//! as in SPIRE, and by the caller's uid read at accept (`SO_PEERCRED`) against
//! `[admin_socket] allowed_uids` (this process's uid and root by default). Connections come
//! through `tessera_edge::peer` (bounded, closed when idle, with the grpc `:authority` fix).

mod agent;
mod bundle;
mod entry;
mod eventlog;
mod localauthority;
mod svid;
mod trustdomain;

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;
use std::sync::Arc;

use tessera_actors::server::supervisor::Server;
use tessera_edge::authority::{MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE};
use tessera_edge::peer::{PeerPolicy, TrackRequests};
use tessera_identity::TrustDomain;
use tessera_proto::spire::api::server::agent::v1::agent_server::AgentServer;
use tessera_proto::spire::api::server::bundle::v1::bundle_server::BundleServer;
use tessera_proto::spire::api::server::entry::v1::entry_server::EntryServer;
use tessera_proto::spire::api::server::localauthority::v1::local_authority_server::LocalAuthorityServer;
use tessera_proto::spire::api::server::svid::v1::svid_server::SvidServer;
use tessera_proto::spire::api::server::trustdomain::v1::trust_domain_server::TrustDomainServer;
use tessera_proto::tessera::eventlog::v1::event_log_server::EventLogServer;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

pub use self::agent::AgentService;
pub use self::bundle::BundleService;
pub use self::entry::EntryService;
pub use self::eventlog::EventLogService;
pub use self::localauthority::LocalAuthorityService;
pub use self::svid::SvidService;
pub use self::trustdomain::{refresh_status_json, TrustDomainService, REFRESH_STATUS_METADATA};
use crate::config::admin_socket::AdminSocketConfig;
use crate::config::ApiLimits;
use crate::convert::ConvertError;
use crate::federation::FederationRuntime;
use crate::status::ApiError;

/// What every admin service shares.
#[derive(Debug)]
pub struct AdminContext {
    /// The server's actors.
    pub server: Server,
    /// The admin API's bounds.
    pub limits: ApiLimits,
    /// The federation refresher's status and refresh requests.
    pub federation: Arc<FederationRuntime>,
    tail_streams: Arc<Semaphore>,
}

impl AdminContext {
    /// A context over a started server, with no federation refresher behind it.
    pub fn new(server: Server, limits: ApiLimits) -> Arc<Self> {
        Self::with_federation(server, limits, FederationRuntime::detached())
    }

    /// A context over a started server and its federation refresher.
    pub fn with_federation(
        server: Server,
        limits: ApiLimits,
        federation: Arc<FederationRuntime>,
    ) -> Arc<Self> {
        Arc::new(Self {
            tail_streams: Arc::new(Semaphore::new(limits.max_tail_streams.max(1))),
            server,
            limits,
            federation,
        })
    }

    /// One page of a map keyed by trust domain (federation relationships, federated
    /// bundles): the items after `page_token` (a trust domain name; empty: from the start),
    /// converted, and the next page token (the page's last trust domain; empty at the end).
    pub fn page_by_trust_domain<V, T>(
        &self,
        map: &BTreeMap<TrustDomain, V>,
        page_size: i32,
        page_token: &str,
        mut convert: impl FnMut(&TrustDomain, &V) -> T,
    ) -> Result<(Vec<T>, String), ApiError> {
        let page_size = self.page_size(page_size)?;
        let after = if page_token.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(crate::convert::trust_domain("page_token", page_token)?)
        };
        let mut page = map.range((after, Bound::Unbounded));
        let mut last = None;
        let items = page
            .by_ref()
            .take(page_size)
            .map(|(td, v)| {
                last = Some(td);
                convert(td, v)
            })
            .collect();
        let next = match (page.next(), last) {
            (Some(_), Some(td)) => td.as_str().to_owned(),
            _ => String::new(),
        };
        Ok((items, next))
    }

    /// The page size to use for a request's `page_size`: the default when 0, at most the
    /// maximum (the API lets the server return fewer than asked).
    pub fn page_size(&self, requested: i32) -> Result<usize, ApiError> {
        match usize::try_from(requested) {
            Ok(0) => Ok(self.limits.default_page_size),
            Ok(n) => Ok(n.min(self.limits.max_page_size)),
            Err(_) => Err(ConvertError::OutOfRange {
                field: "page_size",
                value: i64::from(requested),
                rule: "must not be negative",
            }
            .into()),
        }
    }
}

/// Why the admin API stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not be built from the descriptor set (a build problem).
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error("admin API transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The gRPC services served on the admin socket: what reflection lists.
pub fn served_names() -> [&'static str; 10] {
    [
        <EntryServer<EntryService> as NamedService>::NAME,
        <AgentServer<AgentService> as NamedService>::NAME,
        <BundleServer<BundleService> as NamedService>::NAME,
        <SvidServer<SvidService> as NamedService>::NAME,
        <TrustDomainServer<TrustDomainService> as NamedService>::NAME,
        <EventLogServer<EventLogService> as NamedService>::NAME,
        <LocalAuthorityServer<LocalAuthorityService> as NamedService>::NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
}

/// Reflection over the admin socket's own services only.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    served_names().into_iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |b, name| b.with_service_name(name),
    )
}

/// Serves the admin API on `listener` until `shutdown` resolves, with the default
/// `[admin_socket]` peer policy (this process's uid and root); see [`serve_with`].
pub async fn serve(
    listener: UnixListener,
    ctx: Arc<AdminContext>,
    health: HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let peers = AdminSocketConfig::default().peers;
    serve_with(listener, ctx, health, health_service, peers, shutdown).await
}

/// Serves the admin API on `listener`, its callers checked and bounded by `peers`, until
/// `shutdown` resolves. `health` is set to SERVING for every service once serving starts; the
/// caller may flip it later (e.g. when the server fails).
pub async fn serve_with(
    listener: UnixListener,
    ctx: Arc<AdminContext>,
    health: HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    peers: PeerPolicy,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let max = ctx.limits.max_request_bytes;
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    health.set_serving::<EntryServer<EntryService>>().await;
    health.set_serving::<AgentServer<AgentService>>().await;
    health.set_serving::<BundleServer<BundleService>>().await;
    health.set_serving::<SvidServer<SvidService>>().await;
    health
        .set_serving::<TrustDomainServer<TrustDomainService>>()
        .await;
    health
        .set_serving::<EventLogServer<EventLogService>>()
        .await;
    health
        .set_serving::<LocalAuthorityServer<LocalAuthorityService>>()
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    tonic::transport::Server::builder()
        // The `:authority` fix holds no more than these (tessera_edge::authority).
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_frame_size(MAX_FRAME_SIZE)
        .layer(TrackRequests)
        // One span per admin RPC (`rpc.method`), exported when [telemetry] is on.
        .layer(tessera_edge::telemetry::TraceLayer::TRUSTED_CALLERS)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            EntryServer::new(EntryService::new(ctx.clone())).max_decoding_message_size(max),
        )
        .add_service(
            AgentServer::new(AgentService::new(ctx.clone())).max_decoding_message_size(max),
        )
        .add_service(
            BundleServer::new(BundleService::new(ctx.clone())).max_decoding_message_size(max),
        )
        .add_service(SvidServer::new(SvidService::new(ctx.clone())).max_decoding_message_size(max))
        .add_service(
            TrustDomainServer::new(TrustDomainService::new(ctx.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            LocalAuthorityServer::new(LocalAuthorityService::new(ctx.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(EventLogServer::new(EventLogService::new(ctx)).max_decoding_message_size(max))
        .serve_with_incoming_shutdown(tessera_edge::peer::incoming(listener, peers), shutdown)
        .await?;
    Ok(())
}
