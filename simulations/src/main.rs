//! `tessera-sim`: run a scenario in virtual time and report it (`run`), or fold a server's log
//! up to a point and print the state (`replay`).
//!
//! `main` parses the command line, calls the library (`tessera_sim::engine`,
//! `tessera_sim::report`, `tessera_sim::replay`) and writes files. It is the only place that
//! reads the wall clock and the process's peak RSS, once per run, for `run.json` and the text
//! report; the JSON report never sees them.
//!
//! Exit codes: 0 the run completed with no violation (or the replay printed), 1 a checker
//! found a violation (printed first), 2 bad input (scenario file, flags, output directory,
//! the replayed log), 3 the simulator could not carry out a valid scenario (a bug).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use tessera_sim::engine::{self, Progress, SimError};
use tessera_sim::replay::{self, ReplayArgs};
use tessera_sim::report::{self, RunInfo, Summary};
use tessera_sim::scenario::{Scenario, ScenarioError};

// A 100,000-agent run allocates and frees millions of small cache entries; mimalloc keeps
// that fast and the peak RSS low, as in the other binaries.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BAD_INPUT: u8 = 2;
const SIM_FAILED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "tessera-sim",
    version,
    about = "Simulate a Tessera fleet in virtual time, or replay a server's log."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario (TOML) to its end or its first checker violation, print the report.
    Run(RunArgs),
    /// Fold a server's log up to a seq or a time and print the state (read only).
    Replay(ReplayArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The scenario file (see simulations/scenarios/ for examples).
    #[arg(value_name = "SCENARIO.toml")]
    scenario: PathBuf,
    /// Seed of the run (default: the scenario's `seed`); the same seed gives the same report.
    #[arg(long = "seed", value_name = "N")]
    seed: Option<u64>,
    /// Also write report.json, run.json, report.txt, signing.svg and queue.svg into DIR
    /// (created if missing).
    #[arg(long = "out", value_name = "DIR")]
    out: Option<PathBuf>,
}

/// A failure, with its exit code and the message for stderr.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn bad_input(message: String) -> Self {
        Self {
            code: BAD_INPUT,
            message,
        }
    }
}

fn main() -> ExitCode {
    let args = tessera_edge::cli::normalize_args(std::env::args_os());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // clap prints help and version to stdout (exit 0) and usage errors to stderr (exit 2).
        Err(e) => e.exit(),
    };
    tessera_edge::cli::init_tracing("warn");
    let outcome = match cli.command {
        Command::Run(args) => run(&args),
        Command::Replay(args) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            replay::run(&args, &mut out)
                .map(|()| 0)
                .map_err(|e| Failure::bad_input(e.to_string()))
        }
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `run`: returns 0 or 1 (violation) once the report is printed and written.
fn run(args: &RunArgs) -> Result<u8, Failure> {
    // The run's wall time, for run.json and the text report only: never part of the
    // simulation, whose clock is virtual.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let scenario = Scenario::from_file(&args.scenario).map_err(|e| scenario_failure(&e))?;
    let seed = args.seed.unwrap_or(scenario.seed);
    // Fail on an unusable output directory before a long run, not after it.
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::bad_input(format!(
                "tessera-sim run: --out {}: cannot create the directory: {e}; pass a writable directory",
                dir.display()
            ))
        })?;
    }

    let show_progress = std::io::stderr().is_terminal();
    let mut progress = |p: Progress| {
        if show_progress {
            eprint!(
                "\rvirtual {} of {}, {} events ",
                report::format_virtual_time(p.virtual_ms),
                report::format_virtual_time(p.total_ms),
                p.events
            );
        }
    };
    let metrics = engine::run_with_progress(&scenario, seed, &mut progress).map_err(|e| match e {
        SimError::Scenario(e) => scenario_failure(&e),
        other => Failure {
            code: SIM_FAILED,
            message: format!(
                "tessera-sim run: the simulator could not carry out {} with seed {seed}: {other} (a bug: report it with the scenario and the seed)",
                args.scenario.display()
            ),
        },
    })?;
    if show_progress {
        eprintln!();
    }

    let summary = Summary::from_metrics(&metrics);
    let info = RunInfo {
        wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        peak_rss_bytes: report::peak_rss_bytes().unwrap_or(0),
        scenario_file: Some(args.scenario.display().to_string()),
    };
    let text = report::render_text(&summary, Some(&info));
    {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        // A closed stdout (`| head`) must not hide the exit code or the files.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    if let Some(dir) = &args.out {
        write_files(dir, &metrics, &info, &text)?;
    }
    Ok(u8::from(metrics.violation.is_some()))
}

fn scenario_failure(e: &ScenarioError) -> Failure {
    let fix = match e {
        ScenarioError::Read { .. } => {
            "; pass the path of a scenario TOML file (examples in simulations/scenarios/)"
        }
        _ => "",
    };
    Failure::bad_input(format!("tessera-sim run: {e}{fix}"))
}

fn write_files(
    dir: &Path,
    metrics: &tessera_sim::metrics::RunMetrics,
    info: &RunInfo,
    text: &str,
) -> Result<(), Failure> {
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| {
            Failure::bad_input(format!(
                "tessera-sim run: --out: cannot write {}: {e}",
                path.display()
            ))
        })
    };
    write("report.json", &report::to_json(metrics))?;
    let mut run_json = serde_json::to_string_pretty(info).map_err(|e| Failure {
        code: SIM_FAILED,
        message: format!("tessera-sim run: run.json: {e}"),
    })?;
    run_json.push('\n');
    write("run.json", &run_json)?;
    write("report.txt", text)?;
    report::plot_svg(metrics, dir).map_err(|e| Failure::bad_input(format!("tessera-sim run: {e}")))
}
