//! `bundle show | set | list | delete | count`: the trust domain's own bundle (`show`) and
//! federated bundles (the rest), with SPIRE's flags and output. Bundles are read and printed
//! as PEM (X.509 authorities only) or as SPIFFE bundles (JWKS, X.509 and JWT authorities).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tessera_identity::{Bundle, TrustDomain};
use tessera_proto::spire::api::server::bundle::v1::bundle_client::BundleClient;
use tessera_proto::spire::api::server::bundle::v1::{
    batch_delete_federated_bundle_request::Mode, BatchDeleteFederatedBundleRequest,
    BatchSetFederatedBundleRequest, CountBundlesRequest, GetBundleRequest,
    GetFederatedBundleRequest, ListFederatedBundlesRequest,
};
use tessera_proto::spire::api::types;

use super::common::{
    self, all_pages, code_name, connect, json, line, rpc, CliError, ClientArgs, OutputFormat,
};
use crate::convert::{bundle_from_proto, bundle_to_proto};

/// Largest bundle file (or stdin) read: far above any real bundle, a bound on a wrong path.
pub const MAX_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// `bundle ...`.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Prints the server's trust bundle.
    Show(ShowArgs),
    /// Creates or replaces the federated bundle of a foreign trust domain.
    Set(SetArgs),
    /// Lists federated bundles (all, or the one of --id).
    List(ListArgs),
    /// Deletes a federated bundle.
    Delete(DeleteArgs),
    /// Counts bundles: this trust domain's and the federated ones.
    Count(CountArgs),
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

/// `bundle set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The trust domain of the bundle (`spiffe://partner.org` or `partner.org`).
    #[arg(long = "id")]
    pub id: Option<String>,
    /// Path to the bundle data; read from stdin when unset.
    #[arg(long = "path")]
    pub path: Option<PathBuf>,
    /// The format of the bundle data.
    #[arg(long = "format", value_enum, default_value = "pem")]
    pub format: BundleFormat,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `bundle list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only the bundle of this trust domain.
    #[arg(long = "id")]
    pub id: Option<String>,
    /// The format to print bundles in.
    #[arg(long = "format", value_enum, default_value = "pem")]
    pub format: BundleFormat,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `--mode` of `bundle delete` (SPIRE's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeleteMode {
    /// Refuse if registration entries federate with the bundle.
    Restrict,
    /// Delete the entries that federate with it too.
    Delete,
    /// Remove the trust domain from the entries' federates-with.
    Dissociate,
}

/// `bundle delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The trust domain of the bundle.
    #[arg(long = "id")]
    pub id: Option<String>,
    /// What happens to entries that federate with the bundle.
    #[arg(long = "mode", value_enum, default_value = "restrict")]
    pub mode: DeleteMode,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `bundle count`.
#[derive(Debug, Args)]
pub struct CountArgs {
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
    parsed(verb, &wire)
}

fn parsed(verb: &'static str, wire: &types::Bundle) -> Result<Bundle, CliError> {
    bundle_from_proto(wire).map_err(|e| CliError::Failed {
        verb,
        message: format!("the server sent a bundle that does not parse: {e}"),
    })
}

/// Reads bundle data from `path`, or stdin when `None`, at most [`MAX_BUNDLE_BYTES`].
pub fn read_bundle_data(verb: &'static str, path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    let shown = path.map_or_else(|| PathBuf::from("<stdin>"), Path::to_path_buf);
    let io = |source| CliError::Io {
        verb,
        path: shown.clone(),
        source,
    };
    let mut data = Vec::new();
    match path {
        Some(p) => std::fs::File::open(p)
            .and_then(|f| f.take(MAX_BUNDLE_BYTES + 1).read_to_end(&mut data))
            .map_err(io)?,
        None => std::io::stdin()
            .lock()
            .take(MAX_BUNDLE_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(io)?,
    };
    if data.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(CliError::Usage {
            verb,
            message: format!(
                "{}: larger than {MAX_BUNDLE_BYTES} bytes; is this a bundle?",
                shown.display()
            ),
        });
    }
    Ok(data)
}

