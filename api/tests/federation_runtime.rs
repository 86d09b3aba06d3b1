//! Federation at the process edge (issue 13): the bundle endpoint serves this trust domain's
//! bundle over both profiles, the fetcher authenticates endpoints and refuses bad documents
//! with typed errors, and the refresher carries a foreign bundle (and its rotations) from one
//! in-process Tessera server's endpoint into another's federation aggregate, keeping the last
//! good bundle through failures. Loopback only; one shared manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "federation_runtime/daemon.rs"]
mod daemon;
#[path = "federation_runtime/endpoint.rs"]
mod endpoint;
#[path = "federation_runtime/fetch_errors.rs"]
mod fetch_errors;
#[path = "federation_runtime/fetch_messages.rs"]
mod fetch_messages;
#[path = "federation_runtime/refresh.rs"]
mod refresh;
#[path = "federation_runtime/refresh_races.rs"]
mod refresh_races;
#[path = "federation_runtime/startup.rs"]
mod startup;
#[path = "federation_runtime/support.rs"]
mod support;
