//! `spire.api.server.agent.v1.Agent`: attested agents and join tokens. `AttestAgent`,
//! `RenewAgent` and `PostStatus` are for agents and stay unimplemented here (Tessera agents
//! use the agent API over mTLS).

use std::sync::Arc;

use tessera_actors::random::OsRandom;
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::nodes::{NodeCommand, NodeError};
use tessera_actors::server::tokens::{hash_token, TokenCommand, TokenReply, MIN_CHOSEN_TOKEN_LEN};
use tessera_identity::{EntryId, SpiffeId, RESERVED_PATH};
use tessera_proto::spire::api::server::agent::v1::{
    agent_server, list_agents_request, BanAgentRequest, CountAgentsRequest, CountAgentsResponse,
    CreateJoinTokenRequest, DeleteAgentRequest, GetAgentRequest, ListAgentsRequest,
    ListAgentsResponse,
};
use tessera_proto::spire::api::types;
use tonic::{Request, Response, Status};

use super::AdminContext;
use crate::convert::{self, agent_to_proto, AgentFilter, ConvertError};
use crate::status::{status, ApiError};

/// Longest join token a caller may choose, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;

/// The Agent service.
#[derive(Debug, Clone)]
pub struct AgentService {
    ctx: Arc<AdminContext>,
}

impl AgentService {
    /// Over the shared context.
    pub fn new(ctx: Arc<AdminContext>) -> Self {
        Self { ctx }
    }

    fn agent_id(
        &self,
        field: &'static str,
        id: Option<&types::Spiffeid>,
    ) -> Result<SpiffeId, Status> {
        convert::spiffe_id(field, id).map_err(status)
    }
}

fn list_filter(
    f: tessera_proto::spire::api::server::agent::v1::count_agents_request::Filter,
) -> list_agents_request::Filter {
    list_agents_request::Filter {
        by_attestation_type: f.by_attestation_type,
        by_selector_match: f.by_selector_match,
        by_banned: f.by_banned,
        by_can_reattest: f.by_can_reattest,
        by_expires_before: f.by_expires_before,
    }
}

/// A fresh join token: 16 bytes from the operating system's generator, written as a UUID
/// (SPIRE's format). Always the OS generator: a token is a credential, and the server's
/// injected source may be seeded.
fn generate_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    OsRandom::new()
        .try_fill(&mut bytes)
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(EntryId::from_random_bytes(bytes).as_str().to_owned())
}

