//! `localauthority x509|jwt show|prepare|activate|taint|revoke`: forced rotation of this
//! server's own X.509 CA and JWT key, as SPIRE's `spire-server localauthority` (same verbs,
//! `-authorityID` flag, same layout), over the LocalAuthority admin service.

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tessera_proto::spire::api::server::localauthority::v1::local_authority_client::LocalAuthorityClient;
use tessera_proto::spire::api::server::localauthority::v1::{
    ActivateJwtAuthorityRequest, ActivateX509AuthorityRequest, AuthorityState,
    GetJwtAuthorityStateRequest, GetX509AuthorityStateRequest, PrepareJwtAuthorityRequest,
    PrepareX509AuthorityRequest, RevokeJwtAuthorityRequest, RevokeX509AuthorityRequest,
    TaintJwtAuthorityRequest, TaintX509AuthorityRequest,
};
use tonic::transport::Channel;

use super::common::{connect, json, line, rpc, CliError, ClientArgs, OutputFormat};
use crate::timefmt::format_unix;

/// `localauthority ...`.
#[derive(Debug, Subcommand)]
pub enum LocalAuthorityCommand {
    /// The X.509 CA of this server.
    #[command(subcommand)]
    X509(StepCommand),
    /// The JWT signing key of this server.
    #[command(subcommand)]
    Jwt(StepCommand),
}

/// The steps of a forced rotation.
#[derive(Debug, Subcommand)]
pub enum StepCommand {
    /// Shows the active, prepared and old authority.
    Show(ClientOnly),
    /// Prepares a new authority now; it joins the bundle but does not sign yet.
    Prepare(ClientOnly),
    /// Makes the prepared authority the one that signs; the active one becomes old.
    Activate(WithId),
    /// Marks the old authority tainted: agents re-sign (X.509) or drop (JWT) what it signed.
    Taint(WithId),
    /// Removes the tainted authority from the bundle.
    Revoke(WithId),
}

/// A step with no argument of its own.
#[derive(Debug, Args)]
pub struct ClientOnly {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A step on one named authority.
#[derive(Debug, Args)]
pub struct WithId {
    /// The authority ID (X.509: the CA's subject key ID, hex; JWT: the key ID), as `show`
    /// prints it.
    #[arg(long = "authorityID", visible_alias = "authority-id")]
    pub authority_id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// X.509 or JWT, for the verb names and the calls.
#[derive(Clone, Copy)]
enum Kind {
    X509,
    Jwt,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::X509 => "X.509",
            Kind::Jwt => "JWT",
        }
    }
}

fn verb(kind: Kind, step: &StepCommand) -> &'static str {
    match (kind, step) {
        (Kind::X509, StepCommand::Show(_)) => "localauthority x509 show",
        (Kind::X509, StepCommand::Prepare(_)) => "localauthority x509 prepare",
        (Kind::X509, StepCommand::Activate(_)) => "localauthority x509 activate",
        (Kind::X509, StepCommand::Taint(_)) => "localauthority x509 taint",
        (Kind::X509, StepCommand::Revoke(_)) => "localauthority x509 revoke",
        (Kind::Jwt, StepCommand::Show(_)) => "localauthority jwt show",
        (Kind::Jwt, StepCommand::Prepare(_)) => "localauthority jwt prepare",
        (Kind::Jwt, StepCommand::Activate(_)) => "localauthority jwt activate",
        (Kind::Jwt, StepCommand::Taint(_)) => "localauthority jwt taint",
        (Kind::Jwt, StepCommand::Revoke(_)) => "localauthority jwt revoke",
    }
}

/// Runs a `localauthority` verb.
pub async fn run(cmd: LocalAuthorityCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let (kind, step) = match cmd {
        LocalAuthorityCommand::X509(s) => (Kind::X509, s),
        LocalAuthorityCommand::Jwt(s) => (Kind::Jwt, s),
    };
    let verb = verb(kind, &step);
    match step {
        StepCommand::Show(a) => {
            let mut client = client(verb, &a.client).await?;
            let (active, prepared, old) = match kind {
                Kind::X509 => {
                    let r = client
                        .get_x509_authority_state(GetX509AuthorityStateRequest {})
                        .await
                        .map_err(rpc(verb))?
                        .into_inner();
                    (r.active, r.prepared, r.old)
                }
                Kind::Jwt => {
                    let r = client
                        .get_jwt_authority_state(GetJwtAuthorityStateRequest {})
                        .await
                        .map_err(rpc(verb))?
                        .into_inner();
                    (r.active, r.prepared, r.old)
                }
            };
            show(out, a.client.output, kind, [active, prepared, old]);
            Ok(())
        }
        StepCommand::Prepare(a) => {
            let mut client = client(verb, &a.client).await?;
            let state = match kind {
                Kind::X509 => {
                    client
                        .prepare_x509_authority(PrepareX509AuthorityRequest {})
                        .await
                        .map_err(rpc(verb))?
                        .into_inner()
                        .prepared_authority
                }
                Kind::Jwt => {
                    client
                        .prepare_jwt_authority(PrepareJwtAuthorityRequest {})
                        .await
                        .map_err(rpc(verb))?
                        .into_inner()
                        .prepared_authority
                }
            };
            done(
                out,
                a.client.output,
                kind,
                "Prepared",
                "prepared_authority",
                state,
            );
            Ok(())
        }
        StepCommand::Activate(a) => {
            let id = required_id(verb, &a)?;
            let mut client = client(verb, &a.client).await?;
            let state = match kind {
                Kind::X509 => {
                    client
                        .activate_x509_authority(ActivateX509AuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc(verb))?
                        .into_inner()
                        .activated_authority
                }
                Kind::Jwt => {
                    client
                        .activate_jwt_authority(ActivateJwtAuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc(verb))?
                        .into_inner()
                        .activated_authority
                }
            };
            done(
                out,
                a.client.output,
                kind,
                "Activated",
                "activated_authority",
                state,
            );
            Ok(())
        }
        StepCommand::Taint(a) => {
            let id = required_id(verb, &a)?;
            let mut client = client(verb, &a.client).await?;
            let state = match kind {
                Kind::X509 => {
                    client
                        .taint_x509_authority(TaintX509AuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc(verb))?
                        .into_inner()
                        .tainted_authority
                }
                Kind::Jwt => {
                    client
                        .taint_jwt_authority(TaintJwtAuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc(verb))?
                        .into_inner()
                        .tainted_authority
                }
            };
            done(
                out,
                a.client.output,
                kind,
                "Tainted",
                "tainted_authority",
                state,
            );
            Ok(())
        }
        StepCommand::Revoke(a) => {
            let id = required_id(verb, &a)?;
            let mut client = client(verb, &a.client).await?;
            let state = match kind {
                Kind::X509 => {
                    client
                        .revoke_x509_authority(RevokeX509AuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc(verb))?
                        .into_inner()
                        .revoked_authority
                }
                Kind::Jwt => {
                    client
                        .revoke_jwt_authority(RevokeJwtAuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc(verb))?
                        .into_inner()
                        .revoked_authority
                }
            };
            done(
                out,
                a.client.output,
                kind,
                "Revoked",
                "revoked_authority",
                state,
            );
            Ok(())
        }
    }
}

