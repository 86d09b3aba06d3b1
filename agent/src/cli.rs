//! The `tessera-agent` command line: SPIRE's verbs and flag names. Every camelCase flag is also
//! accepted in kebab-case (`--socketPath` / `--socket-path`) and, as in SPIRE, with a single
//! dash (`-socketPath`). Client verbs talk to the Workload API over its Unix socket with the
//! generated client and the `workload.spiffe.io: true` header.

pub mod api;
pub mod client;
pub mod healthcheck;
pub mod validate;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use self::client::CliError;
use crate::config::Overrides;

/// `tessera-agent`: the SPIFFE agent of a node.
#[derive(Debug, Parser)]
#[command(name = "tessera-agent", version, about, propagate_version = true)]
pub struct Cli {
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the agent.
    Run(RunArgs),
    /// Checks that the agent answers on its Workload API socket.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Checks the configuration as `run` would load it, without starting anything.
    Validate(validate::ValidateArgs),
    /// Calls the Workload API as a workload would.
    #[command(subcommand)]
    Api(api::ApiCommand),
}

/// `run`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Path to a TOML config file (see conf/agent.toml); defaults apply without one.
    #[arg(long = "config")]
    pub config: Option<PathBuf>,
    /// Directory of the agent's SVID, key and cache (agent.data_dir).
    #[arg(long = "dataDir", visible_alias = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Join token to attest the node with (agent.join_token).
    #[arg(long = "joinToken", visible_alias = "join-token")]
    pub join_token: Option<String>,
    /// A server's host or host:port (agent.server_address); repeat the flag, or separate
    /// entries with commas, for several servers.
    #[arg(long = "serverAddress", visible_alias = "server-address")]
    pub server_address: Vec<String>,
    /// The servers' agent API port, for addresses without one (agent.server_port).
    #[arg(long = "serverPort", visible_alias = "server-port")]
    pub server_port: Option<u16>,
    /// Path of the Workload API socket (agent.socket_path).
    #[arg(long = "socketPath", visible_alias = "socket-path")]
    pub socket_path: Option<PathBuf>,
    /// The trust domain (agent.trust_domain).
    #[arg(long = "trustDomain", visible_alias = "trust-domain")]
    pub trust_domain: Option<String>,
    /// PEM bundle that authenticates the server at bootstrap (agent.trust_bundle_path).
    #[arg(long = "trustBundle", visible_alias = "trust-bundle")]
    pub trust_bundle: Option<PathBuf>,
    /// Trust the server at bootstrap without a bundle (agent.insecure_bootstrap).
    #[arg(long = "insecureBootstrap", visible_alias = "insecure-bootstrap")]
    pub insecure_bootstrap: bool,
    /// trace, debug, info, warn or error (agent.log_level).
    #[arg(long = "logLevel", visible_alias = "log-level")]
    pub log_level: Option<String>,
    /// text or json: one JSON object per line (agent.log_format).
    #[arg(long = "logFormat", visible_alias = "log-format")]
    pub log_format: Option<String>,
}

impl RunArgs {
    /// The flags as config overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            join_token: self.join_token.clone(),
            server_address: self.server_address.clone(),
            server_port: self.server_port,
            socket_path: self.socket_path.clone(),
            trust_domain: self.trust_domain.clone(),
            trust_bundle_path: self.trust_bundle.clone(),
            insecure_bootstrap: self.insecure_bootstrap,
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

/// SPIRE writes long flags with one dash (`-socketPath`); clap wants two:
/// [`tessera_edge::cli::normalize_args`].
pub use tessera_edge::cli::normalize_args;

/// Runs a client verb, writing its output to `out`. `run` is not a client verb: `main`
/// handles it.
pub async fn dispatch(command: Command, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        Command::Run(_) => Err(CliError::Usage {
            verb: "run",
            message: "run is handled by main".into(),
        }),
        Command::Healthcheck(a) => healthcheck::run(a, out).await,
        Command::Validate(a) => validate::run(a, out).await,
        Command::Api(c) => api::run(c, out).await,
    }
}

/// Resolves on Ctrl-C or SIGTERM (`api watch` stops on it).
pub use tessera_edge::shutdown::stop_requested as stop_signal;

#[cfg(test)]
mod tests;
