//! The `tessera.agent.v1.AgentServer` service: per-call authentication (`auth`), per-agent
//! and per-IP limits (`limits`), then attestation, renewal, sync, signing and minting. Errors
//! become `Status` through `crate::status` only.

use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tessera_actors::server::agent_ops::{mint_jwt_for_agent, sign_x509_for_agent};
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::authority::AgentSvidRequest;
use tessera_actors::server::nodes::NodeCommand;
use tessera_identity::SpiffeId;
use tessera_proto::tessera::agent::v1::{
    agent_server_server::AgentServer, AttestRequest, AttestResponse, BatchSignX509SvidRequest,
    BatchSignX509SvidResponse, MintJwtSvidRequest, MintJwtSvidResponse, RenewAgentRequest,
    RenewAgentResponse, SignX509SvidResult, SyncRequest, SyncResponse,
};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use super::auth::{authenticate, Caller};
use super::limits::{Counter, LimitError, RateLimiter};
use super::tls::AgentPeer;
use super::{attest, convert, sync, AgentApiDeps};
use crate::status::{agent_refusal, status, ToCode};

/// The service; cheap to clone (handles only).
#[derive(Clone, Debug)]
pub struct AgentService {
    pub(super) deps: AgentApiDeps,
    attest_rate: RateLimiter<IpAddr>,
    jwt_rate: RateLimiter<SpiffeId>,
    csr_rate: RateLimiter<SpiffeId>,
    sync_streams: Counter<SpiffeId>,
}

impl AgentService {
    /// A service over `deps`.
    pub fn new(deps: AgentApiDeps) -> Self {
        let l = &deps.settings.limits;
        // Remember at most as many peers as may be connected at once (and a floor).
        let keys = l.max_connections.max(1024);
        Self {
            attest_rate: RateLimiter::new(
                l.attestations_per_ip_per_second,
                l.attestation_burst_per_ip,
                keys,
            ),
            jwt_rate: RateLimiter::new(
                l.jwt_mints_per_agent_per_second,
                l.jwt_mints_per_agent_per_second,
                keys,
            ),
            csr_rate: RateLimiter::new(
                l.csr_batches_per_agent_per_second,
                l.csr_batches_per_agent_per_second,
                keys,
            ),
            sync_streams: Counter::new(
                keys.saturating_mul(l.max_sync_streams_per_agent.max(1)),
                l.max_sync_streams_per_agent.max(1),
            ),
            deps,
        }
    }

    fn now_nanos(&self) -> i64 {
        self.deps.server.clock.now_unix_nanos()
    }

    /// The calling agent, checked now (see `auth`).
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        authenticate(&self.deps.server, peer(request)).await
    }
}

fn peer<T>(request: &Request<T>) -> AgentPeer {
    request
        .extensions()
        .get::<AgentPeer>()
        .cloned()
        .unwrap_or_default()
}

