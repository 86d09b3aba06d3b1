//! `tessera-server`: the server process (`run`) and its admin CLI (every other verb).
//!
//! `main` only parses the command line and hands over to the skeleton both binaries share
//! ([`tessera_edge::cli`]: logging, runtimes, stop signals, error printing and exit codes).
//! Everything else lives in the library (`tessera_server`).

use std::process::ExitCode;

use clap::Parser;
use tessera_edge::cli::{exit_code, init_tracing_with, run_client, run_daemon, Chain};
use tessera_edge::shutdown::DEFAULT_GRACE;
use tessera_server::cli::{self, Cli, Command, RunArgs};
use tessera_server::config::Config;

// Start-up decodes and indexes the whole registry (a million entries in the benchmark): glibc
// malloc spent a large share of that consolidating free lists; mimalloc does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(cli::normalize_args(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    exit_code(match cli.command {
        Command::Run(args) => run(args),
        command => client(command),
    })
}

fn run(args: RunArgs) -> Result<(), String> {
    let config =
        Config::load(args.config.as_deref(), &args.overrides()).map_err(|e| format!("run: {e}"))?;
    let telemetry = init_tracing_with(
        config.log_level.directive(),
        config.log_format,
        &config.telemetry,
    )
    .map_err(|e| format!("run: {e}"))?;
    let outcome = run_daemon("tessera-server", DEFAULT_GRACE, |shutdown| {
        tessera_server::daemon::run(config, shutdown)
    })
    .map_err(|e| format!("run: {}", Chain(&e)));
    // The last spans (those of the shutdown itself) go out before the process exits.
    telemetry.shutdown();
    outcome
}

fn client(command: Command) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_client(cli::dispatch(command, &mut out)).map_err(|e| Chain(&e).to_string())
}
