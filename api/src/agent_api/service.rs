//! The `tessera.agent.v1.AgentServer` service: per-call authentication, then attestation,
//! renewal, sync, signing and minting.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tessera_actors::server::agent_ops::{
    mint_jwt_for_agent, sign_x509_for_agent, ItemError, OpsError,
};
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::authority::{AgentSvidRequest, SignError};
use tessera_actors::server::nodes::{NodeCommand, NodeError};
use tessera_actors::server::sync_hub::SyncHubError;
use tessera_identity::SpiffeId;
use tessera_proto::tessera::agent::v1::{
    agent_server_server::AgentServer, AttestRequest, AttestResponse, BatchSignX509SvidRequest,
    BatchSignX509SvidResponse, MintJwtSvidRequest, MintJwtSvidResponse, RenewAgentRequest,
    RenewAgentResponse, SignX509SvidResult, SyncRequest, SyncResponse,
};
use tonic::{Code, Request, Response, Status, Streaming};

use super::tls::AgentPeer;
use super::{attest, convert, sync, AgentApiDeps};
use crate::status::agent_refusal;

/// The service; cheap to clone (handles only).
#[derive(Clone, Debug)]
pub struct AgentService {
    pub(super) deps: AgentApiDeps,
}

impl AgentService {
    /// A service over `deps`.
    pub fn new(deps: AgentApiDeps) -> Self {
        Self { deps }
    }

    /// The calling agent, checked against the nodes aggregate: attested, not banned, and
    /// presenting its current SVID.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<(SpiffeId, String), Status> {
        let peer = request
            .extensions()
            .get::<AgentPeer>()
            .cloned()
            .unwrap_or_default();
        let (Some(agent), Some(serial)) = (peer.spiffe_id, peer.serial) else {
            return Err(Status::unauthenticated(
                "this call needs the agent's X.509-SVID as the TLS client certificate; attest first",
            ));
        };
        let id = agent.clone();
        let nodes = &self.deps.server.nodes;
        let mut state = nodes
            .read(move |n| n.get(&id).cloned())
            .await
            .map_err(command_status)?;
        if state.as_ref().is_none_or(|s| s.agent.svid_serial != serial) {
            // With several servers, the agent may have attested or renewed on another one a
            // moment ago: fold what the log holds before refusing it.
            let id = agent.clone();
            state = nodes
                .read_fresh(move |n| n.get(&id).cloned())
                .await
                .map_err(command_status)?;
        }
        match state {
            None => Err(Status::permission_denied(NodeError::NotAttested(agent).to_string())),
            Some(s) if s.banned => Err(agent_refusal(&NodeError::Banned(agent))),
            Some(s) if s.agent.svid_serial != serial => Err(Status::permission_denied(format!(
                "agent {agent} presented SVID serial {serial}, its current SVID is {}; reconnect with the newest SVID",
                s.agent.svid_serial
            ))),
            Some(_) => Ok((agent, serial)),
        }
    }
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

/// Maps an actor call error.
pub(super) fn command_status<E: std::error::Error + 'static>(e: CommandError<E>) -> Status {
    match e {
        CommandError::Rejected(e) => Status::failed_precondition(e.to_string()),
        CommandError::Overloaded { .. } => Status::resource_exhausted(e.to_string()),
        CommandError::Unavailable { .. } => Status::unavailable(e.to_string()),
    }
}

