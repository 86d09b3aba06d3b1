//! `caller`: a workload outside (or inside) the platform that calls the inside service over
//! mTLS with the identity the Workload API gives it.
//!
//! It verifies that the service presents the expected SPIFFE ID (`--server-id`), keeps one
//! connection open for `--seconds` and pings on it, prints its own SVID serial each time it
//! rotates (and proves the new one works on a fresh connection), and ends with `OK: ...` or
//! `FAILED: <why>` (exit status 1).
//!
//! ```text
//! caller --endpoint unix:/tmp/agent.sock --connect 127.0.0.1:7443 \
//!     --server-id spiffe://platform.example/inside/service --seconds 30
//! ```

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tessera_examples::caller::{run, say, CallArgs};
use tessera_examples::material::follow_source;

#[derive(Debug, Parser)]
#[command(about = "Calls the inside service over mTLS with an SVID from the Workload API.")]
struct Args {
    /// The Workload API socket, e.g. unix:/tmp/agent.sock (default: $SPIFFE_ENDPOINT_SOCKET).
    #[arg(long)]
    endpoint: Option<String>,
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
    let mut builder = spiffe::X509Source::builder()
        .initial_sync_timeout(Duration::from_secs(10))
        .reconnect_backoff(Duration::from_millis(200), Duration::from_secs(2));
    if let Some(endpoint) = &args.endpoint {
        builder = builder.endpoint(endpoint);
    }
    let source = builder.build().await.map_err(|e| {
        anyhow::anyhow!("no identity from the Workload API within 10 s ({e}): is there a registration entry for this workload?")
    })?;
    let material = args.call.material();
    follow_source(Arc::new(source), material.clone())?;
    run(material, &args.call.options()).await?;
    Ok(())
}
