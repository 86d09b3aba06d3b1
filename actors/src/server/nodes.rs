//! The Nodes aggregate: attested agents, their node selectors and SVID serials, evictions and
//! bans. SPIRE's semantics: evict (`agent evict`) deletes the record so the agent must attest
//! again; ban (`agent ban`) keeps the record marked so it can neither renew nor attest until
//! the record is deleted by an evict.
//!
//! A join-token agent (`spiffe://<td>/spire/agent/join_token/<token>`) is recorded together
//! with the spending of its token: `JoinTokenConsumed` and `AgentAttested` in one append,
//! decided here on this aggregate's own fold of the pending tokens. Until then (CSR checked,
//! SVID signed) the token stays unspent, and of two attestations racing with one token only
//! the first is recorded.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_identity::{SelectorSet, SpiffeId};

use crate::server::aggregate::{Aggregate, Context, Decision};
use crate::server::events::{AttestedAgent, ServerEvent};
use crate::server::tokens::{hash_token, TokenError, Tokens};

/// Path prefix of the agent IDs the join-token attestor gives; the token follows it.
const JOIN_TOKEN_PREFIX: &str = "/spire/agent/join_token/";

/// An agent as the server knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The record from its latest attestation, with renewals applied.
    pub agent: AttestedAgent,
    /// Whether it is banned.
    pub banned: bool,
}

/// Commands of the nodes aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeCommand {
    /// Record a successful attestation (the attestor has already checked the evidence). For
    /// a join-token agent this also spends its token, which must still be pending.
    Attested(AttestedAgent),
    /// Record an agent SVID renewal; `presented_serial` is the serial of the SVID the agent
    /// authenticated with, which must be its current one.
    Renewed {
        /// The agent.
        agent_id: SpiffeId,
        /// Serial of the client certificate it presented.
        presented_serial: String,
        /// New SVID serial.
        svid_serial: String,
        /// New SVID expiry.
        svid_expires_at: i64,
    },
    /// Delete the agent's record (SPIRE's evict / DeleteAgent).
    Evict(SpiffeId),
    /// Ban the agent.
    Ban(SpiffeId),
}

/// Why a node command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No record for this agent (never attested, or evicted).
    #[error("agent {0} is not attested (evicted, or never attested); it must attest again")]
    NotAttested(SpiffeId),
    /// The agent is banned.
    #[error("agent {0} is banned; delete its record with `tessera-server agent evict --spiffeID {0}` to let it attest again")]
    Banned(SpiffeId),
    /// The attestor does not allow attesting twice with the same identity (join token).
    #[error("agent {0} is already attested and its attestor does not allow attesting again")]
    AlreadyAttested(SpiffeId),
    /// A join-token agent's token cannot be spent (unknown, already used, or expired).
    #[error("agent {agent}: {reason}")]
    JoinToken {
        /// The agent.
        agent: SpiffeId,
        /// Why the token cannot be spent.
        reason: TokenError,
    },
    /// The presented SVID is not the agent's current one.
    #[error("agent {agent_id} presented SVID serial {presented}, its current SVID is {current}; an old or copied SVID cannot renew")]
    StaleSvid {
        /// The agent.
        agent_id: SpiffeId,
        /// What it presented.
        presented: String,
        /// What it has.
        current: String,
    },
}

/// Attested agents by SPIFFE ID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodes {
    agents: BTreeMap<SpiffeId, AgentState>,
    /// Pending join tokens, folded here too so that spending one and recording its agent are
    /// one decision. Not in snapshots (the tokens aggregate stores them): seeded from it when
    /// a snapshot is loaded ([`Nodes::seed_tokens`]).
    #[serde(skip)]
    tokens: Tokens,
}

impl Nodes {
    /// The agent with this ID.
    pub fn get(&self, id: &SpiffeId) -> Option<&AgentState> {
        self.agents.get(id)
    }

