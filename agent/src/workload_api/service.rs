//! The `SpiffeWorkloadAPI` service: header check, caller credentials, attestation, limits,
//! then rendering from the identity source. Every call is timed and counted in [`Metrics`].

use std::collections::HashSet;
use std::sync::Arc;
use tessera_edge::limits::AudienceError;

use futures::future::join_all;
use tessera_actors::agent::view::{IdentitySnapshot, WorkloadSource};
use tessera_identity::{SelectorSet, SpiffeId};
use tessera_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use tessera_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse,
    WitsvidRequest, WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::jwt;
use super::limits::StreamSlots;
use super::render::{self, entitled};
use super::stream::{unix_now, Render, StreamTask};
use super::Settings;
use crate::attestor::{Attestors, PeerCredentials};
use crate::shutdown::Shutdown;

/// The metadata key every call must carry, with value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// The service; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct WorkloadService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Arc<dyn WorkloadSource>,
    attestors: Attestors,
    settings: Settings,
    slots: StreamSlots,
    shutdown: Shutdown,
}

impl WorkloadService {
    pub(crate) fn new(
        source: Arc<dyn WorkloadSource>,
        attestors: Attestors,
        settings: Settings,
        shutdown: Shutdown,
    ) -> Self {
        let slots = StreamSlots::new(
            settings.limits.max_streams,
            settings.limits.max_streams_per_uid,
        );
        Self {
            inner: Arc::new(Inner {
                source,
                attestors,
                settings,
                slots,
                shutdown,
            }),
        }
    }

    /// Runs `call` as RPC `method`: records its outcome and latency.
    async fn timed<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<Response<T>, Status> {
        crate::workload_api::timed(
            &self.inner.settings,
            "Workload API",
            method,
            ApiError::code,
            call,
        )
        .await
    }

    /// Header and credentials: who calls.
    fn caller<Req>(req: &Request<Req>) -> Result<PeerCredentials, ApiError> {
        check_header(req.metadata())?;
        req.extensions()
            .get::<PeerCredentials>()
            .copied()
            .ok_or(ApiError::NoCredentials)
    }

    /// The caller's selectors.
    async fn attest(&self, caller: &PeerCredentials) -> Result<SelectorSet, ApiError> {
        Ok(self.inner.attestors.attest(caller).await?)
    }

    /// Opens a stream of `render`ed views for the caller of `req`.
    async fn open<Req, T>(
        &self,
        method: &'static str,
        req: Request<Req>,
        render: Render<T>,
    ) -> Result<Stream<T>, ApiError>
    where
        T: Clone + PartialEq + Send + Sync + 'static,
    {
        let caller = Self::caller(&req)?;
        // Take the slot before attesting, so the bound also covers the work of attestation.
        let slot = self.inner.slots.try_acquire(caller.uid)?;
        let selectors = self.attest(&caller).await?;
        // Entries outside the agent's SVID cache are signed now, and the stream holds them
        // in use (kept and renewed) for as long as it is open.
        let held = self.inner.source.use_identities(&selectors, true).await;
        let mut source = self.inner.source.identities();
        let snapshot = source.borrow_and_update().clone();
        let clock = self.inner.settings.clock.clone();
        let first = render(&snapshot, &selectors, unix_now(&*clock))?;
        let task = StreamTask {
            selectors,
            source,
            clock,
            shutdown: self.inner.shutdown.clone(),
            slot,
            gauge: self.inner.settings.metrics.stream_opened(method),
            render,
            held,
        };
        Ok(task.spawn(first))
    }

    fn snapshot(&self) -> Arc<IdentitySnapshot> {
        self.inner.source.identities().borrow().clone()
    }