impl AgentService {
    /// With several servers, an agent moving here may carry a cursor this server has not
    /// folded yet (it follows the shared log a few milliseconds behind the writer). Waits,
    /// bounded, for the hub to reach it, so that the agent resumes instead of taking a
    /// snapshot; past the bound the hub decides as usual.
    async fn await_cursor(&self, cursor: u64) {
        const WAIT: Duration = Duration::from_secs(2);
        const STEP: Duration = Duration::from_millis(20);
        let hub = &self.deps.server.sync;
        for _ in 0..(WAIT.as_millis() / STEP.as_millis()) {
            match hub.seq().await {
                Ok(seq) if seq < cursor => tokio::time::sleep(STEP).await,
                _ => return,
            }
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentServer for AgentService {
    type AttestStream = BoxStream<AttestResponse>;
    type SyncEventsStream = BoxStream<SyncResponse>;

    async fn attest(
        &self,
        request: Request<Streaming<AttestRequest>>,
    ) -> Result<Response<Self::AttestStream>, Status> {
        let limits = &self.deps.settings.limits;
        // Attestation is anonymous: the source IP is all there is to limit by.
        let wait = match peer(&request).remote.map(|a| a.ip()) {
            Some(ip) => self
                .attest_rate
                .reserve(&ip, self.now_nanos(), limits.attestation_max_wait)
                .map_err(|retry_after| {
                    status(LimitError::AttestationRate {
                        ip,
                        per_second: limits.attestations_per_ip_per_second,
                        retry_after,
                    })
                })?,
            // In-process transports (tests) have no address.
            None => Duration::ZERO,
        };
        Ok(Response::new(attest::run(
            self.deps.clone(),
            request.into_inner(),
            wait,
        )))
    }

    async fn renew_agent(
        &self,
        request: Request<RenewAgentRequest>,
    ) -> Result<Response<RenewAgentResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let csr = request.into_inner().csr;
        if csr.is_empty() {
            return Err(Status::invalid_argument("RenewAgent: csr is required"));
        }
        let svid = self
            .deps
            .authority
            .sign_agent_svid(AgentSvidRequest {
                csr_der: csr,
                agent_id: caller.agent.clone(),
                ttl: self.deps.settings.agent_svid_ttl,
            })
            .await
            .map_err(status)?;
        self.deps
            .server
            .nodes
            .command(NodeCommand::Renewed {
                agent_id: caller.agent,
                presented_serial: caller.serial,
                svid_serial: svid.serial_hex.clone(),
                svid_expires_at: svid.not_after,
            })
            .await
            .map_err(|e| match e {
                CommandError::Rejected(e) => agent_refusal(&e),
                other => other.to_status(),
            })?;
        Ok(Response::new(RenewAgentResponse {
            svid: Some(convert::x509_svid(&svid, "")),
        }))
    }

    async fn sync_events(
        &self,
        request: Request<SyncRequest>,
    ) -> Result<Response<Self::SyncEventsStream>, Status> {
        let caller = self.authenticate(&request).await?;
        let limits = &self.deps.settings.limits;
        let slot = self
            .sync_streams
            .try_acquire(caller.agent.clone())
            .map_err(|_| {
                status(LimitError::SyncStreams {
                    agent: caller.agent.to_string(),
                    max: limits.max_sync_streams_per_agent,
                })
            })?;
        let req = request.into_inner();
        self.await_cursor(req.cursor).await;
        let (start, updates) = self
            .deps
            .server
            .sync
            .connect_from(caller.agent.clone(), req.cursor)
            .await
            .map_err(status)?;
        let ends = sync::Ends::of(&caller.peer, self.deps.server.clock.as_ref());
        Ok(Response::new(sync::stream(
            self.deps.clone(),
            caller.agent,
            req,
            start,
            updates,
            slot,
            ends,
        )))
    }

    async fn batch_sign_x509_svid(
        &self,
        request: Request<BatchSignX509SvidRequest>,
    ) -> Result<Response<BatchSignX509SvidResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let limits = &self.deps.settings.limits;
        let items: Vec<(String, Vec<u8>)> = request
            .into_inner()
            .params
            .into_iter()
            .map(|p| (p.entry_id, p.csr))
            .collect();
        if items.is_empty() || items.len() > limits.max_sign_batch {
            return Err(status(LimitError::SignBatch {
                got: items.len(),
                max: limits.max_sign_batch,
            }));
        }
        self.csr_rate
            .check(&caller.agent, self.now_nanos())
            .map_err(|retry_after| {
                status(LimitError::CsrRate {
                    agent: caller.agent.to_string(),
                    per_second: limits.csr_batches_per_agent_per_second,
                    retry_after,
                })
            })?;
        let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
        // The signing itself, in the RPC's span (and so in the agent's trace). Not the agent's
        // ID: a join-token agent's ID holds its token.
        let sign_span = tracing::info_span!(
            "sign",
            otel.name = "sign_x509_svids",
            csrs = items.len(),
            signed = tracing::field::Empty,
        );
        let outcomes = sign_x509_for_agent(
            &self.deps.server,
            &caller.agent,
            items,
            limits.max_sign_batch,
        )
        .instrument(sign_span.clone())
        .await
        .map_err(status)?;
        sign_span.record("signed", outcomes.iter().filter(|o| o.is_ok()).count());
        let results = ids
            .into_iter()
            .zip(outcomes)
            .map(|(entry_id, outcome)| match outcome {
                Ok((entry, svid)) => SignX509SvidResult {
                    status: Some(convert::status(Code::Ok, "")),
                    svid: Some(convert::x509_svid(&svid, &entry.hint)),
                    entry_id,
                },
                Err(e) => SignX509SvidResult {
                    status: Some(e.to_item_status()),
                    svid: None,
                    entry_id,
                },
            })
            .collect();
        Ok(Response::new(BatchSignX509SvidResponse { results }))
    }

    async fn mint_jwt_svid(
        &self,
        request: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let limits = &self.deps.settings.limits;
        let req = request.into_inner();
        limits.audiences.check(&req.audience).map_err(status)?;
        self.jwt_rate
            .check(&caller.agent, self.now_nanos())
            .map_err(|retry_after| {
                status(LimitError::JwtRate {
                    agent: caller.agent.to_string(),
                    per_second: limits.jwt_mints_per_agent_per_second,
                    retry_after,
                })
            })?;
        let ttl = (req.ttl > 0).then(|| Duration::from_secs(req.ttl.unsigned_abs().into()));
        // The entry only: neither the JWT nor the agent's ID (a join-token agent's ID holds its
        // token) is a field.
        let mint_span = tracing::info_span!(
            "mint",
            otel.name = "mint_jwt_svid",
            entry_id = %req.entry_id,
            audiences = req.audience.len(),
        );
        let (entry, svid) = mint_jwt_for_agent(
            &self.deps.server,
            &caller.agent,
            &req.entry_id,
            req.audience,
            ttl,
            limits.audiences.max_audiences,
        )
        .instrument(mint_span)
        .await
        .map_err(status)?;
        Ok(Response::new(MintJwtSvidResponse {
            svid: Some(convert::jwt_svid(&svid, &entry.hint)),
        }))
    }
}
