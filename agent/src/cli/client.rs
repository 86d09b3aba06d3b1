//! What every client verb shares: where the socket is (`--socketPath`, else
//! `SPIFFE_ENDPOINT_SOCKET`, else the default), the connection, the security header, errors
//! that name the verb.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use hyper_util::rt::TokioIo;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::duration::parse_duration;
use crate::config::DEFAULT_SOCKET_PATH;
use crate::workload_api::metrics::code_name;
use crate::workload_api::SECURITY_HEADER;

/// The environment variable of the SPIFFE standard naming the Workload API endpoint.
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// `--output`, as the server CLI's: SPIRE's layout for people, or JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people (SPIRE's layout).
    #[default]
    Pretty,
    /// For scripts: the response's fields under their proto names, bytes in base64.
    Json,
}

/// Flags of every client verb.
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// Path to the Workload API socket [default: $SPIFFE_ENDPOINT_SOCKET, else /tmp/tessera-agent/public/api.sock].
    #[arg(long = "socketPath", visible_alias = "socket-path")]
    pub socket_path: Option<PathBuf>,
    /// Longest wait for the agent's answer ("5s", "1m"; a bare number is seconds).
    #[arg(long = "timeout", default_value = "5s")]
    pub timeout: String,
}

/// A client verb that failed; the message starts with the verb (`api fetch x509: ...`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value breaks a rule.
    #[error("{verb}: {flag} {value:?}: {reason}")]
    Flag {
        /// The verb.
        verb: &'static str,
        /// The flag.
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
    #[error("{verb}: cannot reach the agent at {}: {reason}; is `tessera-agent run` running with this --socketPath?", .path.display())]
    Connect {
        /// The verb.
        verb: &'static str,
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent refused the call.
    #[error("{verb}: {}: {}", code_name(.status.code()), .status.message())]
    Rpc {
        /// The verb.
        verb: &'static str,
        /// The agent's answer.
        status: tonic::Status,
    },
    /// No answer within `--timeout`.
    #[error("{verb}: no answer from the agent within {after:?} (--timeout)")]
    Timeout {
        /// The verb.
        verb: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The agent's answer cannot be used.
    #[error("{verb}: {message}")]
    Failed {
        /// The verb.
        verb: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A local file could not be written.
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

/// Builds the `map_err` for an RPC of `verb`.
pub fn rpc(verb: &'static str) -> impl Fn(tonic::Status) -> CliError {
    move |status| CliError::Rpc { verb, status }
}

/// The socket path: `--socketPath`, else `SPIFFE_ENDPOINT_SOCKET` (`unix:///path`,
/// `unix:/path` or a plain path), else the default.
pub fn socket_path(
    verb: &'static str,
    flag: Option<&Path>,
    env: Option<&str>,
) -> Result<PathBuf, CliError> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    let Some(value) = env.filter(|v| !v.is_empty()) else {
        return Ok(PathBuf::from(DEFAULT_SOCKET_PATH));
    };
    let path = if let Some(rest) = value.strip_prefix("unix://") {
        if !rest.starts_with('/') {
            return Err(CliError::Flag {
                verb,
                flag: ENDPOINT_ENV,
                value: value.to_owned(),
                reason: "a unix:// address has no host; write unix:///absolute/path".into(),
            });
        }
        rest
    } else if let Some(rest) = value.strip_prefix("unix:") {
        rest
    } else if value.contains("://") {
        return Err(CliError::Flag {
            verb,
            flag: ENDPOINT_ENV,
            value: value.to_owned(),
            reason: "only unix sockets are served by tessera-agent; write unix:///path/to/api.sock"
                .into(),
        });
    } else {
        value
    };
    Ok(PathBuf::from(path))
}

/// A connected Workload API client that adds the security header to every call.
pub type WorkloadClient = SpiffeWorkloadApiClient<
    InterceptedService<
        Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

fn add_header(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    req.metadata_mut()
        .insert(SECURITY_HEADER, MetadataValue::from_static("true"));
    Ok(req)
}

/// The resolved socket and timeout of a verb.
#[derive(Debug, Clone)]
pub struct Target {
    /// The socket.
    pub path: PathBuf,
    /// The call timeout.
    pub timeout: Duration,
}

impl SocketArgs {
    /// Resolves `--socketPath` (or the environment) and `--timeout`.
    pub fn target(&self, verb: &'static str) -> Result<Target, CliError> {
        let env = std::env::var(ENDPOINT_ENV).ok();
        let path = socket_path(verb, self.socket_path.as_deref(), env.as_deref())?;
        let timeout = parse_duration(&self.timeout).map_err(|e| CliError::Flag {
            verb,
            flag: "--timeout",
            value: self.timeout.clone(),
            reason: e.to_string(),
        })?;
        Ok(Target { path, timeout })
    }
}

/// A channel to the Workload API over the Unix socket at `path`.
pub async fn channel(verb: &'static str, path: &Path) -> Result<Channel, CliError> {
    let socket = path.to_owned();
    // The URI is required by the transport and ignored by the connector.
    Endpoint::from_static("http://tessera-agent.invalid")
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

/// A Workload API client for `target`.
pub async fn connect(verb: &'static str, target: &Target) -> Result<WorkloadClient, CliError> {
    let channel = within(verb, target.timeout, channel(verb, &target.path)).await??;
    let interceptor: fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> =
        add_header;
    Ok(SpiffeWorkloadApiClient::with_interceptor(
        channel,
        interceptor,
    ))
}

/// `future`, or [`CliError::Timeout`] after `after`.
pub async fn within<T>(
    verb: &'static str,
    after: Duration,
    future: impl std::future::Future<Output = T>,
) -> Result<T, CliError> {
    tokio::time::timeout(after, future)
        .await
        .map_err(|_| CliError::Timeout { verb, after })
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
