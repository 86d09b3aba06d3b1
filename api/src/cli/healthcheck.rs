//! `healthcheck`: asks the admin socket's gRPC health service whether the server serves.
//!
//! `--verbose` (SPIRE's flag) prints each step: the socket path and whether it exists, the
//! connection, the overall status and each admin service's. Only the overall status decides
//! the exit code; a service the server does not register is reported, not failed.

use std::io::Write;
use std::path::Path;

use clap::Args;
use serde_json::{json, Map, Value};
use tessera_proto::spire::api::server as spire;
use tessera_proto::tessera::eventlog::v1::event_log_server;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::common::{code_name, connect, json, line, CliError, ClientArgs, OutputFormat};

const VERB: &str = "healthcheck";

/// The admin API's services, as the server registers them with the health service.
const SERVICES: &[&str] = &[
    spire::entry::v1::entry_server::SERVICE_NAME,
    spire::agent::v1::agent_server::SERVICE_NAME,
    spire::bundle::v1::bundle_server::SERVICE_NAME,
    spire::svid::v1::svid_server::SERVICE_NAME,
    spire::trustdomain::v1::trust_domain_server::SERVICE_NAME,
    event_log_server::SERVICE_NAME,
];

/// `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Accepted for SPIRE compatibility; the check is always the server's own health.
    #[arg(long = "shallow")]
    pub shallow: bool,
    /// Print what is checked: the socket, the connection, each service's status.
    #[arg(long = "verbose")]
    pub verbose: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `healthcheck`.
pub async fn run(a: HealthcheckArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let socket = a.client.socket_path.as_path();
    let pretty_verbose = a.verbose && a.client.output == OutputFormat::Pretty;
    if pretty_verbose {
        line(
            out,
            format!("Checking server health at {}", socket.display()),
        );
        line(out, format!("Socket: {}", socket_state(socket)));
    }
    let channel = match connect(VERB, socket).await {
        Ok(c) => c,
        Err(e) => {
            if pretty_verbose {
                line(out, format!("Connect: failed ({e})"));
            }
            return Err(e);
        }
    };
    if pretty_verbose {
        line(out, "Connect: ok");
    }
    let mut client = HealthClient::new(channel);
    let overall = check(&mut client, "").await;
    if pretty_verbose {
        line(out, format!("Server (service \"\"): {}", shown(&overall)));
    }
    let mut services = Map::new();
    if a.verbose {
        for name in SERVICES {
            let got = check(&mut client, name).await;
            if pretty_verbose {
                line(out, format!("Service {name}: {}", shown(&got)));
            }
            services.insert((*name).to_owned(), Value::String(shown(&got)));
        }
    }
    let healthy = matches!(overall, Ok(ServingStatus::Serving));
    if a.client.output == OutputFormat::Json {
        let mut doc = json!({
            "healthy": healthy,
            "socket_path": socket.display().to_string(),
            "status": shown(&overall),
        });
        if a.verbose {
            doc["services"] = Value::Object(services);
        }
        json(out, &doc);
    }
    match overall {
        Ok(ServingStatus::Serving) => {
            if a.client.output == OutputFormat::Pretty {
                line(out, "Server is healthy.");
            }
            Ok(())
        }
        Ok(status) => Err(CliError::Failed {
            verb: VERB,
            message: format!("server is unhealthy: {}", status.as_str_name()),
        }),
        Err(status) => Err(CliError::Rpc { verb: VERB, status }),
    }
}

async fn check(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status())
}

fn shown(got: &Result<ServingStatus, tonic::Status>) -> String {
    match got {
        Ok(s) => s.as_str_name().to_owned(),
        Err(s) if s.code() == tonic::Code::NotFound => "NOT_REGISTERED".into(),
        Err(s) => format!("{}: {}", code_name(s.code()), s.message()),
    }
}

fn socket_state(path: &Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => format!("{} (a Unix socket)", path.display()),
        Ok(_) => format!("{} exists but is not a Unix socket", path.display()),
        Err(e) => format!("{}: {e}", path.display()),
    }
}
