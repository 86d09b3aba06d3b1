//! The Tokens aggregate: join tokens, single use, with a TTL. Only hashes are kept; the token
//! itself exists in the admin's hands and the agent's request, never in the log.
//!
//! A token is spent in the same append that records the agent it attested
//! (`JoinTokenConsumed` then `AgentAttested`, decided by the nodes aggregate), so a refused
//! CSR or a full signing queue in between leaves it unspent. Here, `Consume` only checks that
//! it can be spent. Expired tokens are pruned on the actor's housekeeping schedule, at most
//! [`PRUNE_BATCH`] per append, so that unused tokens never fill the pending limit for good.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_identity::SpiffeId;

use crate::server::aggregate::{Aggregate, Context, Decision};
use crate::server::events::{ServerEvent, TokenHash};

/// Hashes a join token for storage and lookup.
pub fn hash_token(token: &str) -> TokenHash {
    TokenHash(hex::encode(Sha256::digest(token.as_bytes())))
}

/// A join token waiting to be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingToken {
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Node alias to register for the agent that uses it.
    pub alias: Option<SpiffeId>,
}

/// Commands of the token aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCommand {
    /// Register a new token (by hash) valid for `ttl_secs`.
    Create {
        /// Hash of the token.
        token_hash: TokenHash,
        /// Lifetime in seconds.
        ttl_secs: u32,
        /// `token generate --spiffeID`.
        alias: Option<SpiffeId>,
    },
    /// Check that a token can be spent by `agent_id` (it is pending and unexpired) and get
    /// its alias. Nothing is recorded: the token is spent with the attestation
    /// ([`crate::server::nodes::NodeCommand::Attested`]), once the agent's SVID is signed.
    Consume {
        /// Hash of the presented token.
        token_hash: TokenHash,
        /// The agent using it.
        agent_id: SpiffeId,
    },
    /// Drop tokens expired at the context's time, at most [`PRUNE_BATCH`].
    Prune,
}

/// Successful outcomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenReply {
    /// Created; expires then (Unix seconds).
    Created {
        /// Expiry.
        expires_at: i64,
    },
    /// Can be spent; the alias to register, if any.
    Consumed {
        /// Node alias from `token generate --spiffeID`.
        alias: Option<SpiffeId>,
    },
    /// Expired tokens dropped.
    Pruned(usize),
}

/// Why a token command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Unknown or already used (indistinguishable on purpose: both mean "get a new token").
    #[error("join token is unknown or already used; generate a new one with `tessera-server token generate`")]
    Unknown,
    /// The token's TTL passed.
    #[error("join token expired at {expires_at} (Unix seconds); generate a new one with `tessera-server token generate`")]
    Expired {
        /// When it expired.
        expires_at: i64,
    },
    /// A token with this hash exists (a random collision: retry).
    #[error("a join token with this hash already exists")]
    Duplicate,
    /// TTL out of bounds.
    #[error("join token TTL {ttl_secs}s is outside 1..={max}s (--ttl)")]
    Ttl {
        /// The TTL asked for.
        ttl_secs: u32,
        /// The limit.
        max: u32,
    },
    /// Too many tokens pending.
    #[error("{limit} join tokens are pending (the server's limit); use or let some expire first (expired ones are pruned every few minutes)")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// A caller-chosen token is too short to be a secret.
    #[error("a chosen join token must be at least {min} characters (it is {len}); omit it to have one generated")]
    TooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
}

/// Shortest caller-chosen join token: a token is a bearer secret, and a short one can be
/// guessed. Generated tokens (36-character UUIDs) are well over it.
pub const MIN_CHOSEN_TOKEN_LEN: usize = 16;

/// Checks the length of a caller-chosen token (`token generate` with a token of one's own).
///
/// # Errors
/// [`TokenError::TooShort`] naming the minimum.
pub fn check_chosen_token(token: &str) -> Result<(), TokenError> {
    if token.len() < MIN_CHOSEN_TOKEN_LEN {
        return Err(TokenError::TooShort {
            len: token.len(),
            min: MIN_CHOSEN_TOKEN_LEN,
        });
    }
    Ok(())
}

