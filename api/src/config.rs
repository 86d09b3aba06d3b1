//! The server's configuration: a TOML file (every key documented in `conf/server.toml`, with
//! SPIRE's defaults), overridden by `run` flags, validated into [`Config`] before anything
//! starts. A bad value fails start-up with a message naming the key (or flag), the value and
//! the rule.

mod agent_api;
pub mod audit;
mod authority;
pub use tessera_edge::duration;
pub mod admin_socket;
pub mod federation;
pub mod file;
pub mod store;
pub mod telemetry;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::server::authority::{AuthoritySettings, Owner};
use tessera_actors::server::keys::KeyManager;
use tessera_actors::server::supervisor::ServerSettings;
pub use tessera_edge::cli::LogFormat;
use tessera_eventlog::OpenCheck;
use tessera_identity::{EntryLimits, TrustDomain};

use self::file::FileConfig;
pub use self::store::StoreConfig;

/// Trust domain when neither the file nor `--trustDomain` gives one (SPIRE's example config).
pub const DEFAULT_TRUST_DOMAIN: &str = "example.org";
/// Data directory by default: relative to the working directory, as in SPIRE's example config.
pub const DEFAULT_DATA_DIR: &str = "./.data";
/// The admin socket by default (SPIRE's).
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/tessera-server/private/api.sock";

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
    /// The authority's settings do not work together.
    #[error(transparent)]
    Authority(#[from] tessera_actors::server::authority::SettingsError),
    /// A value breaks a rule.
    #[error("{key} {value:?}: {reason}")]
    Invalid {
        /// The key (`server.trust_domain`) or flag (`--trustDomain`).
        key: String,
        /// The value given.
        value: String,
        /// The rule, and the fix.
        reason: String,
    },
}

/// Values given on the `run` command line; each replaces the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--trustDomain`.
    pub trust_domain: Option<String>,
    /// `--dataDir`.
    pub data_dir: Option<PathBuf>,
    /// `--socketPath`.
    pub socket_path: Option<PathBuf>,
    /// `--bindAddress`.
    pub bind_address: Option<String>,
    /// `--serverPort`.
    pub bind_port: Option<u16>,
    /// `--logLevel`.
    pub log_level: Option<String>,
    /// `--logFormat`.
    pub log_format: Option<String>,
    /// `--storeURL`: a PostgreSQL log (selects `store.backend = "postgres"`).
    pub store_url: Option<String>,
    /// `--serverID`.
    pub server_id: Option<String>,
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

/// Where the authority keeps private keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyManagerKind {
    /// PKCS#8 files, mode 0600, under `<data_dir>/keys`.
    Disk,
    /// Process memory: keys are lost at exit, so every start prepares a new CA and JWT key.
    Memory,
}

/// The actors' bounds (the key manager is opened at start, so it is not config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorLimits {
    /// Bounds on entries.
    pub entry_limits: EntryLimits,
    /// Most entries the registry holds.
    pub max_entries: usize,
    /// Requests admitted per actor.
    pub max_in_flight: usize,
    /// Timeout of every call into an actor.
    pub call_timeout: Duration,
    /// Records between snapshots.
    pub snapshot_every: u64,
    /// Updates buffered per agent sync stream.
    pub sync_stream_buffer: usize,
    /// Valid SVIDs remembered to tell renewals from first requests.
    pub max_tracked_svids: usize,
}

