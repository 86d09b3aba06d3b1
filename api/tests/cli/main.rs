//! The `tessera-server` binary as operators use it: `run` in its own process, and every CLI
//! verb as a separate process talking to it over the admin socket. Restarts, SIGKILL and the
//! SVIDs' independent verification (identity validator, `openssl verify`, JWKS + ring) cross
//! process boundaries, so they are tested here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "../shared/jwt.rs"]
mod jwt;
mod support;

mod agents;
mod audit;
mod checkpoint;
mod durability;
mod entries;
mod ergonomics;
mod events;
mod federation;
mod localauthority;
mod startup;
mod svids;
