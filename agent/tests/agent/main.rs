//! Black-box tests of the agent: the real Workload API server on a temp Unix socket, with the
//! real `unix` attestor, serving a test identity source fed with real certificates; checked
//! with the generated client, the crates.io `spiffe` client and the `tessera-agent` binary.
//! Every wait is bounded ([`support::WAIT`]).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

mod attestor;
mod cli;
mod cli_extra;
mod health;
mod interop;
mod jwt;
mod socket;
mod streams;
mod x509;
