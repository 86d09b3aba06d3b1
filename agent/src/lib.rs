//! Tessera's agent process: it attests its node to the server, keeps a cache of the
//! identities the server grants it (streamed, not polled), keeps every SVID fresh, and serves
//! workloads over the SPIFFE Workload API on a Unix socket.
//!
//! **Owns:** the Workload API server ([`workload_api`]) and Envoy SDS on its socket
//! ([`sds`]), workload attestors ([`attestor`]:
//! `unix`), the agent's configuration ([`config`], documented key by key in
//! `conf/agent.toml`), its command line ([`cli`]: `run`, `healthcheck`, `api ...`), and the
//! node side (`node`: attestation to the server, the sync stream client, cache, rotation),
//! which produces the [`WorkloadSource`](tessera_actors::agent::view::WorkloadSource) the
//! Workload API serves from.
//!
//! **Must not:** hold or use a trust domain's signing keys, or depend on the server crate
//! (`tessera-server`): a node never holds CA material; the agent talks to the server only
//! over the wire (`tessera_proto`). Domain logic that needs no socket (cache folding,
//! rotation schedules) belongs in `tessera_actors::agent`.

pub mod attestor;
pub mod cli;
pub mod config;
pub mod health;
pub mod node;
pub mod run;
pub mod sds;
pub use tessera_edge::shutdown;
pub mod workload_api;
