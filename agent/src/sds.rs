//! Envoy's Secret Discovery Service (`envoy.service.secret.v3.SecretDiscoveryService`, SDS v3)
//! on the Workload API socket, as SPIRE's agent serves it (`pkg/agent/endpoints/sdsv3`), with
//! Envoy's own published definitions (crates.io `envoy-types`).
//!
//! A caller is attested exactly as for the Workload API (peer credentials of the connection,
//! the same attestors), but no `workload.spiffe.io` header is asked for: Envoy sends none. A
//! caller with no identity gets `PermissionDenied`. Resource names, per SPIRE:
//!
//! - a SPIFFE ID of one of the caller's SVIDs: a `tls_certificate` (PEM chain, PEM PKCS#8 key);
//! - `sds.default_svid_name` ("default"): the caller's first SVID, under that name;
//! - a trust domain ID (`spiffe://td`): that trust domain's bundle (the agent's own, or a
//!   federated one the caller's entries federate with) as a validation context;
//! - `sds.default_bundle_name` ("ROOTCA"): the agent's own trust domain's bundle;
//! - `sds.default_all_bundles_name` ("ALL"): every bundle the caller may trust, in one
//!   `envoy.tls.cert_validator.spiffe` validator config;
//! - none at all: every TLS certificate of the caller and every bundle it trusts (by ID).
//!
//! Validation contexts carry Envoy's SPIFFE certificate validator unless SPIFFE validation is
//! off (`sds.disable_spiffe_cert_validation`, or the caller's node metadata key of the same
//! name, or an Envoy older than 1.18), in which case they carry `trusted_ca`. A name the
//! caller is not entitled to fails the request (`InvalidArgument`), as in SPIRE. Streams follow
//! the xDS rules ([`stream`]): ACK/NACK by nonce, stale nonces ignored, a push on every change.
//! `DeltaSecrets` answers `Unimplemented`.
//!
//! **Must not:** mint or sign anything (it serves what the identity source holds), or map
//! errors to gRPC codes anywhere but [`error`].

pub mod error;
pub mod limits;
pub mod metrics;
mod render;
mod service;
mod stream;

use std::sync::Arc;

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use tessera_actors::agent::view::WorkloadSource;
use tonic::server::NamedService;

pub use self::error::SdsError;
pub use self::limits::{SdsLimitError, SdsLimits};
use self::metrics::SdsMetrics;
pub use self::service::SdsService;
use crate::attestor::Attestors;
use crate::shutdown::Shutdown;
use crate::workload_api::{MetricsError, Settings};

/// The type URL of the resources SDS serves.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The name of Envoy's SPIFFE certificate validator extension.
pub const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";

/// The Envoy node metadata key that turns SPIFFE validation on or off for one caller.
pub const DISABLE_VALIDATION_KEY: &str = "disable_spiffe_cert_validation";

/// `[sds]`, validated: SPIRE's keys and defaults, and the bounds on what a caller sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsConfig {
    /// The resource name of the caller's first SVID.
    pub default_svid_name: String,
    /// The resource name of the agent's own trust domain's bundle.
    pub default_bundle_name: String,
    /// The resource name of all the bundles the caller trusts, in one SPIFFE validator.
    pub default_all_bundles_name: String,
    /// Validation contexts carry `trusted_ca` instead of the SPIFFE validator (callers may
    /// override it in their node metadata).
    pub disable_spiffe_cert_validation: bool,
    /// Bounds on requests.
    pub limits: SdsLimits,
}

impl Default for SdsConfig {
    fn default() -> Self {
        Self {
            default_svid_name: "default".into(),
            default_bundle_name: "ROOTCA".into(),
            default_all_bundles_name: "ALL".into(),
            disable_spiffe_cert_validation: false,
            limits: SdsLimits::default(),
        }
    }
}

/// The gRPC service name (for reflection).
pub const SERVICE_NAME: &str = <SecretDiscoveryServiceServer<SdsService> as NamedService>::NAME;

/// The SDS service over `source`, attesting with `attestors`, counting into `settings.metrics`
/// (and its registry); its streams end when `shutdown` fires.
pub fn server(
    source: Arc<dyn WorkloadSource>,
    attestors: Attestors,
    settings: Settings,
    config: SdsConfig,
    shutdown: Shutdown,
) -> Result<SecretDiscoveryServiceServer<SdsService>, MetricsError> {
    let max_request_bytes = settings.limits.max_request_bytes;
    let metrics = SdsMetrics::new(settings.metrics.registry())?;
    let service = SdsService::new(source, attestors, settings, config, metrics, shutdown);
    Ok(SecretDiscoveryServiceServer::new(service).max_decoding_message_size(max_request_bytes))
}
