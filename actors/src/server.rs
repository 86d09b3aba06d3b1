//! The server side: events, aggregates and actors.

pub mod aggregate;
pub mod aggregate_actor;
pub mod authority;
pub mod events;
pub mod keys;
pub mod journal;
pub mod nodes;
pub mod registry;
pub mod state;
pub mod sync;
pub mod supervisor;
pub mod sync_hub;
pub mod tokens;
