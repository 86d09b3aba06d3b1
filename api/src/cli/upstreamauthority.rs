//! `upstreamauthority taint|revoke --subjectKeyID`: with an upstream authority configured,
//! taint (then revoke) the upstream root that signed this server's old CAs, as SPIRE's
//! `spire-server upstreamauthority` (same verbs, flag and layout).

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_proto::spire::api::server::localauthority::v1::local_authority_client::LocalAuthorityClient;
use tessera_proto::spire::api::server::localauthority::v1::{
    RevokeX509UpstreamAuthorityRequest, TaintX509UpstreamAuthorityRequest,
};

use super::common::{connect, json, line, rpc, CliError, ClientArgs, OutputFormat};

/// `upstreamauthority ...`.
#[derive(Debug, Subcommand)]
pub enum UpstreamAuthorityCommand {
    /// Marks the upstream root tainted: agents re-sign every SVID that chains to it.
    Taint(UpstreamArgs),
    /// Removes the tainted upstream root (and the old CAs it signed) from the bundle.
    Revoke(UpstreamArgs),
}

/// The upstream root to act on.
#[derive(Debug, Args)]
pub struct UpstreamArgs {
    /// The upstream root's subject key ID, hex (`localauthority x509 show` prints it for each
    /// CA).
    #[arg(long = "subjectKeyID", visible_alias = "subject-key-id")]
    pub subject_key_id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs an `upstreamauthority` verb.
pub async fn run(cmd: UpstreamAuthorityCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let (verb, title, a, taint) = match cmd {
        UpstreamAuthorityCommand::Taint(a) => ("upstreamauthority taint", "Tainted", a, true),
        UpstreamAuthorityCommand::Revoke(a) => ("upstreamauthority revoke", "Revoked", a, false),
    };
    let id = required(verb, a.subject_key_id.as_deref())?;
    let mut client = LocalAuthorityClient::new(connect(verb, &a.client.socket_path).await?);
    let skid = if taint {
        client
            .taint_x509_upstream_authority(TaintX509UpstreamAuthorityRequest { subject_key_id: id })
            .await
            .map_err(rpc(verb))?
            .into_inner()
            .upstream_authority_subject_key_id
    } else {
        client
            .revoke_x509_upstream_authority(RevokeX509UpstreamAuthorityRequest {
                subject_key_id: id,
            })
            .await
            .map_err(rpc(verb))?
            .into_inner()
            .upstream_authority_subject_key_id
    };
    print(out, a.client.output, title, &skid);
    Ok(())
}

fn required(verb: &'static str, v: Option<&str>) -> Result<String, CliError> {
    match v.map(str::trim) {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(CliError::Usage {
            verb,
            message:
                "--subjectKeyID is required: the Subject Key ID of the X.509 upstream authority"
                    .into(),
        }),
    }
}

fn print(out: &mut dyn Write, format: OutputFormat, title: &str, skid: &str) {
    match format {
        OutputFormat::Json => json(out, &json!({ "upstream_authority_subject_key_id": skid })),
        OutputFormat::Pretty => {
            line(out, format!("{title} X.509 upstream authority:"));
            line(out, format!("  Subject Key ID: {skid}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spires_layout_and_the_required_flag() {
        let mut out = Vec::new();
        print(&mut out, OutputFormat::Pretty, "Tainted", "ab12");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Tainted X.509 upstream authority:\n  Subject Key ID: ab12\n"
        );
        let e = required("upstreamauthority taint", Some(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--subjectKeyID is required"), "{e}");
    }
}
