//! `Attest`: node attestation on a bidirectional stream.
//!
//! join_token: consume the token (single use), sign the agent SVID, record the agent, and
//! register the token's node alias if `token generate --spiffeID` asked for one.
//! x509pop: check the chain, send a nonce, verify the signature, sign, record.

use std::time::Duration;

use futures::StreamExt;
use tessera_actors::attestation::{join_token, x509pop, AttestError, AttestedNode};
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::authority::{AgentSvidRequest, SignError};
use tessera_actors::server::events::AttestedAgent;
use tessera_actors::server::nodes::NodeCommand;
use tessera_actors::server::registry::{NewEntry, RegistryCommand};
use tessera_actors::server::tokens::{hash_token, TokenCommand, TokenReply};
use tessera_identity::{EntryId, RegistrationEntry, Selector, SelectorSet, SpiffeId};
use tessera_proto::tessera::agent::v1::{
    attest_request, attest_response, AttestRequest, AttestResponse, AttestResult,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::{convert, AgentApiDeps};
use crate::status::{agent_refusal, status, ToCode};

type Out = mpsc::Sender<Result<AttestResponse, Status>>;

/// Runs one attestation after `wait` (its turn under the per-IP rate); its messages are the
/// returned stream. The whole attestation is bounded by `limits.attestation_timeout`, and each
/// message from the agent by `limits.attestation_step_timeout`, so an anonymous stream that
/// sends nothing holds its task only briefly.
pub fn run(
    deps: AgentApiDeps,
    input: Streaming<AttestRequest>,
    wait: Duration,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = Result<AttestResponse, Status>> + Send>> {
    let (tx, rx) = mpsc::channel(4);
    // The attestation outlives the RPC's span (which ends with the response headers): its own
    // span, a child of the RPC's, follows it to the end. No token or key is ever a field.
    let span = tracing::info_span!("attest_agent", otel.name = "attest_agent");
    let task = async move {
        tokio::time::sleep(wait).await;
        let limit = deps.settings.limits.attestation_timeout;
        let outcome = tokio::time::timeout(limit, attest(&deps, input, &tx))
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "attestation took longer than {limit:?} (limits.attestation_timeout)"
                )))
            });
        let message = outcome.map(|result| AttestResponse {
            step: Some(attest_response::Step::Result(result)),
        });
        if let Err(status) = &message {
            tracing::info!(code = ?status.code(), message = status.message(), "attestation refused");
        }
        let _ = tx.send(message).await;
    };
    tokio::spawn(task.instrument(span));
    Box::pin(ReceiverStream::new(rx))
}

fn attest_status(e: AttestError) -> Status {
    status(e)
}

/// The agent's next message, within `limits.attestation_step_timeout`.
async fn next(
    deps: &AgentApiDeps,
    input: &mut Streaming<AttestRequest>,
) -> Result<attest_request::Step, Status> {
    let limit = deps.settings.limits.attestation_step_timeout;
    let Ok(message) = tokio::time::timeout(limit, input.next()).await else {
        return Err(Status::deadline_exceeded(format!(
            "attest: no message from the agent within {limit:?} (limits.attestation_step_timeout)"
        )));
    };
    match message {
        Some(Ok(AttestRequest { step: Some(step) })) => Ok(step),
        Some(Ok(_)) => Err(Status::invalid_argument("attest: empty message")),
        Some(Err(status)) => Err(status),
        None => Err(Status::cancelled("attest: the agent closed the stream")),
    }
}