    async fn fetch_jwt(&self, req: Request<JwtsvidRequest>) -> Result<JwtsvidResponse, ApiError> {
        let selectors = self.attest(&Self::caller(&req)?).await?;
        let req = req.into_inner();
        let limits = &self.inner.settings.limits;
        let audience: Vec<String> = req.audience.into_iter().filter(|a| !a.is_empty()).collect();
        // One definition of the audience bounds, shared with the server (tessera_edge::limits).
        match limits.audiences().check(&audience) {
            Ok(()) => {}
            Err(AudienceError::Missing) => {
                return Err(ApiError::BadRequest {
                    field: "audience",
                    reason: "audience must be specified".into(),
                })
            }
            Err(e) => {
                return Err(ApiError::RequestLimit {
                    field: "audience",
                    reason: e.to_string(),
                })
            }
        }
        let wanted = if req.spiffe_id.is_empty() {
            None
        } else {
            Some(
                SpiffeId::new(&req.spiffe_id).map_err(|e| ApiError::BadRequest {
                    field: "spiffe_id",
                    reason: e.to_string(),
                })?,
            )
        };
        // A JWT-SVID is served for identities that hold an X.509-SVID: one outside the SVID
        // cache is signed first, and held until the tokens are minted (an unheld one could be
        // evicted by the very plan that follows its signing).
        let _held = self.inner.source.use_identities(&selectors, true).await;
        let snapshot = self.snapshot();
        let now = unix_now(&*self.inner.settings.clock);
        let mut identities = entitled(&snapshot, &selectors, now)?;
        if let Some(id) = &wanted {
            identities.retain(|i| i.entry.spiffe_id == *id);
            if identities.is_empty() {
                return Err(ApiError::NotEntitled(id.to_string()));
            }
        }
        // One token per SPIFFE ID: several entries may give a caller the same ID.
        let mut seen = HashSet::new();
        identities.retain(|i| seen.insert(i.entry.spiffe_id.clone()));
        let source = &self.inner.source;
        let minted = join_all(identities.iter().map(|i| source.fetch_jwt(i, &audience))).await;
        let svids = minted
            .into_iter()
            .map(|r| {
                r.map(|held| Jwtsvid {
                    spiffe_id: held.spiffe_id.to_string(),
                    svid: held.token,
                    hint: held.hint,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JwtsvidResponse { svids })
    }

    async fn validate_jwt(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<ValidateJwtsvidResponse, ApiError> {
        let selectors = self.attest(&Self::caller(&req)?).await?;
        let req = req.into_inner();
        if req.audience.is_empty() {
            return Err(ApiError::BadRequest {
                field: "audience",
                reason: "audience must be specified".into(),
            });
        }
        if req.svid.is_empty() {
            return Err(ApiError::BadRequest {
                field: "svid",
                reason: "svid must be specified".into(),
            });
        }
        // The caller's identities (whose `federates_with` say which foreign tokens it may
        // validate) are those holding an SVID: one outside the SVID cache is signed first.
        let _held = self.inner.source.use_identities(&selectors, true).await;
        let snapshot = self.snapshot();
        let now = unix_now(&*self.inner.settings.clock);
        // The caller may validate tokens of its own trust domain, and of the trust domains
        // its identities federate with.
        let identities: Vec<_> = snapshot.for_workload(&selectors, now).collect();
        let federated = snapshot.federated_for(&identities);
        let own = snapshot.bundle.as_ref();
        let validated = jwt::validate(
            &req.svid,
            &req.audience,
            |td| {
                own.filter(|b| b.trust_domain() == td)
                    .or_else(|| federated.get(td).copied())
            },
            now,
            self.inner.settings.limits.max_jwt_bytes,
        )?;
        Ok(ValidateJwtsvidResponse {
            spiffe_id: validated.spiffe_id.to_string(),
            claims: Some(jwt::claims_struct(&validated.claims)),
        })
    }
}

/// The standard's guard against server-side request forgery: every call carries
/// `workload.spiffe.io: true`.
fn check_header(metadata: &MetadataMap) -> Result<(), ApiError> {
    match metadata.get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(ApiError::MissingHeader),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadService {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;
    type FetchWITSVIDStream = Stream<WitsvidResponse>;
    type FetchWITBundlesStream = Stream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        const M: &str = "FetchX509SVID";
        self.timed(M, self.open(M, req, render::x509_svids)).await
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        const M: &str = "FetchX509Bundles";
        self.timed(M, self.open(M, req, render::x509_bundles)).await
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        self.timed("FetchJWTSVID", self.fetch_jwt(req)).await
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        const M: &str = "FetchJWTBundles";
        self.timed(M, self.open(M, req, render::jwt_bundles)).await
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.timed("ValidateJWTSVID", self.validate_jwt(req)).await
    }

    async fn fetch_witsvid(
        &self,
        _: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented("this agent does not serve WIT-SVIDs"))
    }

    async fn fetch_wit_bundles(
        &self,
        _: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented("this agent does not serve WIT-SVIDs"))
    }
}
