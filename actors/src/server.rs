//! The server side: events, aggregates and actors.

pub mod agent_ops;
pub mod aggregate;
pub mod aggregate_actor;
pub mod authority;
pub mod checkpoint;
pub mod events;
pub mod federation;
pub mod follow;
pub mod journal;
/// Key management moved to the crate root (the agent uses it too); the old path stays.
pub use crate::keys;
pub mod nodes;
pub mod registry;
pub mod state;
pub mod supervisor;
pub mod sync;
pub mod sync_hub;
pub mod sync_lag;
pub mod tokens;