async fn attest(
    deps: &AgentApiDeps,
    mut input: Streaming<AttestRequest>,
    out: &Out,
) -> Result<AttestResult, Status> {
    let attest_request::Step::Params(params) = next(deps, &mut input).await? else {
        return Err(Status::invalid_argument(
            "attest: the first message must carry params",
        ));
    };
    let data = params
        .data
        .ok_or_else(|| Status::invalid_argument("attest: params.data is required"))?;
    if params.csr.is_empty() {
        return Err(Status::invalid_argument("attest: params.csr is required"));
    }
    let td = &deps.server.settings.trust_domain;
    let mut alias: Option<SpiffeId> = None;
    let node = match data.r#type.as_str() {
        join_token::NAME => {
            let token = std::str::from_utf8(&data.payload)
                .map_err(|_| Status::invalid_argument("join_token: the token is not UTF-8"))?;
            let node = join_token::attested(td, token).map_err(attest_status)?;
            let reply = deps
                .server
                .tokens
                .command(TokenCommand::Consume {
                    token_hash: hash_token(token),
                    agent_id: node.agent_id.clone(),
                })
                .await
                .map_err(|e| match e {
                    // A spent, unknown or expired token: refused, whatever the token error.
                    CommandError::Rejected(e) => Status::permission_denied(e.to_string()),
                    other => other.to_status(),
                })?;
            if let TokenReply::Consumed { alias: a } = reply {
                alias = a;
            }
            node
        }
        x509pop::NAME => {
            let verifier = deps
                .x509pop
                .as_ref()
                .ok_or_else(|| attest_status(AttestError::NotEnabled(x509pop::NAME.into())))?;
            let now = deps.server.clock.now();
            let candidate = verifier
                .check_chain(&data.payload, now)
                .map_err(attest_status)?;
            let mut nonce = [0u8; x509pop::NONCE_LEN];
            deps.server.random.fill(&mut nonce);
            out.send(Ok(AttestResponse {
                step: Some(attest_response::Step::Challenge(nonce.to_vec())),
            }))
            .await
            .map_err(|_| Status::cancelled("attest: the agent went away"))?;
            let attest_request::Step::ChallengeResponse(signature) = next(deps, &mut input).await?
            else {
                return Err(Status::invalid_argument(
                    "attest: expected the challenge response",
                ));
            };
            verifier
                .verify_response(&candidate, &nonce, &signature)
                .map_err(attest_status)?
        }
        other => return Err(attest_status(AttestError::NotEnabled(other.to_owned()))),
    };
    finish(deps, node, params.csr, alias).await
}

async fn finish(
    deps: &AgentApiDeps,
    node: AttestedNode,
    csr: Vec<u8>,
    alias: Option<SpiffeId>,
) -> Result<AttestResult, Status> {
    let svid = deps
        .authority
        .sign_agent_svid(AgentSvidRequest {
            csr_der: csr,
            agent_id: node.agent_id.clone(),
            ttl: deps.settings.agent_svid_ttl,
        })
        .await
        .map_err(|e| match e {
            SignError::Rejected(r) => Status::new(r.code(), format!("attest: agent CSR: {r}")),
            other => status(other),
        })?;
    let attestation_type = node
        .agent_id
        .segments()
        .nth(2)
        .unwrap_or("unknown")
        .to_owned();
    deps.server
        .nodes
        .command(NodeCommand::Attested(AttestedAgent {
            id: node.agent_id.clone(),
            attestation_type,
            selectors: node.selectors.clone(),
            svid_serial: svid.serial_hex.clone(),
            svid_expires_at: svid.not_after,
            attested_at: deps.server.clock.now_unix_nanos().div_euclid(1_000_000_000),
            can_reattest: node.can_reattest,
        }))
        .await
        .map_err(|e| match e {
            CommandError::Rejected(e) => agent_refusal(&e),
            other => other.to_status(),
        })?;
    if let Some(alias) = alias {
        register_alias(deps, &node.agent_id, alias).await;
    }
    let bundle = deps
        .authority
        .bundle()
        .ok_or_else(|| Status::unavailable("the authority has no bundle yet; retry"))?;
    Ok(AttestResult {
        svid: Some(convert::x509_svid(&svid, "")),
        bundle: Some(convert::bundle(&bundle)),
        reattestable: node.can_reattest,
    })
}

/// SPIRE's `token generate -spiffeID X`: an entry X parented to the agent, so entries under X
/// reach it. Best effort: the agent is attested either way; a failure is logged.
async fn register_alias(deps: &AgentApiDeps, agent: &SpiffeId, alias: SpiffeId) {
    let selector = Selector::new("spiffe_id", &agent.to_string());
    let (Ok(selector), Ok(placeholder)) = (selector, EntryId::new("pending")) else {
        tracing::warn!(%agent, "cannot build the node alias selector");
        return;
    };
    let mut selectors = SelectorSet::new();
    selectors.insert(selector);
    let entry = RegistrationEntry {
        id: placeholder,
        spiffe_id: alias.clone(),
        parent_id: agent.clone(),
        selectors,
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: vec![],
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        created_at: 0,
        revision: 0,
    };
    let outcome = deps
        .server
        .registry
        .command(RegistryCommand::Create(vec![NewEntry { id: None, entry }]))
        .await;
    match outcome {
        Ok(tessera_actors::server::registry::RegistryReply::Created(results)) => {
            for r in results {
                if let Err(e) = r {
                    tracing::warn!(%agent, %alias, error = %e, "node alias from the join token was not registered");
                }
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(%agent, %alias, error = %e, "node alias from the join token was not registered")
        }
    }
}