    /// Every agent, in ID order.
    pub fn iter(&self) -> impl Iterator<Item = &AgentState> {
        self.agents.values()
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Node selectors of an agent in good standing (not banned).
    pub fn selectors_of(&self, id: &SpiffeId) -> Option<&SelectorSet> {
        self.agents
            .get(id)
            .filter(|a| !a.banned)
            .map(|a| &a.agent.selectors)
    }

    /// Gives a state loaded from a snapshot the pending tokens of the same snapshot.
    pub fn seed_tokens(&mut self, tokens: Tokens) {
        self.tokens = tokens;
    }

    fn live(&self, id: &SpiffeId) -> Result<&AgentState, NodeError> {
        let a = self
            .agents
            .get(id)
            .ok_or_else(|| NodeError::NotAttested(id.clone()))?;
        if a.banned {
            return Err(NodeError::Banned(id.clone()));
        }
        Ok(a)
    }
}

impl Aggregate for Nodes {
    type Command = NodeCommand;
    type Reply = ();
    type Error = NodeError;
    const NAME: &'static str = "nodes";

    fn decide(&self, command: NodeCommand, ctx: &Context) -> Result<Decision<()>, NodeError> {
        let event = match command {
            NodeCommand::Attested(agent) => {
                if let Some(existing) = self.agents.get(&agent.id) {
                    if existing.banned {
                        return Err(NodeError::Banned(agent.id));
                    }
                    if !existing.agent.can_reattest {
                        return Err(NodeError::AlreadyAttested(agent.id));
                    }
                }
                if let Some(token) = agent.id.path().strip_prefix(JOIN_TOKEN_PREFIX) {
                    let token_hash = hash_token(token);
                    if let Err(reason) = self.tokens.spendable(&token_hash, ctx.now) {
                        return Err(NodeError::JoinToken {
                            agent: agent.id,
                            reason,
                        });
                    }
                    return Ok(Decision {
                        events: vec![
                            ServerEvent::JoinTokenConsumed {
                                token_hash,
                                agent_id: agent.id.clone(),
                            },
                            ServerEvent::AgentAttested(agent),
                        ],
                        reply: (),
                    });
                }
                ServerEvent::AgentAttested(agent)
            }
            NodeCommand::Renewed {
                agent_id,
                presented_serial,
                svid_serial,
                svid_expires_at,
            } => {
                let current = self.live(&agent_id)?;
                if current.agent.svid_serial != presented_serial {
                    return Err(NodeError::StaleSvid {
                        current: current.agent.svid_serial.clone(),
                        agent_id,
                        presented: presented_serial,
                    });
                }
                ServerEvent::AgentSvidRenewed {
                    agent_id,
                    svid_serial,
                    svid_expires_at,
                }
            }
            NodeCommand::Evict(agent_id) => {
                if !self.agents.contains_key(&agent_id) {
                    return Err(NodeError::NotAttested(agent_id));
                }
                ServerEvent::AgentEvicted { agent_id }
            }
            NodeCommand::Ban(agent_id) => {
                self.live(&agent_id)?;
                ServerEvent::AgentBanned { agent_id }
            }
        };
        Ok(Decision {
            events: vec![event],
            reply: (),
        })
    }

    fn apply(&mut self, event: &ServerEvent) {
        self.tokens.apply(event);
        match event {
            ServerEvent::AgentAttested(agent) => {
                self.agents.insert(
                    agent.id.clone(),
                    AgentState {
                        agent: agent.clone(),
                        banned: false,
                    },
                );
            }
            ServerEvent::AgentSvidRenewed {
                agent_id,
                svid_serial,
                svid_expires_at,
            } => {
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.agent.svid_serial = svid_serial.clone();
                    a.agent.svid_expires_at = *svid_expires_at;
                }
            }
            ServerEvent::AgentEvicted { agent_id } => {
                self.agents.remove(agent_id);
            }
            ServerEvent::AgentBanned { agent_id } => {
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.banned = true;
                }
            }
            _ => {}
        }
    }
}
