//! `healthcheck`: asks the gRPC health service on the Workload API socket whether the agent
//! serves.

use std::io::Write;

use clap::Args;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::client::{channel, rpc, within, CliError, SocketArgs};

/// `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Accepted for SPIRE compatibility; the check is always the agent's own health.
    #[arg(long = "shallow")]
    pub shallow: bool,
    /// Print what is checked.
    #[arg(long = "verbose")]
    pub verbose: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Runs `healthcheck`.
pub async fn run(a: HealthcheckArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "healthcheck";
    let target = a.socket.target(VERB)?;
    if a.verbose {
        let _ = writeln!(out, "Checking agent health at {}", target.path.display());
    }
    let channel = within(VERB, target.timeout, channel(VERB, &target.path)).await??;
    let status = within(
        VERB,
        target.timeout,
        HealthClient::new(channel).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await?
    .map_err(rpc(VERB))?
    .into_inner()
    .status();
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
