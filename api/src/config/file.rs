//! The TOML file as written: every section and key, with SPIRE's defaults. Unknown keys are
//! refused (serde `deny_unknown_fields`), and the error names the key. `conf/server.toml`
//! documents each key; keep the two in step (a test loads that file).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tessera_identity::EntryLimits;

use super::duration;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`.
    pub server: ServerSection,
    /// `[key_manager]`.
    pub key_manager: KeyManagerSection,
    /// `[upstream_authority.disk]`; absent: a self-signed root.
    pub upstream_authority: Option<UpstreamSection>,
    /// `[node_attestor.*]`.
    pub node_attestor: NodeAttestorSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[log]`.
    pub log: LogSection,
    /// `[health_checks]`.
    pub health_checks: HealthSection,
    /// `[store]`: where the event log lives.
    pub store: StoreSection,
    /// `[admin_socket]`: the admin socket's mode, allowed uids and connection bounds.
    pub admin_socket: super::admin_socket::AdminSocketSection,
    /// `[federation]`: the bundle endpoint and the trust domains federated with.
    pub federation: super::federation::FederationSection,
    /// `[telemetry]`: OTLP export of spans.
    pub telemetry: tessera_edge::telemetry::TelemetrySection,
    /// `[audit]`: signed checkpoints of the event log.
    pub audit: super::audit::AuditSection,
}

/// `[server]`: SPIRE's `server { ... }` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// The trust domain this server is the root of.
    pub trust_domain: String,
    /// Where the event log, snapshots and keys live.
    pub data_dir: PathBuf,
    /// The admin API's Unix socket.
    pub socket_path: PathBuf,
    /// Address of the agent API.
    pub bind_address: String,
    /// Port of the agent API.
    pub bind_port: u16,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub log_level: String,
    /// `text` or `json` (one JSON object per line).
    pub log_format: String,
    /// Lifetime of each X.509 CA.
    #[serde(deserialize_with = "duration::deserialize")]
    pub ca_ttl: Duration,
    /// Default X.509-SVID lifetime.
    #[serde(deserialize_with = "duration::deserialize")]
    pub default_x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    #[serde(deserialize_with = "duration::deserialize")]
    pub default_jwt_svid_ttl: Duration,
    /// Key type of the X.509 CA.
    pub ca_key_type: String,
    /// Key type of the JWT signing keys; `ca_key_type` when unset (SPIRE's rule).
    pub jwt_key_type: Option<String>,
    /// Subject of the CA certificates.
    pub ca_subject: CaSubjectSection,
    /// Lifetime of a join token when `token generate` gives no `--ttl`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub join_token_ttl: Duration,
    /// How often the authority checks whether a CA or JWT key is due for rotation.
    #[serde(deserialize_with = "duration::deserialize")]
    pub rotation_check_interval: Duration,
    /// This server's name in events and metrics; unset: a stable id kept in the data dir.
    pub server_id: Option<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            trust_domain: super::DEFAULT_TRUST_DOMAIN.into(),
            data_dir: PathBuf::from(super::DEFAULT_DATA_DIR),
            socket_path: PathBuf::from(super::DEFAULT_SOCKET_PATH),
            bind_address: "0.0.0.0".into(),
            bind_port: 8081,
            log_level: "info".into(),
            log_format: "text".into(),
            ca_ttl: Duration::from_secs(24 * 3600),
            default_x509_svid_ttl: Duration::from_secs(3600),
            default_jwt_svid_ttl: Duration::from_secs(300),
            ca_key_type: "ec-p256".into(),
            jwt_key_type: None,
            ca_subject: CaSubjectSection::default(),
            join_token_ttl: Duration::from_secs(600),
            rotation_check_interval: Duration::from_secs(10),
            server_id: None,
        }
    }
}

/// `[server.ca_subject]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaSubjectSection {
    /// Countries (C).
    pub country: Vec<String>,
    /// Organizations (O).
    pub organization: Vec<String>,
    /// Common name (CN); empty for none.
    pub common_name: String,
}

impl Default for CaSubjectSection {
    fn default() -> Self {
        Self {
            country: vec!["US".into()],
            organization: vec!["SPIFFE".into()],
            common_name: String::new(),
        }
    }
}

/// `[key_manager]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyManagerSection {
    /// `disk` (files under `<data_dir>/keys`) or `memory`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Default for KeyManagerSection {
    fn default() -> Self {
        Self {
            kind: "disk".into(),
        }
    }
}

