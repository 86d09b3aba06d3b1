//! The agent's configuration: a TOML file (every key documented in `conf/agent.toml`, with
//! SPIRE's defaults where SPIRE has the concept), overridden by `run` flags, validated into
//! [`AgentConfig`] before anything starts. A bad value fails start-up with a message naming
//! the key (or flag), the value and the rule; an unknown key fails naming the key.

pub use tessera_edge::duration;
pub mod file;
pub mod sds;
pub mod servers;
pub mod telemetry;
pub mod workload_api;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use tessera_edge::cli::LogFormat;
use tessera_identity::TrustDomain;

use self::file::FileConfig;
pub use self::servers::{ServerAddress, ServerHost};
use crate::attestor::unix::{UnixAttestorConfig, WorkloadSizeLimit};
use crate::workload_api::Limits;

/// Trust domain when neither the file nor `--trustDomain` gives one (SPIRE's example value).
pub const DEFAULT_TRUST_DOMAIN: &str = "example.org";
/// Data directory by default: relative to the working directory, as in SPIRE's example.
pub const DEFAULT_DATA_DIR: &str = "./.data";
/// The Workload API socket by default (SPIRE's, under Tessera's name).
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/tessera-agent/public/api.sock";
/// The server's address by default: the same machine (the zero-config quickstart).
pub const DEFAULT_SERVER_ADDRESS: &str = "127.0.0.1";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("config file {}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names the key, line and column).
        message: String,
    },
    /// A value breaks a rule.
    #[error("{key} {value:?}: {reason}")]
    Invalid {
        /// The key (`agent.trust_domain`) or flag (`--trustDomain`).
        key: String,
        /// The value given.
        value: String,
        /// The rule, and the fix.
        reason: String,
    },
}

/// Values given on the `run` command line; each replaces the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--dataDir`.
    pub data_dir: Option<PathBuf>,
    /// `--joinToken`.
    pub join_token: Option<String>,
    /// `--serverAddress`, each time it is given (each may hold comma-separated entries);
    /// empty: the file's.
    pub server_address: Vec<String>,
    /// `--serverPort`.
    pub server_port: Option<u16>,
    /// `--socketPath`.
    pub socket_path: Option<PathBuf>,
    /// `--trustDomain`.
    pub trust_domain: Option<String>,
    /// `--trustBundle`.
    pub trust_bundle_path: Option<PathBuf>,
    /// `--insecureBootstrap` (only ever turns it on).
    pub insecure_bootstrap: bool,
    /// `--logLevel`.
    pub log_level: Option<String>,
    /// `--logFormat`.
    pub log_format: Option<String>,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (default).
    Info,
    /// Problems only.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// How the agent proves its node to the server.
#[derive(Clone, PartialEq, Eq)]
pub enum NodeAttestorConfig {
    /// A join token (single use): `agent.join_token` / `--joinToken`. Wins over x509pop, as
    /// in SPIRE.
    JoinToken(String),
    /// Proof of possession of a node certificate's key.
    X509Pop(X509PopConfig),
}

impl std::fmt::Debug for NodeAttestorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JoinToken(_) => f.write_str("JoinToken(<redacted>)"),
            Self::X509Pop(c) => f.debug_tuple("X509Pop").field(c).finish(),
        }
    }
}

/// `[node_attestor.x509pop]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509PopConfig {
    /// The node's private key, PEM.
    pub private_key_path: PathBuf,
    /// The node's certificate, PEM.
    pub certificate_path: PathBuf,
    /// Intermediate certificates, PEM.
    pub intermediates_path: Option<PathBuf>,
}

/// Key type of workload X.509-SVIDs (made on the node; they never leave it): EC P-256
/// (default, as SPIRE's), EC P-384, RSA 2048 or RSA 4096.
pub use tessera_actors::keys::KeyType as SvidKeyType;

