//! Tessera's wire: generated protobuf messages and tonic clients/servers.
//!
//! Owns the `.proto` files under `proto/proto/` and the code generated from them (see
//! `build.rs`; no system `protoc` is needed). Three APIs live here:
//!
//! - [`workload`]: the SPIFFE Workload API, byte-compatible with the standard
//!   `workload.proto`. It has no proto package, so its gRPC paths are
//!   `/SpiffeWorkloadAPI/FetchX509SVID` and so on, as every SPIFFE client expects.
//! - [`spire`]: the server admin API, shaped message for message after SPIRE's server API
//!   (same packages, names and field numbers as `spiffe/spire-api-sdk`) so SPIRE tooling can
//!   be pointed at Tessera. Server traits here have default methods answering
//!   `Unimplemented`: the server overrides what Tessera supports.
//! - [`tessera`]: Tessera's own services: the agent<->server API
//!   ([`tessera::agent::v1`]) and the event log audit API ([`tessera::eventlog::v1`]).
//!   Every method must be implemented.
//!
//! [`FILE_DESCRIPTOR_SET`] holds every file (and its well-known imports) for gRPC reflection.
//!
//! Rust type names follow prost's casing of the proto names: `X509SVIDResponse` is
//! `X509svidResponse`, `JWTSVID` is `Jwtsvid`, `SPIFFEID` is `Spiffeid`; field numbers and
//! proto names on the wire are unchanged.
//!
//! Module paths follow proto packages exactly (`spire.api.server.entry.v1` is
//! [`spire::api::server::entry::v1`]), because generated code refers across packages with
//! relative `super::` paths.
//!
//! Must not: contain logic beyond the generated code and constants (conversions to domain
//! types belong to `api/` and `agent/`), or depend on any other Tessera crate.

/// Encoded `google.protobuf.FileDescriptorSet` of every Tessera `.proto` file and its imports,
/// with source info (comments), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tessera_descriptor_set.bin"));

/// The SPIFFE Workload API (no proto package; service `SpiffeWorkloadAPI`).
///
/// Client: `workload::spiffe_workload_api_client::SpiffeWorkloadApiClient`; server trait:
/// `workload::spiffe_workload_api_server::SpiffeWorkloadApi`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations,
    rust_2018_idioms
)]
pub mod workload {
    // prost names the output of a package-less file `_.rs`.
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// SPIRE's server API packages (`spire.api.*`).
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations,
    rust_2018_idioms
)]
pub mod spire {
    /// `spire.api`.
    pub mod api {
        /// `spire.api.types`: entries, agents, bundles, SVIDs, masks, statuses.
        pub mod types {
            tonic::include_proto!("spire.api.types");
        }

        /// `spire.api.server.*`: the admin services.
        pub mod server {
            /// `spire.api.server.entry`.
            pub mod entry {
                /// `spire.api.server.entry.v1`: service `Entry`.
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.entry.v1");
                }
            }

            /// `spire.api.server.agent`.
            pub mod agent {
                /// `spire.api.server.agent.v1`: service `Agent`.
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.agent.v1");
                }
            }

            /// `spire.api.server.bundle`.
            pub mod bundle {
                /// `spire.api.server.bundle.v1`: service `Bundle`.
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.bundle.v1");
                }
            }

            /// `spire.api.server.localauthority`.
            pub mod localauthority {
                /// `spire.api.server.localauthority.v1`: service `LocalAuthority`.
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.localauthority.v1");
                }
            }

            /// `spire.api.server.svid`.
            pub mod svid {
                /// `spire.api.server.svid.v1`: service `SVID`.
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.svid.v1");
                }
            }

            /// `spire.api.server.trustdomain`.
            pub mod trustdomain {
                /// `spire.api.server.trustdomain.v1`: service `TrustDomain`.
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.trustdomain.v1");
                }
            }
        }
    }
}

/// Tessera's own packages (`tessera.*`).
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations,
    rust_2018_idioms
)]
pub mod tessera {
    /// `tessera.agent`.
    pub mod agent {
        /// `tessera.agent.v1`: service `AgentServer`, which agents call over mTLS (attest,
        /// renew, sync, sign).
        pub mod v1 {
            tonic::include_proto!("tessera.agent.v1");

            /// Response metadata key on a status that refuses an agent: value
            /// [`AGENT_BANNED`] when the agent is banned (it may not attest again until an
            /// admin deletes its record). Agents act on this mark, not on the message.
            pub const AGENT_REFUSAL_KEY: &str = "tessera-agent-refusal";
            /// The [`AGENT_REFUSAL_KEY`] value of a ban.
            pub const AGENT_BANNED: &str = "banned";
        }
    }

    /// `tessera.eventlog`.
    pub mod eventlog {
        /// `tessera.eventlog.v1`: service `EventLog`, the read-only audit API over the log.
        pub mod v1 {
            tonic::include_proto!("tessera.eventlog.v1");
        }
    }
}
