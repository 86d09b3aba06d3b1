//! `x509 mint` and `jwt mint`: SVIDs for admins. For X.509 the CLI makes the key pair and the
//! CSR itself: the private key never leaves this process (or the files it writes, mode 0600).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rcgen::{CertificateParams, KeyPair, SanType};
use serde_json::json;
use tessera_proto::spire::api::server::svid::v1::svid_client::SvidClient;
use tessera_proto::spire::api::server::svid::v1::{MintJwtsvidRequest, MintX509svidRequest};

use super::common::{self, connect, json, line, rpc, CliError, ClientArgs, OutputFormat};
use crate::convert::spiffe_id_to_proto;

/// `x509 ...`.
#[derive(Debug, Subcommand)]
pub enum X509Command {
    /// Mints an X509-SVID.
    Mint(X509MintArgs),
}

/// `jwt ...`.
#[derive(Debug, Subcommand)]
pub enum JwtCommand {
    /// Mints a JWT-SVID.
    Mint(JwtMintArgs),
}

/// `x509 mint`.
#[derive(Debug, Args)]
pub struct X509MintArgs {
    /// The SPIFFE ID of the SVID.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: Option<String>,
    /// Lifetime (seconds, or a duration such as "1h"); the server's default when unset.
    #[arg(long = "ttl")]
    pub ttl: Option<String>,
    /// A DNS name for the SVID; repeatable.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Write svid.pem, key.pem (mode 0600) and bundle.pem into this directory instead of
    /// printing them.
    #[arg(long = "write")]
    pub write: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `jwt mint`.
#[derive(Debug, Args)]
pub struct JwtMintArgs {
    /// The SPIFFE ID of the SVID.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: Option<String>,
    /// An audience (`aud`); repeatable, at least one.
    #[arg(long = "audience")]
    pub audience: Vec<String>,
    /// Lifetime (seconds, or a duration such as "5m"); the server's default when unset.
    #[arg(long = "ttl")]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn required_id(
    verb: &'static str,
    v: Option<&str>,
) -> Result<tessera_identity::SpiffeId, CliError> {
    let v = v.ok_or(CliError::Usage {
        verb,
        message: "--spiffeID is required".into(),
    })?;
    common::spiffe_id(verb, "--spiffeID", v)
}

/// A fresh P-256 key and a CSR carrying `id` (and `dns`) for it.
fn key_and_csr(
    verb: &'static str,
    id: &str,
    dns: &[String],
) -> Result<(KeyPair, Vec<u8>), CliError> {
    let fail = |what: &str, e: rcgen::Error| CliError::Failed {
        verb,
        message: format!("{what}: {e}"),
    };
    let key = KeyPair::generate().map_err(|e| fail("cannot generate a key pair", e))?;
    let mut params = CertificateParams::default();
    let uri = id.try_into().map_err(|e| fail("SPIFFE ID in the CSR", e))?;
    params.subject_alt_names.push(SanType::URI(uri));
    for name in dns {
        let dns_name = name.as_str().try_into().map_err(|_| CliError::Flag {
            verb,
            flag: "--dns",
            value: name.clone(),
            reason: "must be ASCII (IA5String)".into(),
        })?;
        params.subject_alt_names.push(SanType::DnsName(dns_name));
    }
    let csr = params
        .serialize_request(&key)
        .map_err(|e| fail("cannot build the CSR", e))?;
    Ok((key, csr.der().to_vec()))
}

fn pem_chain(chain: &[Vec<u8>]) -> String {
    chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect()
}

fn write_file(verb: &'static str, path: &Path, contents: &str, mode: u32) -> Result<(), CliError> {
    let io = |source| CliError::Io {
        verb,
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    // An existing file keeps its old mode through `open`: set it.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Runs an `x509` verb.
pub async fn run_x509(cmd: X509Command, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "x509 mint";
    let X509Command::Mint(a) = cmd;
    let id = required_id(VERB, a.spiffe_id.as_deref())?;
    let ttl = a
        .ttl
        .as_deref()
        .map(|v| common::ttl_secs(VERB, "--ttl", v))
        .transpose()?
        .unwrap_or(0);
    let (key, csr) = key_and_csr(VERB, &id.to_string(), &a.dns)?;
    let mut client = SvidClient::new(connect(VERB, &a.client.socket_path).await?);
    let svid = client
        .mint_x509svid(MintX509svidRequest { csr, ttl })
        .await
        .map_err(rpc(VERB))?
        .into_inner()
        .svid
        .ok_or(CliError::Failed {
            verb: VERB,
            message: "the server returned no SVID".into(),
        })?;
    let bundle = super::bundle::fetch(VERB, &a.client).await?;
    let svid_pem = pem_chain(&svid.cert_chain);
    let key_pem = key.serialize_pem();
    let bundle_pem = bundle.x509_authorities_pem();
    if let Some(dir) = &a.write {
        std::fs::create_dir_all(dir).map_err(|source| CliError::Io {
            verb: VERB,
            path: dir.clone(),
            source,
        })?;
        let files = [
            ("svid.pem", &svid_pem, 0o644),
            ("key.pem", &key_pem, 0o600),
            ("bundle.pem", &bundle_pem, 0o644),
        ];
        for (name, contents, mode) in files {
            write_file(VERB, &dir.join(name), contents, mode)?;
        }
        match a.client.output {
            OutputFormat::Json => json(
                out,
                &json!({
                    "svid": dir.join("svid.pem"),
                    "key": dir.join("key.pem"),
                    "bundle": dir.join("bundle.pem"),
                    "expires_at": svid.expires_at,
                }),
            ),
            OutputFormat::Pretty => {
                for (name, what) in [
                    ("svid.pem", "X509-SVID"),
                    ("key.pem", "Private key"),
                    ("bundle.pem", "Root CAs"),
                ] {
                    line(
                        out,
                        format!("{what} written to {}", dir.join(name).display()),
                    );
                }
            }
        }
        return Ok(());
    }
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "svid": svid_pem, "key": key_pem, "bundle": bundle_pem, "expires_at": svid.expires_at }),
        ),
        OutputFormat::Pretty => {
            line(out, "X509-SVID:");
            line(out, svid_pem.trim_end());
            line(out, "\nPrivate key:");
            line(out, key_pem.trim_end());
            line(out, "\nRoot CAs:");
            line(out, bundle_pem.trim_end());
        }
    }
    Ok(())
}

/// Runs a `jwt` verb.
pub async fn run_jwt(cmd: JwtCommand, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "jwt mint";
    let JwtCommand::Mint(a) = cmd;
    let id = required_id(VERB, a.spiffe_id.as_deref())?;
    if a.audience.is_empty() {
        return Err(CliError::Usage {
            verb: VERB,
            message: "at least one --audience is required".into(),
        });
    }
    let ttl = a
        .ttl
        .as_deref()
        .map(|v| common::ttl_secs(VERB, "--ttl", v))
        .transpose()?
        .unwrap_or(0);
    let mut client = SvidClient::new(connect(VERB, &a.client.socket_path).await?);
    let svid = client
        .mint_jwtsvid(MintJwtsvidRequest {
            id: Some(spiffe_id_to_proto(&id)),
            audience: a.audience,
            ttl,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner()
        .svid
        .ok_or(CliError::Failed {
            verb: VERB,
            message: "the server returned no SVID".into(),
        })?;
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "token": svid.token, "expires_at": svid.expires_at, "issued_at": svid.issued_at }),
        ),
        OutputFormat::Pretty => line(out, svid.token),
    }
    Ok(())
}
