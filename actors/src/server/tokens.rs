//! The Tokens aggregate: join tokens, single use, with a TTL. Only hashes are kept; the token
//! itself exists in the admin's hands and the agent's request, never in the log.

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
    /// Spend a token for `agent_id`.
    Consume {
        /// Hash of the presented token.
        token_hash: TokenHash,
        /// The agent using it.
        agent_id: SpiffeId,
    },
    /// Drop every token expired at the context's time.
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
    /// Spent; the alias to register, if any.
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
    #[error("{limit} join tokens are pending (the server's limit); use or let some expire first")]
    TooMany {
        /// The limit.
        limit: usize,
    },
}

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
                let pending = self.pending.get(&token_hash).ok_or(TokenError::Unknown)?;
                if pending.expires_at <= ctx.now {
                    return Err(TokenError::Expired {
                        expires_at: pending.expires_at,
                    });
                }
                Ok(Decision {
                    events: vec![ServerEvent::JoinTokenConsumed {
                        token_hash,
                        agent_id,
                    }],
                    reply: TokenReply::Consumed {
                        alias: pending.alias.clone(),
                    },
                })
            }
            TokenCommand::Prune => {
                let events: Vec<_> = self
                    .pending
                    .iter()
                    .filter(|(_, t)| t.expires_at <= ctx.now)
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
}
