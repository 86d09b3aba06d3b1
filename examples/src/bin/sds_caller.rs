//! `sds-caller`: the caller again, but its certificate and trust come from the agent over
//! Envoy SDS instead of the Workload API: a stand-in for an Envoy sidecar configured with an
//! SDS cluster pointing at the agent's socket and the secret names `default` and `ALL` (or
//! `ROOTCA`). Everything after the secrets arrive is the same code as `caller`.
//!
//! ```text
//! sds-caller --socket /tmp/agent.sock --trust ALL --connect 127.0.0.1:7443 \
//!     --server-id spiffe://platform.example/inside/service --seconds 10
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tessera_examples::caller::{run, say, CallArgs};
use tessera_examples::sds;

/// Longest wait for the agent to have an identity for this workload.
const IDENTITY_WAIT: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_millis(250);

#[derive(Debug, Parser)]
#[command(about = "Calls the inside service over mTLS with secrets from the agent's SDS.")]
struct Args {
    /// The agent's socket (the Workload API socket; SDS is served on it).
    #[arg(long)]
    socket: PathBuf,
    /// Name of the SVID secret, as in Envoy's tls_certificate_sds_secret_configs.
    #[arg(long, default_value = "default")]
    svid: String,
    /// Name of the validation secret: ALL (every bundle, federated ones too) or ROOTCA (the
    /// agent's own trust domain only).
    #[arg(long, default_value = "ALL")]
    trust: String,
    #[command(flatten)]
    call: CallArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let name = args.call.name.clone();
    match call(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            say(&name, &format!("FAILED: {e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn call(args: Args) -> anyhow::Result<()> {
    let material = args.call.material();
    let names = vec![args.svid.clone(), args.trust.clone()];
    // Like Envoy, retry while the agent has no identity for us yet (a new entry takes a
    // moment to reach the agent), for at most IDENTITY_WAIT.
    let mut waited = Duration::ZERO;
    loop {
        let client = sds::connect(args.socket.clone()).await?;
        match sds::follow(client, names.clone(), material.clone()).await {
            Ok(_) => break,
            Err(sds::SdsError::Status(s))
                if s.code() == tonic::Code::PermissionDenied && waited < IDENTITY_WAIT =>
            {
                tokio::time::sleep(RETRY).await;
                waited += RETRY;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let trust = material.trust();
    let mut domains: Vec<&String> = trust.keys().collect();
    domains.sort();
    say(
        &args.call.name,
        &format!(
            "SDS secrets {:?} and {:?} received; trusting {}",
            args.svid,
            args.trust,
            domains
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    run(material, &args.call.options()).await?;
    Ok(())
}
