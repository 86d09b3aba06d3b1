//! The skeleton both binaries' `main` share: logging set-up, the runtimes, the stop signals
//! and how an error becomes a message on stderr and an exit code.
//!
//! - [`normalize_args`]: SPIRE's single-dash long flags (`-spiffeID`) for clap.
//! - [`init_tracing_as`]: logs to stderr at the configured level, `TESSERA_LOG` (an
//!   `EnvFilter` directive) overriding it, as text (colours only on a terminal) or as one JSON
//!   object per line ([`LogFormat`], SPIRE's `log_format`); [`init_tracing`] is text;
//!   [`init_tracing_with`] also exports spans over OTLP when `[telemetry]` says so.
//! - [`run_daemon`]: a multi-threaded runtime, the SIGINT/SIGTERM handlers of
//!   [`crate::shutdown::Signals`] installed before the process starts, and the process run
//!   until it returns; a second stop signal, or the grace running out, ends it at once.
//! - [`run_client`]: a single-threaded runtime for a client verb.
//! - [`exit_code`]: success is 0; any error is printed with its causes
//!   (`run: cannot open the event log: ...`, see [`Chain`]) and gives [`EXIT_FAILURE`].

use std::error::Error;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::shutdown::{Shutdown, SignalError, Signals};
use crate::telemetry::{pipeline, Telemetry, TelemetryConfig, TelemetryError};

/// The environment variable whose `EnvFilter` directive overrides the configured log level.
pub const LOG_ENV: &str = "TESSERA_LOG";

/// The exit code of every failure (bad flags exit with clap's own code, 2).
pub const EXIT_FAILURE: u8 = 1;

/// How long, after a runtime is left, its blocking tasks get before the process exits anyway.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// Why a process run by [`run_daemon`] or [`run_client`] ended in error.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E> {
    /// The async runtime could not be built (out of threads or file descriptors).
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The stop-signal handlers could not be installed.
    #[error(transparent)]
    Signals(#[from] SignalError),
    /// A second stop signal came, or the graceful stop outlasted its grace.
    #[error("stopped at once: a second stop signal, or the graceful stop took longer than {}s", .grace.as_secs())]
    Forced {
        /// The grace the graceful stop had.
        grace: Duration,
    },
    /// The process itself failed (its message already names the causes, as Tessera's errors
    /// do).
    #[error("{0}")]
    Failed(E),
}

/// SPIRE writes long flags with one dash (`-spiffeID`, `-socketPath`); clap wants two.
/// Rewrites `-name` and `-name=value` (a letter, then at least one more character) to
/// `--name...`, up to a bare `--`; short flags (`-h`), negative numbers (`-5`) and arguments
/// that are not UTF-8 are left alone. A value that itself starts with a dash and a letter must
/// be written `--flag=-value`.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut seen_end = false;
    args.into_iter()
        .map(|arg| {
            let Some(s) = arg.to_str().filter(|_| !seen_end) else {
                return arg;
            };
            if s == "--" {
                seen_end = true;
                return arg;
            }
            let b = s.as_bytes();
            if b.len() > 2 && b[0] == b'-' && b[1].is_ascii_alphabetic() {
                return OsString::from(format!("-{s}"));
            }
            arg
        })
        .collect()
}

/// How log lines are written (SPIRE's `log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event: time, level, target, message, `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// and the spans the event happened in.
    Json,
}

impl LogFormat {
    /// The values a config key or flag accepts, for error messages.
    pub const ALLOWED: &'static str = "\"text\" or \"json\"";

    /// Parses `text` or `json` (any case, as SPIRE); `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("text") {
            Some(Self::Text)
        } else if value.eq_ignore_ascii_case("json") {
            Some(Self::Json)
        } else {
            None
        }
    }

    /// The config value naming this format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// [`init_tracing_as`] in [`LogFormat::Text`].
pub fn init_tracing(default_directive: &str) {
    init_tracing_as(default_directive, LogFormat::Text);
}

/// Sets up logging to stderr in `format`: `default_directive` (the config's level, e.g.
/// `info`) unless `TESSERA_LOG` is set. A second call does nothing (the first subscriber
/// stays).
pub fn init_tracing_as(default_directive: &str, format: LogFormat) {
    let _ = install(default_directive, format, None);
}

/// [`init_tracing_as`], and, when `telemetry` names an OTLP endpoint, every INFO-or-finer span
/// of Tessera exported there (whatever the log level: the log filter applies to the log
/// lines only). Keep the returned guard and call [`Telemetry::shutdown`] once the process has
/// stopped, so the last spans are sent.
pub fn init_tracing_with(
    default_directive: &str,
    format: LogFormat,
    telemetry: &TelemetryConfig,
) -> Result<Telemetry, TelemetryError> {
    let (guard, otel) = pipeline::layer::<Registry>(telemetry)?;
    let otel = otel.map(|layer| layer.with_filter(EnvFilter::new(SPAN_DIRECTIVE)));
    // A second call keeps the first subscriber (as init_tracing_as does).
    let _ = install(default_directive, format, otel.map(Layer::boxed));
    Ok(guard)
}

/// Which spans are exported: Tessera's own and the RPC spans, at INFO; not the HTTP/2 and
/// TLS libraries' (nor the exporter's own gRPC client's).
const SPAN_DIRECTIVE: &str = "warn,tessera_edge=info,tessera_server=info,tessera_agent=info,\
     tessera_actors=info,tessera_eventlog=info";

fn install(
    default_directive: &str,
    format: LogFormat,
    otel: Option<Box<dyn Layer<Registry> + Send + Sync>>,
) -> Result<(), TryInitError> {
    let filter =
        EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default_directive));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        // A collector parses every line: no colour codes, and the current span's fields.
        LogFormat::Json => fmt.json().with_ansi(false).boxed(),
    };
    tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter))
        .try_init()
}

/// Runs a long-lived process: builds a multi-threaded runtime whose threads are named
/// `thread_name`, installs the stop signals (grace `grace`), and runs `process(shutdown)`
/// until it returns. `shutdown` fires on the first SIGINT or SIGTERM; on a second one, or
/// `grace` after the first, the process is abandoned and [`RunError::Forced`] returned.
pub fn run_daemon<F, Fut, E>(
    thread_name: &str,
    grace: Duration,
    process: F,
) -> Result<(), RunError<E>>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(thread_name)
        .build()
        .map_err(RunError::Runtime)?;
    let outcome = runtime.block_on(async {
        let signals = Signals::install(grace)?;
        tokio::select! {
            outcome = process(signals.shutdown.clone()) => outcome.map_err(RunError::Failed),
            () = signals.forced.wait() => Err(RunError::Forced { grace }),
        }
    });
    // Tasks still running (a forced stop) must not hold the exit up.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    outcome
}

/// Runs a client verb on a single-threaded runtime.
pub fn run_client<Fut, E>(verb: Fut) -> Result<(), RunError<E>>
where
    Fut: Future<Output = Result<(), E>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let outcome = runtime.block_on(verb).map_err(RunError::Failed);
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    outcome
}

/// The process's exit code for `outcome`; an error is printed on stderr first (format it
/// with [`Chain`] to show its causes).
pub fn exit_code(outcome: Result<(), impl fmt::Display>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// An error and its causes on one line, `outer: inner: root`; a cause whose text the outer
/// message already ends with (`#[error("...: {0}")]` and `#[source]` both) is not repeated.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let more = e.to_string();
            if !text.ends_with(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            cause = e.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests;