/// `[upstream_authority]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `[upstream_authority.disk]`.
    pub disk: UpstreamDiskSection,
}

/// `[upstream_authority.disk]`: SPIRE's UpstreamAuthority "disk" plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDiskSection {
    /// The upstream CA certificate (PEM).
    pub cert_file_path: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key_file_path: PathBuf,
    /// The upstream trust bundle (PEM); `cert_file_path` when unset (a self-signed upstream).
    pub bundle_file_path: Option<PathBuf>,
}

/// `[node_attestor]`: node attestors beyond `join_token` (always on).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeAttestorSection {
    /// `[node_attestor.x509pop]`; absent: x509pop attestation is refused.
    pub x509pop: Option<X509PopSection>,
}

/// `[node_attestor.x509pop]`: SPIRE's server NodeAttestor "x509pop".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509PopSection {
    /// PEM CA certificates that agents' certificates must chain to.
    pub ca_bundle_path: PathBuf,
}

/// `[limits]`: bounds on everything a caller controls.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Most registration entries the server holds.
    pub max_entries: usize,
    /// Requests admitted per actor, waiting or running.
    pub max_in_flight: usize,
    /// Timeout of every call into an actor.
    #[serde(deserialize_with = "duration::deserialize")]
    pub call_timeout: Duration,
    /// Updates buffered per agent sync stream.
    pub sync_stream_buffer: usize,
    /// Most items in one batch RPC.
    pub max_batch_size: usize,
    /// Page size of list RPCs when the caller gives none.
    pub default_page_size: usize,
    /// Largest page of list RPCs.
    pub max_page_size: usize,
    /// Most `EventLog.Tail` streams open at once.
    pub max_tail_streams: usize,
    /// Most event kinds in one `EventLog.Tail` filter.
    pub max_event_kinds: usize,
    /// Most audiences of one JWT-SVID.
    pub max_audiences: usize,
    /// Largest admin request, bytes.
    pub max_request_bytes: usize,
    /// CSRs and JWTs queued or signing at once.
    pub max_signing_queue: usize,
    /// CSRs in one signing batch.
    pub max_signing_batch: usize,
    /// Signing jobs at once; 0: one per CPU.
    pub max_signing_jobs: usize,
    /// Part of `max_signing_queue` kept for on-demand signing (first SVIDs, JWTs): bulk
    /// renewal is refused once the rest is full. At most half the queue; absent: 1,000 or
    /// half the queue, whichever is smaller.
    pub signing_on_demand_reserve: Option<usize>,
    /// Valid SVIDs the server remembers signing, to tell an agent's renewal (bulk) from a
    /// first request (on demand).
    pub max_tracked_svids: usize,
    /// Largest CSR, bytes.
    pub max_csr_bytes: usize,
    /// DNS names in one X509-SVID.
    pub max_svid_dns_names: usize,
    /// Longest JWT-SVID audience, bytes (shared with the agent's Workload API).
    pub max_audience_len: usize,
    /// Agent API connections open at once (handshaking or established), all sources.
    pub max_agent_connections: usize,
    /// Agent API connections open at once per source IP.
    pub max_agent_connections_per_ip: usize,
    /// Longest TLS handshake on the agent API.
    #[serde(deserialize_with = "duration::deserialize")]
    pub agent_handshake_timeout: Duration,
    /// HTTP/2 streams (RPCs) open at once on one agent connection.
    pub agent_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list on the agent API, bytes.
    pub agent_max_header_list_bytes: u32,
    /// Largest agent API request message, bytes.
    pub agent_max_request_bytes: usize,
    /// Age at which agent connections are asked to close (SPIRE: 3m).
    #[serde(deserialize_with = "duration::deserialize")]
    pub agent_connection_max_age: Duration,
    /// Time in-flight calls get after the max age before the connection is cut.
    #[serde(deserialize_with = "duration::deserialize")]
    pub agent_connection_max_age_grace: Duration,
    /// Attestations per second per source IP (SPIRE: 1).
    pub attestations_per_ip_per_second: u32,
    /// Attestations at once per source IP (SPIRE: 1).
    pub attestation_burst_per_ip: u32,
    /// Longest an attestation over the rate waits for its turn before it is refused.
    #[serde(deserialize_with = "duration::deserialize")]
    pub attestation_max_wait: Duration,
    /// Longest wait for each message of an agent during attestation.
    #[serde(deserialize_with = "duration::deserialize")]
    pub attestation_step_timeout: Duration,
    /// Longest a whole attestation may take.
    #[serde(deserialize_with = "duration::deserialize")]
    pub attestation_timeout: Duration,
    /// SyncEvents streams one agent may hold open.
    pub max_sync_streams_per_agent: usize,
    /// JWT-SVIDs one agent may have minted per second (and at once).
    pub agent_jwt_mints_per_second: u32,
    /// BatchSignX509SVID calls per agent per second (and at once).
    pub agent_csr_batches_per_second: u32,
    /// Bounds on entry fields.
    pub entry: EntryLimits,
    /// `[limits.federation]`: relationships, bundles, fetches, the bundle endpoint.
    pub federation: super::federation::FederationLimitsSection,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let agent = crate::agent_api::AgentApiLimits::default();
        Self {
            max_entries: 1_000_000,
            max_in_flight: 10_000,
            call_timeout: Duration::from_secs(30),
            sync_stream_buffer: 4_096,
            max_batch_size: 1_000,
            default_page_size: 500,
            max_page_size: 5_000,
            max_tail_streams: 64,
            max_event_kinds: 64,
            max_audiences: tessera_edge::limits::DEFAULT_MAX_AUDIENCES,
            max_request_bytes: 4 * 1024 * 1024,
            max_signing_queue: 10_000,
            max_signing_batch: 1_000,
            max_signing_jobs: 0,
            signing_on_demand_reserve: None,
            max_tracked_svids: 1_000_000,
            max_csr_bytes: 16 * 1024,
            max_svid_dns_names: 64,
            max_audience_len: agent.audiences.max_audience_len,
            max_agent_connections: agent.max_connections,
            max_agent_connections_per_ip: agent.max_connections_per_ip,
            agent_handshake_timeout: agent.handshake_timeout,
            agent_max_concurrent_streams: agent.max_concurrent_streams,
            agent_max_header_list_bytes: agent.max_header_list_bytes,
            agent_max_request_bytes: agent.max_request_bytes,
            agent_connection_max_age: agent.connection_max_age,
            agent_connection_max_age_grace: agent.connection_max_age_grace,
            attestations_per_ip_per_second: agent.attestations_per_ip_per_second,
            attestation_burst_per_ip: agent.attestation_burst_per_ip,
            attestation_max_wait: agent.attestation_max_wait,
            attestation_step_timeout: agent.attestation_step_timeout,
            attestation_timeout: agent.attestation_timeout,
            max_sync_streams_per_agent: agent.max_sync_streams_per_agent,
            agent_jwt_mints_per_second: agent.jwt_mints_per_agent_per_second,
            agent_csr_batches_per_second: agent.csr_batches_per_agent_per_second,
            entry: EntryLimits::default(),
            federation: super::federation::FederationLimitsSection::default(),
        }
    }
}