/// `[sync]`: how the node side reconnects its stream of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// First reconnect delay; doubles (with jitter) up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

/// `[rotation]`: how SVIDs are renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationConfig {
    /// Renewal at half-life ± this percent of the lifetime.
    pub jitter_percent: u8,
    /// Most CSRs in one signing request to the server.
    pub batch_size: usize,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the agent keeps its SVID and key (0600), cache and cursor.
    pub data_dir: PathBuf,
    /// The servers' agent API addresses (at least one, no duplicates, in the order given);
    /// the agent picks among them at random and fails over between them.
    pub servers: Vec<ServerAddress>,
    /// The Workload API socket.
    pub socket_path: PathBuf,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// PEM bundle that authenticates the server at bootstrap.
    pub trust_bundle_path: Option<PathBuf>,
    /// Trust the server at bootstrap without a bundle (never with `trust_bundle_path`).
    pub insecure_bootstrap: bool,
    /// How the node attests; `None` when neither a join token nor x509pop is configured
    /// (a restart with a stored agent SVID needs none).
    pub node_attestor: Option<NodeAttestorConfig>,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// How log lines are written (`agent.log_format`).
    pub log_format: LogFormat,
    /// Key type of workload X.509-SVIDs.
    pub workload_x509_svid_key_type: SvidKeyType,
    /// Size of the LRU X.509-SVID cache (`agent.x509_svid_cache_max_size`, SPIRE's key and
    /// default, 1000): SVIDs signed eagerly at most; more only for entries workloads use.
    pub x509_svid_cache_max_size: usize,
    /// Most JWT-SVIDs the node side caches.
    pub jwt_svid_cache_max_size: usize,
    /// The `unix` workload attestor.
    pub unix_attestor: UnixAttestorConfig,
    /// Bounds of the Workload API.
    pub limits: Limits,
    /// The Workload API socket's connections (`[workload_api]`).
    pub connections: tessera_edge::peer::PeerPolicy,
    /// Envoy SDS on the Workload API socket (`[sds]`).
    pub sds: crate::sds::SdsConfig,
    /// The sync stream's reconnection.
    pub sync: SyncConfig,
    /// SVID renewal.
    pub rotation: RotationConfig,
    /// `/live`, `/ready` and `/metrics`; `None`: off.
    pub health_addr: Option<SocketAddr>,
    /// `[telemetry]`: OTLP export of spans.
    pub telemetry: tessera_edge::telemetry::TelemetryConfig,
}

