//! The whole server state as one fold of the log: what start-up replays (once, for every
//! aggregate) and what snapshots store.

use serde::{Deserialize, Serialize};

use crate::server::aggregate::Aggregate;
use crate::server::authority::Authority;
use crate::server::events::ServerEvent;
use crate::server::federation::Federation;
use crate::server::nodes::Nodes;
use crate::server::registry::{IndexLevel, Registry};
use crate::server::tokens::Tokens;

/// Every aggregate's state after some seq. The registry here keeps no indexes
/// ([`IndexLevel::Table`]): this fold only feeds snapshots and seeds the actors, which index
/// their own copies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerState {
    /// Registration entries.
    pub registry: Registry,
    /// Attested agents.
    pub nodes: Nodes,
    /// Join tokens.
    pub tokens: Tokens,
    /// X.509 CAs and JWT keys.
    pub authority: Authority,
    /// Federation relationships and federated bundles.
    pub federation: Federation,
}

impl Default for ServerState {
    fn default() -> Self {
        Self {
            registry: Registry::with_level(IndexLevel::Table),
            nodes: Nodes::default(),
            tokens: Tokens::default(),
            authority: Authority::default(),
            federation: Federation::default(),
        }
    }
}

impl ServerState {
    /// Folds one committed event, taken by value so that an entry moves into the registry
    /// rather than being copied (replay folds a million of them).
    pub fn apply_owned(&mut self, event: ServerEvent) {
        match event {
            // Only the registry folds entry events.
            ServerEvent::EntryCreated(e) | ServerEvent::EntryUpdated(e) => {
                self.registry.insert_entry(e);
            }
            other => self.apply(&other),
        }
    }

    /// Folds one committed event into every aggregate.
    pub fn apply(&mut self, event: &ServerEvent) {
        self.registry.apply(event);
        self.nodes.apply(event);
        self.tokens.apply(event);
        self.authority.apply(event);
        self.federation.apply(event);
    }
}