/// Parses bundle data of `trust_domain` in `format`; `what` says where it came from in the
/// error (`--path "b.pem"`, `the bundle read from stdin`).
pub fn parse_bundle(
    verb: &'static str,
    what: &str,
    trust_domain: TrustDomain,
    format: BundleFormat,
    data: &[u8],
) -> Result<Bundle, CliError> {
    let bad = |reason: String| CliError::Usage {
        verb,
        message: format!("{what} {reason}"),
    };
    match format {
        BundleFormat::Pem => {
            let text = std::str::from_utf8(data)
                .map_err(|_| bad("is not PEM text (not UTF-8); is it --format spiffe?".into()))?;
            Bundle::from_x509_pem(trust_domain, text)
                .map_err(|e| bad(format!("is not a PEM bundle: {e}")))
        }
        BundleFormat::Spiffe => Bundle::from_jwks(trust_domain, data)
            .map_err(|e| bad(format!("is not a SPIFFE bundle (JWKS): {e}"))),
    }
}

/// A bundle as text in `format` (JWKS or PEM), ending with a newline.
pub fn bundle_text(
    verb: &'static str,
    bundle: &Bundle,
    format: BundleFormat,
) -> Result<String, CliError> {
    let mut text = match format {
        BundleFormat::Spiffe => bundle.to_jwks().map_err(|e| CliError::Failed {
            verb,
            message: e.to_string(),
        })?,
        BundleFormat::Pem => bundle.x509_authorities_pem(),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// A wire bundle as JSON with the proto field names (bytes as base64, as protojson).
pub fn bundle_json(b: &types::Bundle) -> Value {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    json!({
        "trust_domain": b.trust_domain,
        "x509_authorities": b.x509_authorities.iter().map(|a| json!({
            "asn1": b64(&a.asn1),
            "tainted": a.tainted,
        })).collect::<Vec<_>>(),
        "jwt_authorities": b.jwt_authorities.iter().map(|k| json!({
            "public_key": b64(&k.public_key),
            "key_id": k.key_id,
            "expires_at": k.expires_at.to_string(),
            "tainted": k.tainted,
        })).collect::<Vec<_>>(),
        "refresh_hint": b.refresh_hint.to_string(),
        "sequence_number": b.sequence_number.to_string(),
    })
}

/// The failure of one batch item, if it failed.
pub fn item_failure(
    verb: &'static str,
    what: &str,
    status: Option<&types::Status>,
) -> Option<CliError> {
    let s = status?;
    (s.code != 0).then(|| CliError::Failed {
        verb,
        message: format!(
            "{what}: {}: {}",
            code_name(tonic::Code::from_i32(s.code)),
            s.message
        ),
    })
}

fn required_td(verb: &'static str, id: Option<&str>) -> Result<TrustDomain, CliError> {
    let id = id.ok_or(CliError::Usage {
        verb,
        message: "--id is required: the trust domain, e.g. spiffe://partner.org".into(),
    })?;
    common::trust_domain(verb, "--id", id)
}

/// Runs a `bundle` verb.
pub async fn run(cmd: BundleCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        BundleCommand::Show(a) => show(a, out).await,
        BundleCommand::Set(a) => set(a, out).await,
        BundleCommand::List(a) => list(a, out).await,
        BundleCommand::Delete(a) => delete(a, out).await,
        BundleCommand::Count(a) => count(a, out).await,
    }
}

async fn show(a: ShowArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "bundle show";
    let bundle = fetch(VERB, &a.client).await?;
    // JSON output of a bundle is its SPIFFE (JWKS) form.
    let format = match a.client.output {
        OutputFormat::Json => BundleFormat::Spiffe,
        OutputFormat::Pretty => a.format,
    };
    let _ = out.write_all(bundle_text(VERB, &bundle, format)?.as_bytes());
    Ok(())
}

async fn set(a: SetArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "bundle set";
    let td = required_td(VERB, a.id.as_deref())?;
    let data = read_bundle_data(VERB, a.path.as_deref())?;
    let what = a.path.as_ref().map_or_else(
        || "the bundle read from stdin".to_owned(),
        |p| format!("--path {:?}", p.display().to_string()),
    );
    let bundle = parse_bundle(VERB, &what, td, a.format, &data)?;
    let mut client = BundleClient::new(connect(VERB, &a.client.socket_path).await?);
    let result = client
        .batch_set_federated_bundle(BatchSetFederatedBundleRequest {
            bundle: vec![bundle_to_proto(&bundle, None)],
            output_mask: None,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner()
        .results
        .into_iter()
        .next()
        .ok_or_else(|| no_result(VERB))?;
    if let Some(e) = item_failure(
        VERB,
        "failed to set federated bundle",
        result.status.as_ref(),
    ) {
        return Err(e);
    }
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "results": [{
                "status": { "code": 0, "message": "OK" },
                "bundle": result.bundle.as_ref().map(bundle_json),
            }] }),
        ),
        OutputFormat::Pretty => line(out, "bundle set."),
    }
    Ok(())
}

