//! Tessera's domain logic: commands, events, pure aggregates (`decide`/`apply`) and the ractor
//! actors that persist and serve them.
//!
//! Layout: `server` (events, aggregates, actors, the CA) and `agent` (cache, rotation, view)
//! share only `keys`, `clock`, `random` and `attestation`; `agent` never imports `server`
//! (tested in `tests/layering.rs`), so agent code cannot reach CA code. The in-process
//! client that joins the two without sockets lives in `tessera-sim` (`simulations/`).
//!
//! Owns: the server's events ([`server::events`]), its aggregates (registry, nodes, tokens,
//! authority) and actors, and later the agent's cache and rotator.
//!
//! Must not: see a socket or a protobuf type (that is `api/` and `agent/`), open a database
//! (it persists through `tessera_eventlog::EventLog`), or read the clock or randomness other
//! than through the injected `Clock` and random source.

pub mod agent;
pub mod attestation;
pub mod clock;
pub mod keys;
pub mod random;
pub mod server;
