//! `api fetch x509 [--write DIR]`, `api fetch jwt --audience A [--spiffeID ID]`,
//! `api validate jwt --audience A --svid TOKEN`, `api watch`: the Workload API as a workload
//! sees it, with SPIRE's output layout.

use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use futures::StreamExt;
use tessera_eventlog::{Clock, SystemClock};
use tessera_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest, X509svidResponse,
};
use x509_parser::parse_x509_certificate;

use super::client::{connect, rpc, within, CliError, OutputFormat, SocketArgs};

/// `api ...`.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Fetches SVIDs: X.509 by default (`api fetch x509`), or JWT (`api fetch jwt`).
    Fetch(FetchArgs),
    /// Validates an SVID.
    #[command(subcommand)]
    Validate(ValidateCommand),
    /// Streams X.509-SVID updates until interrupted.
    Watch(WatchArgs),
}

/// `api fetch`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FetchArgs {
    /// What to fetch.
    #[command(subcommand)]
    pub kind: Option<FetchKind>,
    /// `api fetch` alone fetches X.509-SVIDs.
    #[command(flatten)]
    pub x509: X509Args,
}

/// `api fetch x509|jwt`.
#[derive(Debug, Subcommand)]
pub enum FetchKind {
    /// X.509-SVIDs with their keys and bundles.
    X509(X509Args),
    /// JWT-SVIDs for an audience, and the JWT bundles.
    Jwt(JwtArgs),
}

/// `api fetch x509`.
#[derive(Debug, Args)]
pub struct X509Args {
    /// Write svid.N.pem, svid.N.key (mode 0600), bundle.N.pem and federated_bundle.N.M.pem here.
    #[arg(long = "write")]
    pub write: Option<PathBuf>,
    /// Output format.
    #[arg(long = "output", value_enum, default_value = "pretty")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `api fetch jwt`.
#[derive(Debug, Args)]
pub struct JwtArgs {
    /// Audience of the token; repeat or separate with commas for several.
    #[arg(long = "audience", required = true, value_delimiter = ',')]
    pub audience: Vec<String>,
    /// Only the SVID of this SPIFFE ID.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: Option<String>,
    /// Output format.
    #[arg(long = "output", value_enum, default_value = "pretty")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `api validate ...`.
#[derive(Debug, Subcommand)]
pub enum ValidateCommand {
    /// Validates a JWT-SVID.
    Jwt(ValidateJwtArgs),
}

/// `api validate jwt`.
#[derive(Debug, Args)]
pub struct ValidateJwtArgs {
    /// The validator's audience: the token's must contain it.
    #[arg(long = "audience", required = true)]
    pub audience: String,
    /// The token.
    #[arg(long = "svid", required = true)]
    pub svid: String,
    /// Output format.
    #[arg(long = "output", value_enum, default_value = "pretty")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `api watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Runs an `api` verb.
pub async fn run(command: ApiCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        ApiCommand::Fetch(FetchArgs { kind: None, x509 })
        | ApiCommand::Fetch(FetchArgs {
            kind: Some(FetchKind::X509(x509)),
            ..
        }) => fetch_x509(x509, out).await,
        ApiCommand::Fetch(FetchArgs {
            kind: Some(FetchKind::Jwt(a)),
            ..
        }) => fetch_jwt(a, out).await,
        ApiCommand::Validate(ValidateCommand::Jwt(a)) => validate_jwt(a, out).await,
        ApiCommand::Watch(a) => watch(a, out).await,
    }
}

fn millis_since(start_nanos: i64) -> f64 {
    // Display only.
    #[allow(clippy::cast_precision_loss)]
    let ms = (SystemClock.now_unix_nanos() - start_nanos) as f64 / 1e6;
    ms
}

async fn fetch_x509(a: X509Args, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "api fetch x509";
    let target = a.socket.target(VERB)?;
    let started = SystemClock.now_unix_nanos();
    let mut client = connect(VERB, &target).await?;
    let first = within(VERB, target.timeout, async {
        let mut stream = client
            .fetch_x509svid(X509svidRequest {})
            .await?
            .into_inner();
        stream.message().await
    })
    .await?
    .map_err(rpc(VERB))?
    .ok_or_else(|| CliError::Failed {
        verb: VERB,
        message: "the agent closed the stream without an answer".into(),
    })?;
    match a.output {
        OutputFormat::Pretty => print_x509(out, &first, millis_since(started)),
        OutputFormat::Json => print_json(out, &x509_json(&first)),
    }
    if let Some(dir) = &a.write {
        write_x509(VERB, dir, &first)?;
        if a.output == OutputFormat::Pretty {
            let _ = writeln!(out, "Writing SVIDs, keys and bundles to {}", dir.display());
        }
    }
    Ok(())
}

async fn watch(a: WatchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "api watch";
    let target = a.socket.target(VERB)?;
    let mut started = SystemClock.now_unix_nanos();
    let mut client = connect(VERB, &target).await?;
    let mut stream = within(
        VERB,
        target.timeout,
        client.fetch_x509svid(X509svidRequest {}),
    )
    .await?
    .map_err(rpc(VERB))?
    .into_inner();
    let _ = writeln!(out, "Watching X.509-SVIDs at {}", target.path.display());
    let stop = super::stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(update)) => {
                    print_x509(out, &update, millis_since(started));
                    let _ = out.flush();
                    started = SystemClock.now_unix_nanos();
                }
                Some(Err(status)) => return Err(rpc(VERB)(status)),
                None => return Err(CliError::Failed { verb: VERB, message: "the agent closed the stream".into() }),
            },
            () = &mut stop => return Ok(()),
        }
    }
}

