//! Node attestation evidence: what agents present and how the server checks it.
//!
//! Shared by both sides (the agent builds the payloads and answers challenges; the server
//! verifies), and pure: no sockets, no clock reads (`now` is passed in).

pub mod join_token;
pub mod x509pop;

use tessera_identity::{SelectorSet, SpiffeId};

/// What a successful attestation establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedNode {
    /// The agent's SPIFFE ID.
    pub agent_id: SpiffeId,
    /// Selectors describing the node.
    pub selectors: SelectorSet,
    /// Whether the same evidence may attest again (after eviction or SVID expiry).
    pub can_reattest: bool,
}

/// Why evidence was refused. Messages are safe to return to the agent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The payload does not parse.
    #[error("{attestor}: malformed attestation payload: {reason}")]
    Malformed {
        /// The attestor.
        attestor: &'static str,
        /// Why.
        reason: String,
    },
    /// The evidence does not prove what it claims.
    #[error("{attestor}: attestation refused: {reason}")]
    Refused {
        /// The attestor.
        attestor: &'static str,
        /// Why.
        reason: String,
    },
    /// The attestor is not enabled on this server.
    #[error("node attestor {0:?} is not enabled on this server (enable it in the server config)")]
    NotEnabled(String),
}
