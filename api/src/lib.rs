//! Tessera's server process (`tessera-server`).
//!
//! Owns: the process edges of the server: configuration ([`config`]), the admin gRPC API on a
//! Unix socket ([`admin`]), the agent API on TCP (`agent_api`, plugged in by [`daemon`]),
//! conversions between the wire and the domain ([`convert`]), the one error→`Status` mapping
//! ([`status`]), the HTTP health and metrics endpoint ([`metrics`]), start-up and shutdown
//! ([`daemon`]), and the CLI ([`cli`]).
//!
//! Must not: hold domain rules (they live in `tessera-actors`: this crate translates RPCs into
//! actor messages and back), write to the event log other than through the actors, or be
//! depended on by any other Tessera crate but the simulator.

pub mod admin;
pub mod agent_api;
pub mod cli;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod federation;
pub mod metrics;
pub mod status;
pub mod timefmt;
pub mod uds;