fn no_result(verb: &'static str) -> CliError {
    CliError::Failed {
        verb,
        message: "the server returned no result".into(),
    }
}

async fn list(a: ListArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "bundle list";
    let only =
        a.id.as_deref()
            .map(|id| common::trust_domain(VERB, "--id", id))
            .transpose()?;
    let mut client = BundleClient::new(connect(VERB, &a.client.socket_path).await?);
    if let Some(td) = only {
        let wire = client
            .get_federated_bundle(GetFederatedBundleRequest {
                trust_domain: td.as_str().to_owned(),
                output_mask: None,
            })
            .await
            .map_err(rpc(VERB))?
            .into_inner();
        match a.client.output {
            OutputFormat::Json => json(out, &bundle_json(&wire)),
            OutputFormat::Pretty => {
                let text = bundle_text(VERB, &parsed(VERB, &wire)?, a.format)?;
                let _ = out.write_all(text.as_bytes());
            }
        }
        return Ok(());
    }
    let bundles = all_pages(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_federated_bundles(ListFederatedBundlesRequest {
                    output_mask: None,
                    page_size: 0,
                    page_token,
                })
                .await
                .map_err(rpc(VERB))?
                .into_inner();
            Ok((page.bundles, page.next_page_token))
        }
    })
    .await?;
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "bundles": bundles.iter().map(bundle_json).collect::<Vec<_>>() }),
        ),
        OutputFormat::Pretty => {
            for (i, wire) in bundles.iter().enumerate() {
                if i > 0 {
                    line(out, "");
                }
                line(out, "****************************************");
                line(out, format!("* {}", wire.trust_domain));
                line(out, "****************************************");
                let text = bundle_text(VERB, &parsed(VERB, wire)?, a.format)?;
                let _ = out.write_all(text.as_bytes());
            }
        }
    }
    Ok(())
}

async fn delete(a: DeleteArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "bundle delete";
    let td = required_td(VERB, a.id.as_deref())?;
    let mode = match a.mode {
        DeleteMode::Restrict => Mode::Restrict,
        DeleteMode::Delete => Mode::Delete,
        DeleteMode::Dissociate => Mode::Dissociate,
    };
    let mut client = BundleClient::new(connect(VERB, &a.client.socket_path).await?);
    let result = client
        .batch_delete_federated_bundle(BatchDeleteFederatedBundleRequest {
            trust_domains: vec![td.as_str().to_owned()],
            mode: mode as i32,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner()
        .results
        .into_iter()
        .next()
        .ok_or_else(|| no_result(VERB))?;
    let what = format!("failed to delete federated bundle {:?}", td.as_str());
    if let Some(e) = item_failure(VERB, &what, result.status.as_ref()) {
        return Err(e);
    }
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "results": [{
                "status": { "code": 0, "message": "OK" },
                "trust_domain": result.trust_domain,
            }] }),
        ),
        OutputFormat::Pretty => line(out, "bundle deleted."),
    }
    Ok(())
}

async fn count(a: CountArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "bundle count";
    let mut client = BundleClient::new(connect(VERB, &a.client.socket_path).await?);
    let n = client
        .count_bundles(CountBundlesRequest {})
        .await
        .map_err(rpc(VERB))?
        .into_inner()
        .count;
    match a.client.output {
        OutputFormat::Json => json(out, &json!({ "count": n })),
        OutputFormat::Pretty => line(
            out,
            format!("{n} {}", if n == 1 { "bundle" } else { "bundles" }),
        ),
    }
    Ok(())
}