/// Most tokens one prune drops (one append stays under the log's batch limit).
pub const PRUNE_BATCH: usize = 1_000;

/// Longest join-token TTL accepted: 30 days.
pub const MAX_TOKEN_TTL_SECS: u32 = 30 * 24 * 3600;
/// Most pending tokens.
pub const MAX_PENDING_TOKENS: usize = 100_000;

/// Pending join tokens by hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pending: BTreeMap<TokenHash, PendingToken>,
}

impl Tokens {
    /// Pending tokens.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending token with this hash if it can be spent at `now`.
    ///
    /// # Errors
    /// [`TokenError::Unknown`] (never issued, or spent) or [`TokenError::Expired`].
    pub fn spendable(&self, token_hash: &TokenHash, now: i64) -> Result<&PendingToken, TokenError> {
        let pending = self.pending.get(token_hash).ok_or(TokenError::Unknown)?;
        if pending.expires_at <= now {
            return Err(TokenError::Expired {
                expires_at: pending.expires_at,
            });
        }
        Ok(pending)
    }

    /// Whether any pending token has expired at `now`.
    pub fn any_expired(&self, now: i64) -> bool {
        self.pending.values().any(|t| t.expires_at <= now)
    }
}

impl Aggregate for Tokens {
    type Command = TokenCommand;
    type Reply = TokenReply;
    type Error = TokenError;
    const NAME: &'static str = "tokens";

    fn decide(
        &self,
        command: TokenCommand,
        ctx: &Context,
    ) -> Result<Decision<TokenReply>, TokenError> {
        match command {
            TokenCommand::Create {
                token_hash,
                ttl_secs,
                alias,
            } => {
                if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
                    return Err(TokenError::Ttl {
                        ttl_secs,
                        max: MAX_TOKEN_TTL_SECS,
                    });
                }
                if self.pending.contains_key(&token_hash) {
                    return Err(TokenError::Duplicate);
                }
                if self.pending.len() >= MAX_PENDING_TOKENS {
                    return Err(TokenError::TooMany {
                        limit: MAX_PENDING_TOKENS,
                    });
                }
                let expires_at = ctx.now + i64::from(ttl_secs);
                Ok(Decision {
                    events: vec![ServerEvent::JoinTokenCreated {
                        token_hash,
                        expires_at,
                        alias,
                    }],
                    reply: TokenReply::Created { expires_at },
                })
            }
            TokenCommand::Consume {
                token_hash,
                agent_id,
            } => {
                let _ = agent_id;
                let pending = self.spendable(&token_hash, ctx.now)?;
                Ok(Decision::no_change(TokenReply::Consumed {
                    alias: pending.alias.clone(),
                }))
            }
            TokenCommand::Prune => {
                let events: Vec<_> = self
                    .pending
                    .iter()
                    .filter(|(_, t)| t.expires_at <= ctx.now)
                    .take(PRUNE_BATCH)
                    .map(|(h, _)| ServerEvent::JoinTokenExpired {
                        token_hash: h.clone(),
                    })
                    .collect();
                let n = events.len();
                Ok(Decision {
                    events,
                    reply: TokenReply::Pruned(n),
                })
            }
        }
    }

    fn apply(&mut self, event: &ServerEvent) {
        match event {
            ServerEvent::JoinTokenCreated {
                token_hash,
                expires_at,
                alias,
            } => {
                self.pending.insert(
                    token_hash.clone(),
                    PendingToken {
                        expires_at: *expires_at,
                        alias: alias.clone(),
                    },
                );
            }
            ServerEvent::JoinTokenConsumed { token_hash, .. }
            | ServerEvent::JoinTokenExpired { token_hash } => {
                self.pending.remove(token_hash);
            }
            _ => {}
        }
    }

    fn housekeeping(&self, now: i64) -> Option<TokenCommand> {
        self.any_expired(now).then_some(TokenCommand::Prune)
    }
}