/// Maps a signing error.
pub(super) fn sign_status(e: SignError) -> Status {
    match e {
        SignError::Overloaded { .. } => Status::resource_exhausted(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

fn hub_status(e: SyncHubError) -> Status {
    match e {
        SyncHubError::Overloaded { .. } => Status::resource_exhausted(e.to_string()),
        SyncHubError::Unavailable(_) => Status::unavailable(e.to_string()),
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
        Ok(Response::new(attest::run(
            self.deps.clone(),
            request.into_inner(),
        )))
    }

    async fn renew_agent(
        &self,
        request: Request<RenewAgentRequest>,
    ) -> Result<Response<RenewAgentResponse>, Status> {
        let (agent, serial) = self.authenticate(&request).await?;
        let csr = request.into_inner().csr;
        if csr.is_empty() {
            return Err(Status::invalid_argument("RenewAgent: csr is required"));
        }
        let svid = self
            .deps
            .authority
            .sign_agent_svid(AgentSvidRequest {
                csr_der: csr,
                agent_id: agent.clone(),
                ttl: self.deps.settings.agent_svid_ttl,
            })
            .await
            .map_err(|e| match e {
                SignError::Rejected(r) => Status::invalid_argument(r.to_string()),
                other => sign_status(other),
            })?;
        self.deps
            .server
            .nodes
            .command(NodeCommand::Renewed {
                agent_id: agent,
                presented_serial: serial,
                svid_serial: svid.serial_hex.clone(),
                svid_expires_at: svid.not_after,
            })
            .await
            .map_err(|e| match e {
                CommandError::Rejected(e) => Status::permission_denied(e.to_string()),
                other => command_status(other),
            })?;
        Ok(Response::new(RenewAgentResponse {
            svid: Some(convert::x509_svid(&svid, "")),
        }))
    }

    async fn sync_events(
        &self,
        request: Request<SyncRequest>,
    ) -> Result<Response<Self::SyncEventsStream>, Status> {
        let (agent, _) = self.authenticate(&request).await?;
        let req = request.into_inner();
        self.await_cursor(req.cursor).await;
        let (start, updates) = self
            .deps
            .server
            .sync
            .connect_from(agent.clone(), req.cursor)
            .await
            .map_err(hub_status)?;
        Ok(Response::new(sync::stream(
            self.deps.clone(),
            agent,
            req,
            start,
            updates,
        )))
    }

    async fn batch_sign_x509_svid(
        &self,
        request: Request<BatchSignX509SvidRequest>,
    ) -> Result<Response<BatchSignX509SvidResponse>, Status> {
        let (agent, _) = self.authenticate(&request).await?;
        let items: Vec<(String, Vec<u8>)> = request
            .into_inner()
            .params
            .into_iter()
            .map(|p| (p.entry_id, p.csr))
            .collect();
        let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
        let outcomes = sign_x509_for_agent(
            &self.deps.server,
            &agent,
            items,
            self.deps.settings.max_sign_batch,
        )
        .await
        .map_err(ops_status)?;
        let results = ids
            .into_iter()
            .zip(outcomes)
            .map(|(id, outcome)| match outcome {
                Ok((entry, svid)) => SignX509SvidResult {
                    status: Some(convert::status(Code::Ok, "")),
                    svid: Some(convert::x509_svid(&svid, &entry.hint)),
                    entry_id: id,
                },
                Err(e) => {
                    let code = match e {
                        ItemError::InvalidId { .. } | ItemError::Rejected(_) => {
                            Code::InvalidArgument
                        }
                        ItemError::NotAuthorised { .. } => Code::PermissionDenied,
                    };
                    failed(&id, code, e.to_string())
                }
            })
            .collect();
        Ok(Response::new(BatchSignX509SvidResponse { results }))
    }

    async fn mint_jwt_svid(
        &self,
        request: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let (agent, _) = self.authenticate(&request).await?;
        let req = request.into_inner();
        let ttl = (req.ttl > 0).then(|| Duration::from_secs(req.ttl.unsigned_abs().into()));
        let (entry, svid) = mint_jwt_for_agent(
            &self.deps.server,
            &agent,
            &req.entry_id,
            req.audience,
            ttl,
            self.deps.settings.max_audiences,
        )
        .await
        .map_err(ops_status)?;
        Ok(Response::new(MintJwtSvidResponse {
            svid: Some(convert::jwt_svid(&svid, &entry.hint)),
        }))
    }
}

/// Maps a domain operation error.
fn ops_status(e: OpsError) -> Status {
    match e {
        OpsError::Overloaded(m) => Status::resource_exhausted(m),
        OpsError::Unavailable(m) => Status::unavailable(m),
        OpsError::Invalid(m) => Status::invalid_argument(m),
        OpsError::Denied(m) => Status::permission_denied(m),
    }
}

fn failed(entry_id: &str, code: Code, message: impl Into<String>) -> SignX509SvidResult {
    SignX509SvidResult {
        status: Some(convert::status(code, message)),
        svid: None,
        entry_id: entry_id.to_owned(),
    }
}
