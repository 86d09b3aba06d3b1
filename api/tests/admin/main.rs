//! The admin API in process: the real services on a temp Unix socket over an in-memory log,
//! driven with the generated clients. Behaviour that crosses a process (the CLI, restarts,
//! crashes) is in `cli.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "../shared/jwt.rs"]
mod jwt;
mod support;

mod agents;
mod checkpoint;
mod entries;
mod eventlog;
mod federated_bundles;
mod federation;
mod localauthority;
mod plumbing;
mod socket;
mod svids;
