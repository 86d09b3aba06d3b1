//! The `tessera-server` command line: SPIRE's verbs and flag names. Every camelCase flag is
//! also accepted in kebab-case (`--spiffeID` / `--spiffe-id`), and, as in SPIRE, with a single
//! dash (`-spiffeID`). Client verbs talk to the admin API over its Unix socket.

pub mod agent;
pub mod bundle;
pub mod common;
pub mod entry;
pub mod events;
pub mod federation;
pub mod healthcheck;
pub mod localauthority;
pub mod log;
pub mod render;
pub mod svid;
pub mod upstreamauthority;
pub mod validate;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use self::common::CliError;
use crate::config::Overrides;

/// `tessera-server`: the root of trust of a SPIFFE trust domain.
#[derive(Debug, Parser)]
#[command(name = "tessera-server", version, about, propagate_version = true)]
pub struct Cli {
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server.
    Run(RunArgs),
    /// Checks that the server answers on its admin socket.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Checks the configuration as `run` would load it, without starting anything.
    Validate(validate::ValidateArgs),
    /// Registration entries.
    #[command(subcommand)]
    Entry(entry::EntryCommand),
    /// Attested agents.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Join tokens.
    #[command(subcommand)]
    Token(agent::TokenCommand),
    /// The trust bundle, and federated bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Federation relationships with foreign trust domains.
    #[command(subcommand)]
    Federation(federation::FederationCommand),
    /// X509-SVIDs.
    #[command(subcommand)]
    X509(svid::X509Command),
    /// JWT-SVIDs.
    #[command(subcommand)]
    Jwt(svid::JwtCommand),
    /// The event log: tail, show and verify records.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// The event log's storage: copy a sled log into PostgreSQL (offline).
    #[command(subcommand)]
    Log(log::LogCommand),
    /// This server's X.509 CA and JWT key: forced rotation (show, prepare, activate, taint,
    /// revoke).
    #[command(subcommand, name = "localauthority")]
    LocalAuthority(localauthority::LocalAuthorityCommand),
    /// The upstream root that signed this server's old CAs: taint, revoke.
    #[command(subcommand, name = "upstreamauthority")]
    UpstreamAuthority(upstreamauthority::UpstreamAuthorityCommand),
}

/// `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Path to a TOML config file (see conf/server.toml); defaults apply without one.
    #[arg(long = "config")]
    pub config: Option<PathBuf>,
    /// The trust domain (server.trust_domain).
    #[arg(long = "trustDomain", visible_alias = "trust-domain")]
    pub trust_domain: Option<String>,
    /// Directory of the event log and keys (server.data_dir).
    #[arg(long = "dataDir", visible_alias = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Path of the admin API socket (server.socket_path).
    #[arg(long = "socketPath", visible_alias = "socket-path")]
    pub socket_path: Option<PathBuf>,
    /// Address of the agent API (server.bind_address).
    #[arg(long = "bindAddress", visible_alias = "bind-address")]
    pub bind_address: Option<String>,
    /// Port of the agent API (server.bind_port); 0 picks a free one.
    #[arg(long = "serverPort", visible_alias = "server-port")]
    pub server_port: Option<u16>,
    /// trace, debug, info, warn or error (server.log_level).
    #[arg(long = "logLevel", visible_alias = "log-level")]
    pub log_level: Option<String>,
    /// text or json: one JSON object per line (server.log_format).
    #[arg(long = "logFormat", visible_alias = "log-format")]
    pub log_format: Option<String>,
    /// A PostgreSQL event log shared with other servers (store.url; selects
    /// store.backend = "postgres"), e.g. postgres://tessera@127.0.0.1:5432/tessera.
    #[arg(long = "storeURL", visible_alias = "store-url")]
    pub store_url: Option<String>,
    /// This server's name in events and metrics (server.server_id).
    #[arg(long = "serverID", visible_alias = "server-id")]
    pub server_id: Option<String>,
}

impl RunArgs {
    /// The flags as config overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            trust_domain: self.trust_domain.clone(),
            data_dir: self.data_dir.clone(),
            socket_path: self.socket_path.clone(),
            bind_address: self.bind_address.clone(),
            bind_port: self.server_port,
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            store_url: self.store_url.clone(),
            server_id: self.server_id.clone(),
        }
    }
}

/// SPIRE writes long flags with one dash (`-spiffeID`); clap wants two:
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
        Command::Entry(c) => entry::run(c, out).await,
        Command::Agent(c) => agent::run(c, out).await,
        Command::Token(c) => agent::run_token(c, out).await,
        Command::Bundle(c) => bundle::run(c, out).await,
        Command::Federation(c) => federation::run(c, out).await,
        Command::X509(c) => svid::run_x509(c, out).await,
        Command::Jwt(c) => svid::run_jwt(c, out).await,
        Command::Events(c) => events::run(c, out).await,
        Command::Log(c) => log::run(c, out).await,
        Command::LocalAuthority(c) => localauthority::run(c, out).await,
        Command::UpstreamAuthority(c) => upstreamauthority::run(c, out).await,
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(normalize_args(args.iter().map(OsString::from)))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn camel_kebab_and_single_dash_flags_all_parse() {
        for args in [
            [
                "tessera-server",
                "entry",
                "create",
                "--spiffeID",
                "spiffe://a.org/x",
            ],
            [
                "tessera-server",
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://a.org/x",
            ],
            [
                "tessera-server",
                "entry",
                "create",
                "-spiffeID",
                "spiffe://a.org/x",
            ],
        ] {
            let cli = parse(&args).unwrap();
            let Command::Entry(entry::EntryCommand::Create(a)) = cli.command else {
                panic!("wrong verb");
            };
            assert_eq!(a.fields.spiffe_id.as_deref(), Some("spiffe://a.org/x"));
        }
        let cli = parse(&[
            "tessera-server",
            "run",
            "-trustDomain=b.org",
            "--server-port",
            "0",
            "--dataDir",
            "/d",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("wrong verb")
        };
        let o = r.overrides();
        assert_eq!(o.trust_domain.as_deref(), Some("b.org"));
        assert_eq!(o.bind_port, Some(0));
        assert_eq!(o.data_dir, Some(PathBuf::from("/d")));
    }

    #[test]
    fn repeatable_and_optional_bool_flags() {
        let cli = parse(&[
            "tessera-server",
            "entry",
            "create",
            "--selector",
            "unix:uid:0",
            "--selector",
            "unix:gid:0",
            "--admin",
            "--downstream=false",
            "--output",
            "json",
        ])
        .unwrap();
        let Command::Entry(entry::EntryCommand::Create(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.fields.selectors.len(), 2);
        assert_eq!(a.fields.admin, Some(true));
        assert_eq!(a.fields.downstream, Some(false));
        assert_eq!(a.client.output, common::OutputFormat::Json);
    }

    #[test]
    fn normalize_leaves_values_short_flags_and_the_rest_alone() {
        let got = normalize_args(["x", "-h", "-5", "--a", "-bc", "--", "-de"].map(OsString::from));
        assert_eq!(
            got,
            ["x", "-h", "-5", "--a", "--bc", "--", "-de"].map(OsString::from)
        );
    }
}