/// `[log]`: the event log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Records between snapshots; 0: never.
    pub snapshot_every: u64,
    /// `full_chain` or `from_latest_snapshot`.
    pub open_check: String,
}

/// `[store]`: the event log's backend. `sled` (default) is embedded, for one server;
/// `postgres` is one log several servers share.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `sled` or `postgres`.
    pub backend: String,
    /// For `postgres`: `postgres://user[:password]@host:port/dbname`.
    pub url: Option<String>,
    /// For `postgres`: connections in the pool.
    pub pool_size: usize,
    /// For `postgres`: longest wait for a connection.
    #[serde(deserialize_with = "duration::deserialize")]
    pub connect_timeout: Duration,
    /// For `postgres`: longest a statement may run.
    #[serde(deserialize_with = "duration::deserialize")]
    pub statement_timeout: Duration,
    /// For `postgres`: how often to look for other servers' records without a notification.
    #[serde(deserialize_with = "duration::deserialize")]
    pub poll_interval: Duration,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: "sled".into(),
            url: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            snapshot_every: 10_000,
            open_check: "full_chain".into(),
        }
    }
}

/// `[health_checks]`: `/live`, `/ready` and `/metrics` over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// Whether to serve them at all (off by default, as in SPIRE).
    pub listener_enabled: bool,
    /// Address to listen on.
    pub bind_address: String,
    /// Port to listen on.
    pub bind_port: u16,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            listener_enabled: false,
            bind_address: "127.0.0.1".into(),
            bind_port: 8080,
        }
    }
}