async fn client(
    verb: &'static str,
    args: &ClientArgs,
) -> Result<LocalAuthorityClient<Channel>, CliError> {
    Ok(LocalAuthorityClient::new(
        connect(verb, &args.socket_path).await?,
    ))
}

fn required_id(verb: &'static str, a: &WithId) -> Result<String, CliError> {
    match a.authority_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(CliError::Usage {
            verb,
            message: "--authorityID is required (`show` prints the authority IDs)".into(),
        }),
    }
}

/// An authority as JSON, under its proto field names (`expires_at` as a number).
pub fn state_json(s: &AuthorityState) -> Value {
    let mut v = json!({
        "authority_id": s.authority_id,
        "expires_at": s.expires_at,
    });
    if !s.upstream_authority_subject_key_id.is_empty() {
        v["upstream_authority_subject_key_id"] = json!(s.upstream_authority_subject_key_id);
    }
    v
}

fn state_pretty(out: &mut dyn Write, s: &AuthorityState) {
    line(out, format!("  Authority ID: {}", s.authority_id));
    line(out, format!("  Expires at: {}", format_unix(s.expires_at)));
    if !s.upstream_authority_subject_key_id.is_empty() {
        line(
            out,
            format!(
                "  Upstream authority Subject Key ID: {}",
                s.upstream_authority_subject_key_id
            ),
        );
    }
}

fn show(
    out: &mut dyn Write,
    format: OutputFormat,
    kind: Kind,
    states: [Option<AuthorityState>; 3],
) {
    let names = [
        ("Active", "active"),
        ("Prepared", "prepared"),
        ("Old", "old"),
    ];
    match format {
        OutputFormat::Json => {
            let mut v = json!({});
            for ((_, field), state) in names.iter().zip(&states) {
                if let Some(s) = state {
                    v[*field] = state_json(s);
                }
            }
            json(out, &v);
        }
        OutputFormat::Pretty => {
            for (i, ((title, field), state)) in names.iter().zip(&states).enumerate() {
                if i > 0 {
                    line(out, "");
                }
                line(out, format!("{title} {} authority:", kind.label()));
                match state {
                    Some(s) => state_pretty(out, s),
                    None => line(
                        out,
                        format!("  No {field} {} authority found", kind.label()),
                    ),
                }
            }
        }
    }
}

fn done(
    out: &mut dyn Write,
    format: OutputFormat,
    kind: Kind,
    title: &str,
    field: &str,
    state: Option<AuthorityState>,
) {
    let state = state.unwrap_or_default();
    match format {
        OutputFormat::Json => json(out, &json!({ field: state_json(&state) })),
        OutputFormat::Pretty => {
            line(out, format!("{title} {} authority:", kind.label()));
            state_pretty(out, &state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AuthorityState {
        AuthorityState {
            authority_id: "ab12".into(),
            expires_at: 1001,
            upstream_authority_subject_key_id: String::new(),
        }
    }

    #[test]
    fn show_prints_spires_layout() {
        let mut out = Vec::new();
        show(
            &mut out,
            OutputFormat::Pretty,
            Kind::X509,
            [Some(state()), None, None],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Active X.509 authority:\n  Authority ID: ab12\n  Expires at: 1970-01-01T00:16:41Z\n\n\
             Prepared X.509 authority:\n  No prepared X.509 authority found\n\n\
             Old X.509 authority:\n  No old X.509 authority found\n"
        );
    }

    #[test]
    fn json_names_the_proto_fields_and_leaves_out_absent_ones() {
        let mut out = Vec::new();
        show(
            &mut out,
            OutputFormat::Json,
            Kind::Jwt,
            [Some(state()), None, Some(state())],
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["active"]["authority_id"], "ab12");
        assert_eq!(v["old"]["expires_at"], 1001);
        assert!(v.get("prepared").is_none());
    }

    #[test]
    fn a_step_without_its_id_names_the_flag() {
        let a = WithId {
            authority_id: Some("  ".into()),
            client: ClientArgs {
                socket_path: "/nonexistent".into(),
                output: OutputFormat::Pretty,
            },
        };
        let e = required_id("localauthority x509 taint", &a)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--authorityID is required"), "{e}");
    }
}