fn print_x509(out: &mut dyn Write, r: &X509svidResponse, ms: f64) {
    let mut text = format!("Received {} svid after {ms:.3}ms\n", r.svids.len());
    for svid in &r.svids {
        let _ = writeln!(text, "\nSPIFFE ID:\t\t{}", svid.spiffe_id);
        if !svid.hint.is_empty() {
            let _ = writeln!(text, "Hint:\t\t\t{}", svid.hint);
        }
        for (i, cert) in split_der(&svid.x509_svid).iter().enumerate() {
            let label = if i == 0 {
                "SVID".to_owned()
            } else {
                format!("Intermediate #{i}")
            };
            validity(&mut text, &label, cert);
        }
        for (i, cert) in split_der(&svid.bundle).iter().enumerate() {
            validity(&mut text, &format!("CA #{}", i + 1), cert);
        }
    }
    let mut federated: Vec<_> = r.federated_bundles.iter().collect();
    federated.sort();
    for (td, der) in federated {
        let _ = writeln!(text, "\nFederated bundle {td}:");
        for (i, cert) in split_der(der).iter().enumerate() {
            validity(&mut text, &format!("CA #{}", i + 1), cert);
        }
    }
    let _ = writeln!(out, "{text}");
}

fn validity(text: &mut String, label: &str, der: &[u8]) {
    match parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let v = cert.validity();
            let _ = writeln!(text, "{label} Valid After:\t{}", v.not_before);
            let _ = writeln!(text, "{label} Valid Until:\t{}", v.not_after);
        }
        Err(e) => {
            let _ = writeln!(text, "{label}: unparsable certificate: {e}");
        }
    }
}

/// Splits concatenated DER certificates (the standard's encoding) into one slice each.
pub fn split_der(mut der: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let Ok((rest, _)) = parse_x509_certificate(der) else {
            // Keep what cannot be parsed as one piece: the caller reports it.
            out.push(der);
            break;
        };
        let len = der.len() - rest.len();
        out.push(&der[..len]);
        der = rest;
    }
    out
}

fn pem_certs(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    split_der(der)
        .into_iter()
        .map(|c| pem::encode_config(&pem::Pem::new("CERTIFICATE", c.to_vec()), config))
        .collect()
}

fn write_file(verb: &'static str, path: &Path, contents: &[u8], mode: u32) -> Result<(), CliError> {
    let io = |source| CliError::Io {
        verb,
        path: path.to_owned(),
        source,
    };
    // Remove first so the mode applies even when the file existed with another one.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(contents).map_err(io)
}

fn write_x509(verb: &'static str, dir: &Path, r: &X509svidResponse) -> Result<(), CliError> {
    let mut federated: Vec<_> = r.federated_bundles.iter().collect();
    federated.sort();
    for (i, svid) in r.svids.iter().enumerate() {
        write_file(
            verb,
            &dir.join(format!("svid.{i}.pem")),
            pem_certs(&svid.x509_svid).as_bytes(),
            0o644,
        )?;
        let key = zeroize::Zeroizing::new(pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            svid.x509_svid_key.clone(),
        )));
        write_file(
            verb,
            &dir.join(format!("svid.{i}.key")),
            key.as_bytes(),
            0o600,
        )?;
        write_file(
            verb,
            &dir.join(format!("bundle.{i}.pem")),
            pem_certs(&svid.bundle).as_bytes(),
            0o644,
        )?;
        for (j, (_, der)) in federated.iter().enumerate() {
            write_file(
                verb,
                &dir.join(format!("federated_bundle.{i}.{j}.pem")),
                pem_certs(der).as_bytes(),
                0o644,
            )?;
        }
    }
    Ok(())
}

