//! `tessera-agent`: the agent process (`run`) and its Workload API client verbs
//! (`healthcheck`, `api ...`).
//!
//! `main` only parses the command line, sets up logging and a runtime, and turns errors into
//! a message on stderr and exit code 1 (the one place `anyhow` is used). Everything else lives
//! in the library (`tessera_agent`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tessera_agent::cli::{self, Cli, Command, RunArgs};
use tessera_agent::config::AgentConfig;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(cli::normalize_args(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let outcome = match cli.command {
        Command::Run(args) => run(args),
        command => client(command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = AgentConfig::load(args.config.as_deref(), &args.overrides())
        .map_err(|e| anyhow::anyhow!("run: {e}"))?;
    let filter = EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| EnvFilter::new(config.log_level.directive()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-agent")
        .build()
        .context("run: cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = tessera_agent::shutdown::from_future(cli::stop_signal());
        tessera_agent::run::run(config, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("run: {e}"))
    })
}

fn client(command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    runtime.block_on(cli::dispatch(command, &mut out))?;
    Ok(())
}
