//! `bundle show`: the trust domain's bundle as PEM or as a SPIFFE bundle (JWKS).

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use tessera_identity::Bundle;
use tessera_proto::spire::api::server::bundle::v1::bundle_client::BundleClient;
use tessera_proto::spire::api::server::bundle::v1::GetBundleRequest;

use super::common::{connect, rpc, CliError, ClientArgs, OutputFormat};
use crate::convert::bundle_from_proto;

/// `bundle ...`.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Prints the server's trust bundle.
    Show(ShowArgs),
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BundleFormat {
    /// The X.509 authorities as PEM certificates.
    Pem,
    /// The SPIFFE bundle format (JWKS), X.509 and JWT authorities.
    Spiffe,
}

/// `bundle show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Output format of the bundle.
    #[arg(long = "format", value_enum, default_value = "pem")]
    pub format: BundleFormat,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Fetches the server's bundle.
pub async fn fetch(verb: &'static str, client: &ClientArgs) -> Result<Bundle, CliError> {
    let mut c = BundleClient::new(connect(verb, &client.socket_path).await?);
    let wire = c
        .get_bundle(GetBundleRequest { output_mask: None })
        .await
        .map_err(rpc(verb))?
        .into_inner();
    bundle_from_proto(&wire).map_err(|e| CliError::Failed {
        verb,
        message: format!("the server sent a bundle that does not parse: {e}"),
    })
}

/// Runs a `bundle` verb.
pub async fn run(cmd: BundleCommand, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "bundle show";
    let BundleCommand::Show(a) = cmd;
    let bundle = fetch(VERB, &a.client).await?;
    let text = match (a.format, a.client.output) {
        // JSON output of a bundle is its SPIFFE (JWKS) form.
        (BundleFormat::Spiffe, _) | (_, OutputFormat::Json) => {
            bundle.to_jwks().map_err(|e| CliError::Failed {
                verb: VERB,
                message: e.to_string(),
            })?
        }
        (BundleFormat::Pem, OutputFormat::Pretty) => bundle.x509_authorities_pem(),
    };
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    Ok(())
}