async fn fetch_jwt(a: JwtArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "api fetch jwt";
    let target = a.socket.target(VERB)?;
    let mut client = connect(VERB, &target).await?;
    let request = JwtsvidRequest {
        audience: a.audience,
        spiffe_id: a.spiffe_id.unwrap_or_default(),
    };
    let svids = within(VERB, target.timeout, client.fetch_jwtsvid(request))
        .await?
        .map_err(rpc(VERB))?
        .into_inner();
    let bundles = within(VERB, target.timeout, async {
        let mut stream = client
            .fetch_jwt_bundles(JwtBundlesRequest {})
            .await?
            .into_inner();
        stream.message().await
    })
    .await?
    .map_err(rpc(VERB))?
    .unwrap_or_default();
    if a.output == OutputFormat::Json {
        print_json(out, &jwt_json(&svids, &bundles));
        return Ok(());
    }
    let mut text = String::new();
    for svid in &svids.svids {
        let _ = writeln!(text, "token({}):\n\t{}", svid.spiffe_id, svid.svid);
    }
    let mut bundles: Vec<_> = bundles.bundles.into_iter().collect();
    bundles.sort();
    for (td, jwks) in bundles {
        let _ = writeln!(text, "bundle({td}):\n\t{}", String::from_utf8_lossy(&jwks));
    }
    let _ = write!(out, "{text}");
    Ok(())
}

async fn validate_jwt(a: ValidateJwtArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "api validate jwt";
    let target = a.socket.target(VERB)?;
    let mut client = connect(VERB, &target).await?;
    let request = ValidateJwtsvidRequest {
        audience: a.audience,
        svid: a.svid,
    };
    let r = within(VERB, target.timeout, client.validate_jwtsvid(request))
        .await?
        .map_err(rpc(VERB))?
        .into_inner();
    let claims = r
        .claims
        .map(|s| struct_to_json(&s))
        .unwrap_or(serde_json::Value::Null);
    if a.output == OutputFormat::Json {
        print_json(
            out,
            &serde_json::json!({ "spiffe_id": r.spiffe_id, "claims": claims }),
        );
        return Ok(());
    }
    let _ = writeln!(
        out,
        "SVID is valid.\nSPIFFE ID : {}\nClaims    : {claims}",
        r.spiffe_id
    );
    Ok(())
}

fn print_json(out: &mut dyn Write, value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    let _ = writeln!(out, "{text}");
}

fn base64(bytes: &[u8]) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// An `X509SVIDResponse` as JSON: proto field names, bytes (DER) in base64.
pub fn x509_json(r: &X509svidResponse) -> serde_json::Value {
    let svids: Vec<serde_json::Value> = r
        .svids
        .iter()
        .map(|s| {
            serde_json::json!({
                "spiffe_id": s.spiffe_id,
                "x509_svid": base64(&s.x509_svid),
                "x509_svid_key": base64(&s.x509_svid_key),
                "bundle": base64(&s.bundle),
                "hint": s.hint,
            })
        })
        .collect();
    let federated: serde_json::Map<String, serde_json::Value> = r
        .federated_bundles
        .iter()
        .map(|(td, der)| (td.clone(), base64(der)))
        .collect();
    serde_json::json!({
        "svids": svids,
        "crl": r.crl.iter().map(|c| base64(c)).collect::<Vec<_>>(),
        "federated_bundles": federated,
    })
}

/// A `JWTSVIDResponse` and the JWT bundles as JSON: each bundle is its JWKS document
/// (base64 if it is not JSON).
pub fn jwt_json(
    svids: &tessera_proto::workload::JwtsvidResponse,
    bundles: &tessera_proto::workload::JwtBundlesResponse,
) -> serde_json::Value {
    let svids: Vec<serde_json::Value> = svids
        .svids
        .iter()
        .map(|s| serde_json::json!({ "spiffe_id": s.spiffe_id, "svid": s.svid, "hint": s.hint }))
        .collect();
    let bundles: serde_json::Map<String, serde_json::Value> = bundles
        .bundles
        .iter()
        .map(|(td, jwks)| {
            let doc = serde_json::from_slice(jwks).unwrap_or_else(|_| base64(jwks));
            (td.clone(), doc)
        })
        .collect();
    serde_json::json!({ "svids": svids, "bundles": bundles })
}

/// A `google.protobuf.Struct` as JSON.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Whole numbers (timestamps) print without a fraction, as they were in the token.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let whole = n.fract() == 0.0 && n.abs() < 9.0e15;
            if whole {
                #[allow(clippy::cast_possible_truncation)]
                let i = *n as i64;
                serde_json::Value::from(i)
            } else {
                serde_json::Number::from_f64(*n)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}
