//! `tessera-server`: the server process (`run`) and its admin CLI (every other verb).
//!
//! `main` only parses the command line, sets up logging and a runtime, and turns errors into
//! a message on stderr and exit code 1 (the one place `anyhow` is used). Everything else lives
//! in the library (`tessera_server`).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tessera_server::cli::{self, Cli, Command, RunArgs};
use tessera_server::config::Config;
use tracing_subscriber::EnvFilter;

// Start-up decodes and indexes the whole registry (a million entries in the benchmark): glibc
// malloc spent a large share of that consolidating free lists; mimalloc does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let config = Config::load(args.config.as_deref(), &args.overrides())
        .map_err(|e| anyhow::anyhow!("run: {e}"))?;
    let filter = EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| EnvFilter::new(config.log_level.directive()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-server")
        .build()
        .context("run: cannot start the async runtime")?;
    runtime
        .block_on(tessera_server::daemon::run(config))
        .map_err(|e| anyhow::anyhow!("run: {e}"))
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
