//! The config file as written: every section and key of `conf/agent.toml`, with its default.
//! Unknown keys are refused (a typo must never fall back to a default silently); values are
//! checked in [`super::AgentConfig::from_file`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::servers::AddressList;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[agent]`.
    pub agent: AgentSection,
    /// `[node_attestor.*]`.
    pub node_attestor: NodeAttestorSection,
    /// `[workload_attestor.*]`.
    pub workload_attestor: WorkloadAttestorSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[workload_api]`.
    pub workload_api: super::workload_api::WorkloadApiSection,
    /// `[sds]`.
    pub sds: super::sds::SdsSection,
    /// `[sync]`.
    pub sync: SyncSection,
    /// `[rotation]`.
    pub rotation: RotationSection,
    /// `[health_checks]`.
    pub health_checks: HealthChecksSection,
    /// `[telemetry]`: OTLP export of spans.
    pub telemetry: tessera_edge::telemetry::TelemetrySection,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// Where the agent keeps its SVID, key, cache and cursor.
    pub data_dir: PathBuf,
    /// The servers: `host`, `host:port`, or a list of them.
    pub server_address: AddressList,
    /// The servers' agent API port, for addresses that name none.
    pub server_port: u16,
    /// The Workload API socket.
    pub socket_path: PathBuf,
    /// The trust domain.
    pub trust_domain: String,
    /// PEM bundle to trust the server at bootstrap; empty for none.
    pub trust_bundle_path: PathBuf,
    /// Trust the server at bootstrap without a bundle.
    pub insecure_bootstrap: bool,
    /// Join token for node attestation; empty for none.
    pub join_token: String,
    /// trace, debug, info, warn, error.
    pub log_level: String,
    /// `text` or `json` (one JSON object per line).
    pub log_format: String,
    /// Key type of workload X.509-SVIDs.
    pub workload_x509_svid_key_type: String,
    /// SPIRE's LRU X.509-SVID cache size: SVIDs signed eagerly at most; beyond it, signed on
    /// demand for the workloads that ask and evicted least recently used first (a soft
    /// limit: SVIDs of open streams stay). 0 means the default (1000), as in SPIRE; signed so
    /// a negative value is refused by name rather than by the TOML parser.
    pub x509_svid_cache_max_size: i64,
    /// Most JWT-SVIDs cached.
    pub jwt_svid_cache_max_size: usize,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(super::DEFAULT_DATA_DIR),
            server_address: AddressList(vec![super::DEFAULT_SERVER_ADDRESS.into()]),
            server_port: 8081,
            socket_path: PathBuf::from(super::DEFAULT_SOCKET_PATH),
            trust_domain: super::DEFAULT_TRUST_DOMAIN.into(),
            trust_bundle_path: PathBuf::new(),
            insecure_bootstrap: false,
            join_token: String::new(),
            log_level: "info".into(),
            log_format: "text".into(),
            workload_x509_svid_key_type: "ec-p256".into(),
            x509_svid_cache_max_size: 1000,
            jwt_svid_cache_max_size: 1000,
        }
    }
}

/// `[node_attestor.*]`: at most one method besides `agent.join_token`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeAttestorSection {
    /// `[node_attestor.x509pop]`.
    pub x509pop: Option<X509PopSection>,
}

/// `[node_attestor.x509pop]` (SPIRE's `x509pop` plugin data).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509PopSection {
    /// The node's private key, PEM.
    pub private_key_path: PathBuf,
    /// The node's certificate, PEM.
    pub certificate_path: PathBuf,
    /// Intermediates between the certificate and the server's x509pop CA bundle, PEM.
    #[serde(default)]
    pub intermediates_path: Option<PathBuf>,
}

/// `[workload_attestor.*]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadAttestorSection {
    /// `[workload_attestor.unix]`.
    pub unix: UnixSection,
}

/// `[workload_attestor.unix]` (SPIRE's `unix` workload attestor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnixSection {
    /// Add `unix:path` and `unix:sha256` selectors.
    pub discover_workload_path: bool,
    /// Largest binary hashed for `unix:sha256`, bytes; 0: no limit; negative: never hash.
    pub workload_size_limit: i64,
}

impl Default for UnixSection {
    fn default() -> Self {
        Self {
            discover_workload_path: false,
            workload_size_limit: 128 * 1024 * 1024,
        }
    }
}

/// `[limits]`: what one workload may hold or send.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Workload API streams open at once, all callers.
    pub max_streams: usize,
    /// Workload API streams open at once per caller uid.
    pub max_streams_per_uid: usize,
    /// Concurrent requests on one connection.
    pub max_requests_per_connection: u32,
    /// Largest request message, bytes.
    pub max_request_bytes: usize,
    /// Most audiences in one FetchJWTSVID.
    pub max_audiences: usize,
    /// Longest audience, bytes.
    pub max_audience_len: usize,
    /// Longest token ValidateJWTSVID accepts, bytes.
    pub max_jwt_bytes: usize,
    /// Longest workload attestation.
    #[serde(with = "duration")]
    pub attestation_timeout: Duration,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            max_streams_per_uid: 256,
            max_requests_per_connection: 256,
            max_request_bytes: 64 * 1024,
            max_audiences: tessera_edge::limits::DEFAULT_MAX_AUDIENCES,
            max_audience_len: tessera_edge::limits::DEFAULT_MAX_AUDIENCE_LEN,
            max_jwt_bytes: 64 * 1024,
            attestation_timeout: Duration::from_secs(10),
        }
    }
}

/// `[sync]`: the stream of changes from the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSection {
    /// First reconnect delay after the stream drops.
    #[serde(with = "duration")]
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    #[serde(with = "duration")]
    pub backoff_max: Duration,
}

impl Default for SyncSection {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// `[rotation]`: renewal of SVIDs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationSection {
    /// Renewal time jitter around half-life, percent of the lifetime.
    pub jitter_percent: u8,
    /// Most CSRs sent to the server in one batch.
    pub batch_size: usize,
}

impl Default for RotationSection {
    fn default() -> Self {
        Self {
            jitter_percent: 10,
            batch_size: 500,
        }
    }
}

/// `[health_checks]` (SPIRE's keys).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthChecksSection {
    /// Serve `/live`, `/ready` and `/metrics`.
    pub listener_enabled: bool,
    /// Address of the listener.
    pub bind_address: String,
    /// Port of the listener.
    pub bind_port: u16,
}

impl Default for HealthChecksSection {
    fn default() -> Self {
        Self {
            listener_enabled: false,
            bind_address: "127.0.0.1".into(),
            bind_port: 8082,
        }
    }
}
