//! `log copy`: moves a single server's sled log into PostgreSQL, so that an operator can grow
//! from one server to several. Runs offline (the server stopped: sled allows one process).
//!
//! Same records, same seqs, times and hashes; the copy is verified before the command
//! reports success, and an already used database is refused.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_eventlog::pg::{PgConfig, PgLog};
use tessera_eventlog::store::sled::SledStore;
use tessera_eventlog::{EventLog, LocalLog, LogLimits, OpenCheck, SystemClock};

use super::common::{json, line, CliError, OutputFormat};
use crate::config::store::redact;

/// `log ...`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Copies this server's sled event log into an empty PostgreSQL database (offline).
    Copy(CopyArgs),
}

/// `log copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The stopped server's data directory (server.data_dir); its log is `<dataDir>/log`.
    #[arg(long = "dataDir", visible_alias = "data-dir")]
    pub data_dir: PathBuf,
    /// The PostgreSQL database to copy into, e.g. postgres://tessera@127.0.0.1:5432/tessera.
    #[arg(long = "storeURL", visible_alias = "store-url")]
    pub store_url: String,
    /// Output format.
    #[arg(long = "output", value_enum, default_value = "pretty")]
    pub output: OutputFormat,
}

const VERB: &str = "log copy";

/// Runs a `log` verb.
pub async fn run(command: LogCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        LogCommand::Copy(a) => copy(a, out).await,
    }
}

async fn copy(args: CopyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let fail = |message: String| CliError::Usage {
        verb: VERB,
        message,
    };
    let dir = args.data_dir.join("log");
    if !dir.exists() {
        return Err(fail(format!(
            "--dataDir {}: no event log at {}; point --dataDir at the server's data_dir",
            args.data_dir.display(),
            dir.display()
        )));
    }
    // The whole chain is checked before anything is copied.
    let open_dir = dir.clone();
    let source = tokio::task::spawn_blocking(move || {
        let store = SledStore::open(&open_dir)?;
        let limits = LogLimits {
            open_check: OpenCheck::FullChain,
            ..LogLimits::default()
        };
        LocalLog::open(Arc::new(store), Arc::new(SystemClock), limits)
    })
    .await
    .map_err(|e| fail(format!("opening {} did not finish: {e}", dir.display())))?
    .map_err(|e| {
        fail(format!(
            "cannot open {} ({e}); stop `tessera-server run` on this data dir first",
            dir.display()
        ))
    })?;
    let shown = redact(&args.store_url);
    let config = PgConfig {
        open_check: OpenCheck::Off,
        ..PgConfig::new(args.store_url.clone(), args.data_dir.join("snapshots"))
    };
    let target = PgLog::open(config, Arc::new(SystemClock))
        .await
        .map_err(|e| fail(format!("--storeURL {shown}: {e}")))?;
    let copied = target.import(&source).await;
    let head = target.head();
    target.close().await;
    let _ = tokio::task::spawn_blocking(move || source.close()).await;
    let copied = copied.map_err(|e| fail(format!("into {shown}: {e}")))?;
    match args.output {
        OutputFormat::Json => json(
            out,
            &json!({
                "copied": copied,
                "store_url": shown,
                "head": { "seq": head.seq, "hash": head.hash.to_string() },
            }),
        ),
        OutputFormat::Pretty => {
            line(
                out,
                format!(
                    "copied {copied} records into {shown}; verified: head seq {} hash {}",
                    head.seq, head.hash
                ),
            );
            line(
                out,
                "next: start every server with [store] backend = \"postgres\" and this url (or --storeURL)",
            );
        }
    }
    Ok(())
}
