//! Checks the compiled schema itself (the reflection descriptor set) against the standards:
//! service names, gRPC paths, streaming shapes and field numbers. A renumbered field or a
//! stray `package` line in `workload.proto` breaks every SPIFFE client, so each is pinned here.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

mod spire;
mod support;
mod tessera;
mod workload;
