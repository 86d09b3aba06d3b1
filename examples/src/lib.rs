//! The shared part of the example programs (`inside-service`, `caller`, `sds-caller`): what a
//! Tessera *user* writes around the Workload API to talk mTLS with SPIFFE IDs.
//!
//! - [`material`]: the workload's current certificate, key and trust bundles, kept up to date
//!   from the Workload API (an `X509Source` of the crates.io `spiffe` crate);
//! - [`verify`]: rustls verifiers that check a peer's X.509-SVID against the bundle of its
//!   trust domain and read its SPIFFE ID (never a DNS name), and certificate resolvers that
//!   present the current SVID on every handshake, so rotation needs no restart;
//! - [`wire`]: the one-line request/response protocol the examples speak (`ping` → `pong`);
//! - [`caller`]: the client loop both callers run (hold a connection, ping, watch rotations);
//! - [`sds`]: an Envoy SDS v3 client that fills [`material::Material`] from the agent, as an
//!   Envoy sidecar would get its secrets.
//!
//! Must not depend on Tessera's own crates: everything here is public API of `spiffe`,
//! `rustls` and `rustls-webpki`, as in any program that uses a SPIFFE implementation.

pub mod caller;
pub mod material;
pub mod sds;
pub mod verify;
pub mod wire;

/// The rustls crypto provider of every example (ring: no C toolchain needed).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Seconds since the Unix epoch, as rustls sees the time.
pub fn now_unix() -> i64 {
    i64::try_from(rustls::pki_types::UnixTime::now().as_secs()).unwrap_or(i64::MAX)
}