/// Bounds of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiLimits {
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
    /// Join-token lifetime when the request gives none.
    pub default_join_token_ttl: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        let l = file::LimitsSection::default();
        Self {
            max_batch_size: l.max_batch_size,
            default_page_size: l.default_page_size,
            max_page_size: l.max_page_size,
            max_tail_streams: l.max_tail_streams,
            max_event_kinds: l.max_event_kinds,
            max_audiences: l.max_audiences,
            max_request_bytes: l.max_request_bytes,
            default_join_token_ttl: Duration::from_secs(600),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Where the log, snapshots and keys live.
    pub data_dir: PathBuf,
    /// The admin API's socket.
    pub socket_path: PathBuf,
    /// The agent API's address.
    pub agent_api_addr: SocketAddr,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// How log lines are written (`server.log_format`).
    pub log_format: LogFormat,
    /// The authority's settings (CA, JWT keys, rotation, signing).
    pub authority: AuthoritySettings,
    /// Where the authority keeps private keys.
    pub key_manager: KeyManagerKind,
    /// The actors' bounds.
    pub actors: ActorLimits,
    /// Admin API bounds.
    pub api: ApiLimits,
    /// The admin socket's mode and who may connect (`[admin_socket]`).
    pub admin_socket: admin_socket::AdminSocketConfig,
    /// Agent API bounds (`[limits]` keys of the agent API, and the shared audience limits).
    pub agent_api: crate::agent_api::AgentApiLimits,
    /// How much of the log to verify when opening it.
    pub open_check: OpenCheck,
    /// `/live`, `/ready`, `/metrics`; `None`: off.
    pub health_addr: Option<SocketAddr>,
    /// CA bundle of the x509pop node attestor; `None`: x509pop is refused.
    pub x509pop_ca_bundle_path: Option<PathBuf>,
    /// Where the event log lives.
    pub store: StoreConfig,
    /// `server.server_id` / `--serverID`; `None`: the id kept in the data dir.
    pub server_id: Option<String>,
    /// `[federation]` and `[limits.federation]`: bundle endpoint, relationships, bounds.
    pub federation: federation::FederationConfig,
    /// `[telemetry]`: OTLP export of spans.
    pub telemetry: tessera_edge::telemetry::TelemetryConfig,
    /// `[audit]`: when signed checkpoints of the event log are due.
    pub audit: audit::AuditConfig,
}

