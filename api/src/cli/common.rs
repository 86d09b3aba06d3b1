//! What every client verb shares: `--socketPath`, `--output`, the connection to the admin
//! socket, flag parsing with errors that name the verb, the flag, the value and the rule.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use hyper_util::rt::TokioIo;
use tessera_identity::{Selector, SpiffeId, TrustDomain};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::duration::parse_duration;
use crate::config::DEFAULT_SOCKET_PATH;
use crate::timefmt::parse_timestamp;

/// How long a client waits for the server to answer one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people (SPIRE's layout).
    Pretty,
    /// For scripts: the response's fields under their proto names.
    Json,
}

/// Flags of every client verb.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Path to the server's admin API socket.
    #[arg(long = "socketPath", visible_alias = "socket-path", default_value = DEFAULT_SOCKET_PATH)]
    pub socket_path: PathBuf,
    /// Output format.
    #[arg(long = "output", value_enum, default_value = "pretty")]
    pub output: OutputFormat,
}

/// A client verb that failed; the message starts with the verb (`entry create: ...`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value breaks a rule.
    #[error("{verb}: {flag} {value:?}: {reason}")]
    Flag {
        /// The verb (`entry create`).
        verb: &'static str,
        /// The flag (`--spiffeID`).
        flag: &'static str,
        /// The value given.
        value: String,
        /// The rule, and the fix.
        reason: String,
    },
    /// Flags that do not go together, or a required one is missing.
    #[error("{verb}: {message}")]
    Usage {
        /// The verb.
        verb: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The socket does not answer.
    #[error("{verb}: cannot reach the server at {}: {reason}; is `tessera-server run` running with this --socketPath?", .path.display())]
    Connect {
        /// The verb.
        verb: &'static str,
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server refused the call.
    #[error("{verb}: {}: {}", code_name(.status.code()), .status.message())]
    Rpc {
        /// The verb.
        verb: &'static str,
        /// The server's answer.
        status: tonic::Status,
    },
    /// Some items of a batch failed (each already reported).
    #[error("{verb}: {message}")]
    Failed {
        /// The verb.
        verb: &'static str,
        /// What failed.
        message: String,
    },
    /// A local file could not be written or read.
    #[error("{verb}: {}: {source}", .path.display())]
    Io {
        /// The verb.
        verb: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The gRPC code's name as SPIRE's CLI prints it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Builds the `map_err` for an RPC of `verb`.
pub fn rpc(verb: &'static str) -> impl Fn(tonic::Status) -> CliError {
    move |status| CliError::Rpc { verb, status }
}

/// Most pages a listing verb reads: a bound on a server that keeps answering with a next page.
pub const MAX_PAGES: usize = 100_000;

/// Every item of a paged listing: `page(token)` fetches one page and returns its items and
/// the next page token, until the token is empty (at most [`MAX_PAGES`] pages).
pub async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, CliError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), CliError>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let (items, next) = page(token).await?;
        all.extend(items);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    Ok(all)
}

/// A channel to the admin API over the Unix socket at `path`.
pub async fn connect(verb: &'static str, path: &Path) -> Result<Channel, CliError> {
    let socket = path.to_owned();
    // The URI is required by the transport and ignored by the connector.
    let endpoint = Endpoint::from_static("http://tessera-server.invalid").timeout(CALL_TIMEOUT);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| CliError::Connect {
            verb,
            path: path.to_owned(),
            reason: source_chain(&e),
        })
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Identity errors begin with the quoted input; the flag error quotes it already.
fn reason(message: String, value: &str) -> String {
    message
        .strip_prefix(&format!("{value:?}: "))
        .map(str::to_owned)
        .unwrap_or(message)
}

fn flag_err(verb: &'static str, flag: &'static str, value: &str, why: String) -> CliError {
    CliError::Flag {
        verb,
        flag,
        value: value.to_owned(),
        reason: reason(why, value),
    }
}

/// Parses a SPIFFE ID flag.
pub fn spiffe_id(
    verb: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<SpiffeId, CliError> {
    SpiffeId::new(value).map_err(|e| flag_err(verb, flag, value, e.to_string()))
}

/// Parses a trust domain flag (name or `spiffe://` ID).
pub fn trust_domain(
    verb: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<TrustDomain, CliError> {
    TrustDomain::from_name_or_id(value).map_err(|e| flag_err(verb, flag, value, e.to_string()))
}

/// Parses a `type:value` selector flag.
pub fn selector(verb: &'static str, flag: &'static str, value: &str) -> Result<Selector, CliError> {
    Selector::parse(value).map_err(|e| flag_err(verb, flag, value, e.to_string()))
}

/// Parses a TTL flag: seconds (`3600`) or a duration (`1h`); at least 1 second, at most
/// `i32::MAX` seconds (the wire's type).
pub fn ttl_secs(verb: &'static str, flag: &'static str, value: &str) -> Result<i32, CliError> {
    let d = parse_duration(value).map_err(|e| flag_err(verb, flag, value, e.to_string()))?;
    match i32::try_from(d.as_secs()) {
        Ok(0) => Err(flag_err(
            verb,
            flag,
            value,
            "must be at least 1 second".into(),
        )),
        Ok(s) => Ok(s),
        Err(_) => Err(flag_err(
            verb,
            flag,
            value,
            format!("must be at most {} seconds", i32::MAX),
        )),
    }
}

/// Parses a time flag: Unix seconds or RFC 3339.
pub fn timestamp(verb: &'static str, flag: &'static str, value: &str) -> Result<i64, CliError> {
    parse_timestamp(value).ok_or_else(|| {
        flag_err(
            verb,
            flag,
            value,
            "expected Unix seconds or an RFC 3339 time such as \"2030-01-02T03:04:05Z\"".into(),
        )
    })
}

/// Reads the file at `path` (`-`: stdin) named by `flag`, refusing more than `max` bytes.
pub fn read_input(
    verb: &'static str,
    flag: &'static str,
    path: &str,
    max: u64,
) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let shown = if path == "-" {
        PathBuf::from("<stdin>")
    } else {
        PathBuf::from(path)
    };
    let io = |source| CliError::Io {
        verb,
        path: shown.clone(),
        source,
    };
    let mut data = Vec::new();
    if path == "-" {
        std::io::stdin()
            .lock()
            .take(max + 1)
            .read_to_end(&mut data)
            .map_err(io)?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(max + 1).read_to_end(&mut data))
            .map_err(io)?;
    }
    if data.len() as u64 > max {
        return Err(CliError::Flag {
            verb,
            flag,
            value: path.to_owned(),
            reason: format!("is larger than {max} bytes; split it"),
        });
    }
    Ok(data)
}

/// Writes a line to the output, ignoring a closed pipe (`| head`).
pub fn line(out: &mut dyn Write, text: impl std::fmt::Display) {
    let _ = writeln!(out, "{text}");
}

/// Writes a JSON value, pretty-printed.
pub fn json(out: &mut dyn Write, value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    line(out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_errors_name_verb_flag_value_and_rule() {
        let e = spiffe_id("entry create", "--spiffeID", "spiffe://Ex.org/a")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("entry create: --spiffeID \"spiffe://Ex.org/a\": trust domain characters are limited to"),
            "{e}"
        );
        let e = selector("entry create", "--selector", "nocolon")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("entry create: --selector \"nocolon\": "),
            "{e}"
        );
        let e = ttl_secs("entry create", "--x509SVIDTTL", "5 min")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--x509SVIDTTL \"5 min\""), "{e}");
        assert_eq!(ttl_secs("v", "--ttl", "1h").unwrap(), 3600);
        assert_eq!(ttl_secs("v", "--ttl", "90").unwrap(), 90);
        assert!(ttl_secs("v", "--ttl", "0").is_err());
        assert_eq!(
            timestamp("v", "--entryExpiry", "1970-01-01T00:01:00Z").unwrap(),
            60
        );
    }
}
