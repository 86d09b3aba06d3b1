//! `healthcheck`: asks the admin socket's gRPC health service whether the server serves.

use std::io::Write;

use clap::Args;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::common::{connect, line, rpc, CliError, ClientArgs};

/// `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Accepted for SPIRE compatibility; the check is always the server's own health.
    #[arg(long = "shallow")]
    pub shallow: bool,
    /// Print what is checked.
    #[arg(long = "verbose")]
    pub verbose: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `healthcheck`.
pub async fn run(a: HealthcheckArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "healthcheck";
    if a.verbose {
        line(
            out,
            format!(
                "Checking server health at {}",
                a.client.socket_path.display()
            ),
        );
    }
    let mut client = HealthClient::new(connect(VERB, &a.client.socket_path).await?);
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner()
        .status();
    if status == ServingStatus::Serving {
        line(out, "Server is healthy.");
        Ok(())
    } else {
        Err(CliError::Failed {
            verb: VERB,
            message: format!("server is unhealthy: {}", status.as_str_name()),
        })
    }
}