impl Config {
    /// Reads `path` (if any), applies `overrides` and validates the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
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
    pub fn from_file(file: FileConfig, o: &Overrides) -> Result<Config, ConfigError> {
        let s = &file.server;
        let (td_key, td_value) = pick(
            "--trustDomain",
            "server.trust_domain",
            &o.trust_domain,
            &s.trust_domain,
        );
        let trust_domain = TrustDomain::new(&td_value).map_err(|e| ConfigError::Invalid {
            key: td_key.into(),
            value: td_value.clone(),
            reason: strip_input(&e.to_string(), &td_value),
        })?;
        let data_dir = o.data_dir.clone().unwrap_or_else(|| s.data_dir.clone());
        non_empty_path("server.data_dir", &data_dir)?;
        let socket_path = o
            .socket_path
            .clone()
            .unwrap_or_else(|| s.socket_path.clone());
        non_empty_path("server.socket_path", &socket_path)?;
        let (addr_key, addr_value) = pick(
            "--bindAddress",
            "server.bind_address",
            &o.bind_address,
            &s.bind_address,
        );
        let bind_ip = parse_ip(addr_key, &addr_value)?;
        let agent_api_addr = SocketAddr::new(bind_ip, o.bind_port.unwrap_or(s.bind_port));
        let (level_key, level_value) =
            pick("--logLevel", "server.log_level", &o.log_level, &s.log_level);
        let log_level = parse_log_level(level_key, &level_value)?;
        let (format_key, format_value) = pick(
            "--logFormat",
            "server.log_format",
            &o.log_format,
            &s.log_format,
        );
        let log_format = parse_log_format(format_key, &format_value)?;

        let limits = &file.limits;
        let (authority, key_manager) = authority::authority(&file, &trust_domain)?;
        positive("limits.max_entries", limits.max_entries)?;
        positive("limits.max_in_flight", limits.max_in_flight)?;
        positive("limits.sync_stream_buffer", limits.sync_stream_buffer)?;
        positive("limits.max_batch_size", limits.max_batch_size)?;
        positive("limits.default_page_size", limits.default_page_size)?;
        positive("limits.max_page_size", limits.max_page_size)?;
        positive("limits.max_tail_streams", limits.max_tail_streams)?;
        positive("limits.max_event_kinds", limits.max_event_kinds)?;
        positive("limits.max_audiences", limits.max_audiences)?;
        if limits.max_request_bytes < 1024 {
            return Err(invalid(
                "limits.max_request_bytes",
                limits.max_request_bytes,
                "must be at least 1024",
            ));
        }
        if limits.default_page_size > limits.max_page_size {
            return Err(invalid(
                "limits.default_page_size",
                limits.default_page_size,
                &format!(
                    "must not exceed limits.max_page_size ({})",
                    limits.max_page_size
                ),
            ));
        }
        if limits.call_timeout.is_zero() {
            return Err(invalid(
                "limits.call_timeout",
                "0",
                "must be longer than zero (e.g. \"30s\")",
            ));
        }
        check_entry_limits(&limits.entry)?;
        let agent_api = agent_api::agent_limits(limits)?;
        let join_ttl = s.join_token_ttl;
        if join_ttl.as_secs() == 0
            || join_ttl.as_secs() > u64::from(tessera_actors::server::tokens::MAX_TOKEN_TTL_SECS)
        {
            return Err(invalid(
                "server.join_token_ttl",
                duration::format_duration(join_ttl),
                "must be between 1s and 720h (30 days)",
            ));
        }

        let actors = ActorLimits {
            entry_limits: limits.entry.clone(),
            max_entries: limits.max_entries,
            max_in_flight: limits.max_in_flight,
            call_timeout: limits.call_timeout,
            snapshot_every: file.log.snapshot_every,
            sync_stream_buffer: limits.sync_stream_buffer,
            max_tracked_svids: limits.max_tracked_svids,
        };

        let open_check = match file.log.open_check.as_str() {
            "full_chain" => OpenCheck::FullChain,
            "from_latest_snapshot" => OpenCheck::FromLatestSnapshot,
            other => return Err(invalid(
                "log.open_check",
                other,
                "must be \"full_chain\" (verify every record at start) or \"from_latest_snapshot\"",
            )),
        };
        let x509pop_ca_bundle_path = match &file.node_attestor.x509pop {
            Some(x) => {
                non_empty_path("node_attestor.x509pop.ca_bundle_path", &x.ca_bundle_path)?;
                Some(x.ca_bundle_path.clone())
            }
            None => None,
        };
        let store = store::store(&file.store, o.store_url.as_deref())?;
        let server_id = match (&o.server_id, &s.server_id) {
            (Some(id), _) => Some(("--serverID", id.clone())),
            (None, Some(id)) => Some(("server.server_id", id.clone())),
            (None, None) => None,
        };
        if let Some((key, id)) = &server_id {
            store::check_server_id(key, id)?;
        }
        let server_id = server_id.map(|(_, id)| id);
        let federation =
            federation::federation(&file.federation, &limits.federation, &trust_domain)?;
        let h = &file.health_checks;
        let health_addr = if h.listener_enabled {
            Some(SocketAddr::new(
                parse_ip("health_checks.bind_address", &h.bind_address)?,
                h.bind_port,
            ))
        } else {
            None
        };
        Ok(Config {
            trust_domain,
            data_dir,
            socket_path,
            agent_api_addr,
            log_level,
            log_format,
            authority,
            key_manager,
            actors,
            api: ApiLimits {
                max_batch_size: limits.max_batch_size,
                default_page_size: limits.default_page_size,
                max_page_size: limits.max_page_size,
                max_tail_streams: limits.max_tail_streams,
                max_event_kinds: limits.max_event_kinds,
                max_audiences: limits.max_audiences,
                max_request_bytes: limits.max_request_bytes,
                default_join_token_ttl: join_ttl,
            },
            admin_socket: file.admin_socket.config()?,
            agent_api,
            open_check,
            health_addr,
            x509pop_ca_bundle_path,
            store,
            server_id,
            federation,
            telemetry: telemetry::telemetry(&file.telemetry)?,
            audit: file.audit.config()?,
        })
    }