impl AgentConfig {
    /// Reads `path` (if any), applies `overrides` and validates the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<AgentConfig, ConfigError> {
        let file = match path {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                parse_file(path, &text)?
            }
        };
        Self::from_file(file, overrides)
    }

    /// Validates an already parsed file with `overrides` applied.
    pub fn from_file(file: FileConfig, o: &Overrides) -> Result<AgentConfig, ConfigError> {
        let a = &file.agent;
        let (key, value) = pick(
            "--trustDomain",
            "agent.trust_domain",
            &o.trust_domain,
            &a.trust_domain,
        );
        let trust_domain = TrustDomain::from_name_or_id(&value)
            .map_err(|e| invalid(key, &value, &e.to_string()))?;
        let data_dir = o.data_dir.clone().unwrap_or_else(|| a.data_dir.clone());
        non_empty_path("agent.data_dir", &data_dir)?;
        let socket_path = o
            .socket_path
            .clone()
            .unwrap_or_else(|| a.socket_path.clone());
        non_empty_path("agent.socket_path", &socket_path)?;
        let server_port = o.server_port.unwrap_or(a.server_port);
        if server_port == 0 {
            let key = if o.server_port.is_some() {
                "--serverPort"
            } else {
                "agent.server_port"
            };
            return Err(invalid(key, "0", "the server's port cannot be 0"));
        }
        let servers = if o.server_address.is_empty() {
            servers::parse_addresses("agent.server_address", &a.server_address.0, server_port)?
        } else {
            servers::parse_addresses("--serverAddress", &o.server_address, server_port)?
        };
        let trust_bundle_path = o.trust_bundle_path.clone().or_else(|| {
            (!a.trust_bundle_path.as_os_str().is_empty()).then(|| a.trust_bundle_path.clone())
        });
        let insecure_bootstrap = o.insecure_bootstrap || a.insecure_bootstrap;
        if let (Some(path), true) = (&trust_bundle_path, insecure_bootstrap) {
            return Err(invalid(
                "agent.insecure_bootstrap",
                "true",
                &format!(
                    "cannot be used together with a trust bundle ({}); choose one way to trust the server",
                    path.display()
                ),
            ));
        }
        let (key, level) = pick("--logLevel", "agent.log_level", &o.log_level, &a.log_level);
        let log_level = parse_log_level(key, &level)?;
        let (key, format) = pick(
            "--logFormat",
            "agent.log_format",
            &o.log_format,
            &a.log_format,
        );
        let log_format = LogFormat::parse(&format)
            .ok_or_else(|| invalid(key, &format, &format!("use {}", LogFormat::ALLOWED)))?;
        let join_token = o.join_token.clone().unwrap_or_else(|| a.join_token.clone());
        let node_attestor = if !join_token.is_empty() {
            Some(NodeAttestorConfig::JoinToken(join_token))
        } else {
            file.node_attestor.x509pop.as_ref().map(|x| {
                NodeAttestorConfig::X509Pop(X509PopConfig {
                    private_key_path: x.private_key_path.clone(),
                    certificate_path: x.certificate_path.clone(),
                    intermediates_path: x.intermediates_path.clone(),
                })
            })
        };
        if let Some(NodeAttestorConfig::X509Pop(x)) = &node_attestor {
            non_empty_path(
                "node_attestor.x509pop.private_key_path",
                &x.private_key_path,
            )?;
            non_empty_path(
                "node_attestor.x509pop.certificate_path",
                &x.certificate_path,
            )?;
        }
        let workload_x509_svid_key_type: SvidKeyType = a
            .workload_x509_svid_key_type
            .parse()
            .map_err(|e: tessera_actors::keys::KeyError| {
                invalid(
                    "agent.workload_x509_svid_key_type",
                    &a.workload_x509_svid_key_type,
                    &e.to_string(),
                )
            })?;
        let x509_svid_cache_max_size = x509_svid_cache_size(a.x509_svid_cache_max_size)?;
        positive("agent.jwt_svid_cache_max_size", a.jwt_svid_cache_max_size)?;

        let u = &file.workload_attestor.unix;
        let unix_attestor = UnixAttestorConfig {
            discover_workload_path: u.discover_workload_path,
            workload_size_limit: WorkloadSizeLimit::from_spire(u.workload_size_limit),
            ..UnixAttestorConfig::default()
        };

        let l = &file.limits;
        positive("limits.max_streams", l.max_streams)?;
        positive("limits.max_streams_per_uid", l.max_streams_per_uid)?;
        positive(
            "limits.max_requests_per_connection",
            l.max_requests_per_connection as usize,
        )?;
        positive("limits.max_request_bytes", l.max_request_bytes)?;
        positive("limits.max_audiences", l.max_audiences)?;
        positive("limits.max_audience_len", l.max_audience_len)?;
        positive("limits.max_jwt_bytes", l.max_jwt_bytes)?;
        positive_duration("limits.attestation_timeout", l.attestation_timeout)?;
        let limits = Limits {
            max_streams: l.max_streams,
            max_streams_per_uid: l.max_streams_per_uid,
            max_requests_per_connection: l.max_requests_per_connection,
            max_request_bytes: l.max_request_bytes,
            max_audiences: l.max_audiences,
            max_audience_len: l.max_audience_len,
            max_jwt_bytes: l.max_jwt_bytes,
            attestation_timeout: l.attestation_timeout,
        };

        let s = &file.sync;
        positive_duration("sync.backoff_initial", s.backoff_initial)?;
        if s.backoff_max < s.backoff_initial {
            return Err(invalid(
                "sync.backoff_max",
                &format!("{:?}", s.backoff_max),
                &format!(
                    "must be at least sync.backoff_initial ({:?})",
                    s.backoff_initial
                ),
            ));
        }
        let r = &file.rotation;
        if r.jitter_percent > 50 {
            return Err(invalid(
                "rotation.jitter_percent",
                &r.jitter_percent.to_string(),
                "must be at most 50 (renewal happens at half-life ± this share of the lifetime)",
            ));
        }
        positive("rotation.batch_size", r.batch_size)?;

        let h = &file.health_checks;
        let health_addr = if h.listener_enabled {
            let ip: IpAddr = h.bind_address.parse().map_err(|_| {
                invalid(
                    "health_checks.bind_address",
                    &h.bind_address,
                    "write an IP address such as \"127.0.0.1\"",
                )
            })?;
            Some(SocketAddr::new(ip, h.bind_port))
        } else {
            None
        };

        Ok(AgentConfig {
            data_dir,
            servers,
            socket_path,
            trust_domain,
            trust_bundle_path,
            insecure_bootstrap,
            node_attestor,
            log_level,
            log_format,
            workload_x509_svid_key_type,
            x509_svid_cache_max_size,
            jwt_svid_cache_max_size: a.jwt_svid_cache_max_size,
            unix_attestor,
            limits,
            connections: file.workload_api.policy()?,
            sds: file.sds.config()?,
            sync: SyncConfig {
                backoff_initial: s.backoff_initial,
                backoff_max: s.backoff_max,
            },
            rotation: RotationConfig {
                jitter_percent: r.jitter_percent,
                batch_size: r.batch_size,
            },
            health_addr,
            telemetry: telemetry::telemetry(&file.telemetry)?,
        })
    }
}