/// A caller-chosen token becomes a path segment of the agent's SPIFFE ID.
fn check_token(token: &str) -> Result<(), ConvertError> {
    let ok = token.len() >= MIN_CHOSEN_TOKEN_LEN
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && token != "."
        && token != "..";
    if ok {
        Ok(())
    } else {
        Err(ConvertError::Invalid {
            field: "token",
            value: crate::convert::shown_value(token),
            rule: format!("must be {MIN_CHOSEN_TOKEN_LEN} to {MAX_TOKEN_LEN} letters, digits, '-', '_' or '.' (a short token can be guessed); omit it to have one generated"),
        })
    }
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    async fn count_agents(
        &self,
        request: Request<CountAgentsRequest>,
    ) -> Result<Response<CountAgentsResponse>, Status> {
        let filter = AgentFilter::from_proto(request.into_inner().filter.map(list_filter).as_ref())
            .map_err(status)?;
        let count = self
            .ctx
            .server
            .nodes
            .read(move |n| n.iter().filter(|a| filter.matches(a)).count())
            .await
            .map_err(status)?;
        Ok(Response::new(CountAgentsResponse {
            count: i32::try_from(count).unwrap_or(i32::MAX),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let req = request.into_inner();
        let filter = AgentFilter::from_proto(req.filter.as_ref()).map_err(status)?;
        let page_size = self.ctx.page_size(req.page_size).map_err(status)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(SpiffeId::new(&req.page_token).map_err(|source| {
                status(ConvertError::Id {
                    field: "page_token",
                    source,
                })
            })?)
        };
        let (agents, next) = self
            .ctx
            .server
            .nodes
            .read(move |n| {
                let mut page = Vec::new();
                let mut next = None;
                // Nodes iterate in SPIFFE ID order; the token is the last ID of the page.
                for a in n.iter() {
                    if after.as_ref().is_some_and(|t| &a.agent.id <= t) || !filter.matches(a) {
                        continue;
                    }
                    if page.len() == page_size {
                        next = page
                            .last()
                            .map(|l: &tessera_actors::server::nodes::AgentState| {
                                l.agent.id.to_string()
                            });
                        break;
                    }
                    page.push(a.clone());
                }
                (page, next)
            })
            .await
            .map_err(status)?;
        Ok(Response::new(ListAgentsResponse {
            agents: agents
                .iter()
                .map(|a| agent_to_proto(a, req.output_mask.as_ref()))
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<types::Agent>, Status> {
        let req = request.into_inner();
        let id = self.agent_id("id", req.id.as_ref())?;
        let wanted = id.clone();
        match self
            .ctx
            .server
            .nodes
            .read(move |n| n.get(&wanted).cloned())
            .await
            .map_err(status)?
        {
            Some(a) => Ok(Response::new(agent_to_proto(&a, req.output_mask.as_ref()))),
            None => Err(status(NodeError::NotAttested(id))),
        }
    }

    async fn delete_agent(
        &self,
        request: Request<DeleteAgentRequest>,
    ) -> Result<Response<()>, Status> {
        let id = self.agent_id("id", request.into_inner().id.as_ref())?;
        self.ctx
            .server
            .nodes
            .command(NodeCommand::Evict(id))
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn ban_agent(&self, request: Request<BanAgentRequest>) -> Result<Response<()>, Status> {
        let id = self.agent_id("id", request.into_inner().id.as_ref())?;
        match self.ctx.server.nodes.command(NodeCommand::Ban(id)).await {
            // Banning a banned agent changes nothing: success, as in SPIRE.
            Ok(()) | Err(CommandError::Rejected(NodeError::Banned(_))) => Ok(Response::new(())),
            Err(e) => Err(status(e)),
        }
    }

    async fn create_join_token(
        &self,
        request: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<types::JoinToken>, Status> {
        let req = request.into_inner();
        let ttl_secs = match req.ttl {
            0 => {
                u32::try_from(self.ctx.limits.default_join_token_ttl.as_secs()).unwrap_or(u32::MAX)
            }
            t => u32::try_from(t).map_err(|_| {
                status(ConvertError::OutOfRange {
                    field: "ttl",
                    value: i64::from(t),
                    rule: "seconds, at least 1 (0 for the server's default)",
                })
            })?,
        };
        let alias = match &req.agent_id {
            None => None,
            Some(id) => {
                let id = convert::spiffe_id("agent_id", Some(id)).map_err(status)?;
                let td = &self.ctx.server.settings.trust_domain;
                if !id.is_member_of(td)
                    || id.is_trust_domain_id()
                    || id.segments().next() == RESERVED_PATH.strip_prefix('/')
                {
                    return Err(status(ConvertError::Invalid {
                        field: "agent_id",
                        value: id.to_string(),
                        rule: format!("must be in the server's trust domain \"{td}\", have a path, and not be under \"/spire\""),
                    }));
                }
                Some(id)
            }
        };
        let token = if req.token.is_empty() {
            generate_token().map_err(status)?
        } else {
            check_token(&req.token).map_err(status)?;
            req.token
        };
        let reply = self
            .ctx
            .server
            .tokens
            .command(TokenCommand::Create {
                token_hash: hash_token(&token),
                ttl_secs,
                alias,
            })
            .await
            .map_err(status)?;
        match reply {
            TokenReply::Created { expires_at } => Ok(Response::new(types::JoinToken {
                value: token,
                expires_at,
            })),
            other => Err(Status::internal(format!(
                "tokens answered with the wrong reply kind: {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_fresh_uuids() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(check_token(&a).is_ok());
    }

    #[test]
    fn chosen_tokens_must_be_path_safe() {
        assert!(check_token("abc-123-def-456-gh").is_ok());
        for bad in [
            "",
            "a/b",
            "..",
            "a b",
            "abc-123",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
    }
}