    /// The event log's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    /// The actors' settings, with the key manager opened by the caller, for the server named
    /// `server_id`: on a shared log it owns only its own CAs and keys; on its own log it also
    /// adopts those recorded before servers had ids.
    pub fn server_settings(
        &self,
        key_manager: Arc<dyn KeyManager>,
        server_id: &str,
    ) -> ServerSettings {
        let mut s = ServerSettings::new(self.trust_domain.clone());
        s.entry_limits = self.actors.entry_limits.clone();
        s.max_entries = self.actors.max_entries;
        s.max_in_flight = self.actors.max_in_flight;
        s.call_timeout = self.actors.call_timeout;
        s.snapshot_every = self.actors.snapshot_every;
        s.sync_stream_buffer = self.actors.sync_stream_buffer;
        s.max_tracked_svids = self.actors.max_tracked_svids;
        s.authority = self.authority.clone();
        s.authority.owner = Some(Owner {
            server_id: server_id.to_owned(),
            adopt_unowned: !self.store.is_shared(),
        });
        s.key_manager = key_manager;
        s.federation = self.federation.settings.clone();
        s.checkpoint.every_records = self.audit.checkpoint_every_records;
        s.checkpoint.interval = self.audit.checkpoint_interval;
        s
    }
}

/// Parses the TOML text of `path`.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

fn pick<'a>(
    flag: &'a str,
    key: &'a str,
    flag_value: &Option<String>,
    file_value: &str,
) -> (&'a str, String) {
    match flag_value {
        Some(v) => (flag, v.clone()),
        None => (key, file_value.to_owned()),
    }
}

fn invalid(key: &str, value: impl ToString, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Identity errors start with the quoted input; the config error quotes it already.
fn strip_input(message: &str, input: &str) -> String {
    message
        .strip_prefix(&format!("{input:?}: "))
        .unwrap_or(message)
        .to_owned()
}

fn positive(key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(invalid(key, v, "must be at least 1"));
    }
    Ok(())
}

fn non_empty_path(key: &str, p: &Path) -> Result<(), ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(invalid(key, "", "must not be empty"));
    }
    Ok(())
}

fn parse_ip(key: &str, value: &str) -> Result<IpAddr, ConfigError> {
    let v = if value == "localhost" {
        "127.0.0.1"
    } else {
        value
    };
    v.parse().map_err(|_| {
        invalid(
            key,
            value,
            "must be an IP address such as \"0.0.0.0\", \"127.0.0.1\" or \"::\"",
        )
    })
}

fn parse_log_level(key: &str, value: &str) -> Result<LogLevel, ConfigError> {
    Ok(match value.to_ascii_lowercase().as_str() {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" | "warning" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => {
            return Err(invalid(
                key,
                value,
                "must be one of trace, debug, info, warn, error",
            ))
        }
    })
}

fn parse_log_format(key: &str, value: &str) -> Result<LogFormat, ConfigError> {
    LogFormat::parse(value)
        .ok_or_else(|| invalid(key, value, &format!("must be {}", LogFormat::ALLOWED)))
}

fn check_entry_limits(l: &EntryLimits) -> Result<(), ConfigError> {
    positive("limits.entry.max_selectors", l.max_selectors)?;
    if l.min_svid_ttl_secs > l.max_x509_svid_ttl_secs
        || l.min_svid_ttl_secs > l.max_jwt_svid_ttl_secs
    {
        return Err(invalid(
            "limits.entry.min_svid_ttl_secs",
            l.min_svid_ttl_secs,
            "must not exceed limits.entry.max_x509_svid_ttl_secs or max_jwt_svid_ttl_secs",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