/// Parses the text of a config file; errors name the file and, through the TOML parser,
/// the key, line and column.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        // Identity errors begin with the quoted input, which the message shows already.
        reason: reason
            .strip_prefix(&format!("{value:?}: "))
            .unwrap_or(reason)
            .to_owned(),
    }
}

/// The flag's value if given, else the file's, with the name to blame.
fn pick<'a>(flag: &'a str, key: &'a str, over: &Option<String>, file: &str) -> (&'a str, String) {
    match over {
        Some(v) => (flag, v.clone()),
        None => (key, file.to_owned()),
    }
}

fn non_empty_path(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(invalid(key, "", "must not be empty"));
    }
    Ok(())
}

/// `agent.x509_svid_cache_max_size`: 0 (SPIRE's unset value) is the default, 1000.
fn x509_svid_cache_size(n: i64) -> Result<usize, ConfigError> {
    match usize::try_from(n) {
        Ok(0) => Ok(tessera_actors::agent::svid_cache::DEFAULT_X509_SVID_CACHE_MAX_SIZE),
        Ok(n) => Ok(n),
        Err(_) => Err(invalid(
            "agent.x509_svid_cache_max_size",
            &n.to_string(),
            "must not be negative: write how many X.509-SVIDs to keep signed (workloads' \
             SVIDs are kept beyond it), or 0 or nothing for the default, 1000",
        )),
    }
}

fn positive(key: &str, n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(invalid(key, "0", "must be at least 1"));
    }
    Ok(())
}

fn positive_duration(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(invalid(key, "0s", "must be longer than zero"));
    }
    Ok(())
}

fn parse_log_level(key: &str, value: &str) -> Result<LogLevel, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "trace" => Ok(LogLevel::Trace),
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        _ => Err(invalid(key, value, "use trace, debug, info, warn or error")),
    }
}

#[cfg(test)]
mod tests;
