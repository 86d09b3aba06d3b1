//! The whole server state as one fold of the log: what start-up replays (once, for every
//! aggregate) and what snapshots store.

use serde::{Deserialize, Serialize};

use crate::server::aggregate::Aggregate;
use crate::server::authority::Authority;
use crate::server::events::ServerEvent;
use crate::server::nodes::Nodes;
use crate::server::registry::Registry;
use crate::server::tokens::Tokens;

/// Every aggregate's state after some seq.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerState {
    /// Registration entries.
    pub registry: Registry,
    /// Attested agents.
    pub nodes: Nodes,
    /// Join tokens.
    pub tokens: Tokens,
    /// X.509 CAs and JWT keys.
    pub authority: Authority,
}

impl ServerState {
    /// Folds one committed event into every aggregate.
    pub fn apply(&mut self, event: &ServerEvent) {
        self.registry.apply(event);
        self.nodes.apply(event);
        self.tokens.apply(event);
        self.authority.apply(event);
    }
}
