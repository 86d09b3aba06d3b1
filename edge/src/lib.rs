//! Process plumbing that `tessera-server` and `tessera-agent` share, written once: binding a
//! Unix socket safely (directory ownership and modes, socket mode, stale and live sockets),
//! checking and bounding the local peers that connect to it, the fix that lets grpc-go clients
//! (grpcurl `-unix`) talk to a tonic server over a Unix socket, Go-style duration parsing,
//! shutdown signals, the health endpoint, the CLI runner and OpenTelemetry traces (OTLP
//! export and `traceparent` propagation).
//!
//! The crate depends on no other Tessera crate but `tessera-identity`'s value types where it
//! needs them; the binaries depend on it (DESIGN.md §2).

pub mod authority;
pub mod cli;
pub mod duration;
pub mod health;
pub mod limits;
pub mod peer;
pub mod shutdown;
pub mod socket;
pub mod telemetry;
pub mod tls;
