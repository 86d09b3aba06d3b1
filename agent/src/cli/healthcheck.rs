//! `healthcheck`: asks the gRPC health service on the Workload API socket whether the agent
//! serves.
//!
//! `--verbose` (SPIRE's flag) prints each step: the socket path and where it came from
//! (`--socketPath`, `SPIFFE_ENDPOINT_SOCKET` or the default), whether it exists, the
//! connection and the status; a failed step is printed before the error.

use std::io::Write;
use std::path::Path;

use clap::Args;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::client::{channel, rpc, within, CliError, SocketArgs, ENDPOINT_ENV};

/// `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Accepted for SPIRE compatibility; the check is always the agent's own health.
    #[arg(long = "shallow")]
    pub shallow: bool,
    /// Print what is checked: the socket, the connection, the status.
    #[arg(long = "verbose")]
    pub verbose: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Runs `healthcheck`.
pub async fn run(a: HealthcheckArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "healthcheck";
    let target = a.socket.target(VERB)?;
    let mut say = |text: String| {
        if a.verbose {
            let _ = writeln!(out, "{text}");
        }
    };
    say(format!(
        "Checking agent health at {}",
        target.path.display()
    ));
    let from = if a.socket.socket_path.is_some() {
        "--socketPath".to_owned()
    } else if std::env::var_os(ENDPOINT_ENV).is_some_and(|v| !v.is_empty()) {
        format!("${ENDPOINT_ENV}")
    } else {
        "the default".to_owned()
    };
    say(format!(
        "Socket: {} (from {from})",
        socket_state(&target.path)
    ));
    let connected = within(VERB, target.timeout, channel(VERB, &target.path))
        .await
        .and_then(|c| c);
    let channel = match connected {
        Ok(c) => c,
        Err(e) => {
            say(format!("Connect: failed ({e})"));
            return Err(e);
        }
    };
    say("Connect: ok".into());
    let answer = within(
        VERB,
        target.timeout,
        HealthClient::new(channel).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .and_then(|r| r.map_err(rpc(VERB)));
    let status = match answer {
        Ok(r) => r.into_inner().status(),
        Err(e) => {
            say(format!("Health check: failed ({e})"));
            return Err(e);
        }
    };
    say(format!("Agent (service \"\"): {}", status.as_str_name()));
    if status == ServingStatus::Serving {
        let _ = writeln!(out, "Agent is healthy.");
        Ok(())
    } else {
        Err(CliError::Failed {
            verb: VERB,
            message: format!("agent is unhealthy: {}", status.as_str_name()),
        })
    }
}

fn socket_state(path: &Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => format!("{} is a Unix socket", path.display()),
        Ok(_) => format!("{} exists but is not a Unix socket", path.display()),
        Err(e) => format!("{}: {e}", path.display()),
    }
}
