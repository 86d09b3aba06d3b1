//! The client both callers run, whatever feeds their [`Material`] (Workload API or SDS): open
//! one mTLS connection to the service, keep it open and ping on it; each time the SVID rotates
//! (and every `fresh_every`, if set), also open a fresh connection, which presents the new SVID.
//! Any failure ends the run with the reason; the held connection surviving rotations is the
//! point of the exercise.
//!
//! Output is one line per event, prefixed with the caller's name, for people and the scenario
//! script alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::material::Material;
use crate::verify::{client_config, server_name};
use crate::wire::{read_line, write_line, WireError};

/// Longest wait for a TCP connect, a TLS handshake, or a reply.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a caller does.
#[derive(Debug, Clone)]
pub struct CallerOptions {
    /// Prefix of every output line.
    pub name: String,
    /// The service's address.
    pub connect: SocketAddr,
    /// The SPIFFE ID the service must present.
    pub server_id: String,
    /// How long to keep the connection and ping.
    pub run_for: Duration,
    /// Time between pings on the held connection.
    pub ping_every: Duration,
    /// Also open a fresh connection this often (besides after each rotation).
    pub fresh_every: Option<Duration>,
}

/// The flags every caller program shares.
#[derive(Debug, Clone, clap::Args)]
pub struct CallArgs {
    /// The service's address.
    #[arg(long)]
    pub connect: SocketAddr,
    /// The SPIFFE ID the service must present.
    #[arg(long)]
    pub server_id: String,
    /// How long to hold the connection and ping, seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Milliseconds between pings.
    #[arg(long, default_value_t = 1000)]
    pub ping_ms: u64,
    /// Also open a fresh connection every this many seconds (0: only after rotations).
    #[arg(long, default_value_t = 0)]
    pub fresh_every: u64,
    /// Name printed before each line.
    #[arg(long, default_value = "caller")]
    pub name: String,
    /// Keep presenting the last SVID after the agent withdraws it, as a compromised workload
    /// would (to show that the service refuses it once it expires).
    #[arg(long)]
    pub keep_withdrawn_svid: bool,
}

impl CallArgs {
    /// Material with the policy these flags ask for.
    pub fn material(&self) -> Arc<Material> {
        if self.keep_withdrawn_svid {
            Material::keeping_withdrawn()
        } else {
            Material::new()
        }
    }

    /// The options these flags mean.
    pub fn options(self) -> CallerOptions {
        CallerOptions {
            name: self.name,
            connect: self.connect,
            server_id: self.server_id,
            run_for: Duration::from_secs(self.seconds),
            ping_every: Duration::from_millis(self.ping_ms.max(10)),
            fresh_every: (self.fresh_every > 0).then(|| Duration::from_secs(self.fresh_every)),
        }
    }
}

/// Why a caller stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    /// The agent has given this workload no SVID.
    #[error("no SVID: this workload has no identity (is there a registration entry for it?)")]
    NoIdentity,
    /// The agent withdrew the identity (PermissionDenied) while the caller ran.
    #[error(
        "the agent withdrew this workload's identity (its entry was deleted or its agent banned)"
    )]
    Withdrawn,
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake failed on our side (the service's SVID was refused).
    #[error("TLS handshake with {addr}: {source}")]
    Handshake {
        /// Where.
        addr: SocketAddr,
        /// Why (names the service's ID and serial when its SVID was refused).
        source: std::io::Error,
    },
    /// The service refused us or closed the connection, in words or with a TLS alert.
    #[error("{what}: {reason}")]
    Refused {
        /// Which connection.
        what: &'static str,
        /// The service's line, or the alert.
        reason: String,
    },
    /// A step took longer than [`STEP_TIMEOUT`].
    #[error("{0}: no answer within {STEP_TIMEOUT:?}")]
    Timeout(&'static str),
    /// The TLS config could not be built.
    #[error("TLS config: {0}")]
    Tls(#[from] rustls::Error),
}

/// What a successful run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pings answered on the held connection.
    pub pings: u64,
    /// SVID rotations seen.
    pub rotations: u64,
    /// Fresh connections that worked.
    pub fresh: u64,
}

type Conn = BufReader<TlsStream<TcpStream>>;

/// Prints one line of a program's output (the examples' output is their interface).
#[allow(clippy::print_stdout)]
pub fn say(name: &str, line: &str) {
    println!("{name}: {line}");
}

/// Runs the caller; see the module doc.
pub async fn run(material: Arc<Material>, opts: &CallerOptions) -> Result<Summary, CallerError> {
    let name = opts.name.as_str();
    let me = material.identity().ok_or(CallerError::NoIdentity)?;
    say(
        name,
        &format!(
            "my identity is {} (SVID serial {}, expires in {} s)",
            me.spiffe_id,
            me.serial,
            me.not_after - crate::now_unix()
        ),
    );
    let config = client_config(material.clone(), opts.server_id.clone())?;
    let connector = TlsConnector::from(Arc::new(config));
    let mut held = connect(&connector, opts.connect).await?;
    let reply = ping(&mut held, "the held connection").await?;
    say(name, &format!("connected as serial {}; {reply}", me.serial));

    let mut summary = Summary {
        pings: 1,
        ..Summary::default()
    };
    let mut serial = me.serial.clone();
    let mut changes = material.subscribe();
    let mut reported_withdrawal = false;
    let deadline = tokio::time::sleep(opts.run_for);
    tokio::pin!(deadline);
    let mut pings = tokio::time::interval(opts.ping_every);
    pings.tick().await;
    let fresh_every = opts.fresh_every.unwrap_or(Duration::from_secs(86_400));
    let mut fresh = tokio::time::interval(fresh_every);
    fresh.tick().await;
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = pings.tick() => {
                ping(&mut held, "the held connection").await?;
                summary.pings += 1;
            }
            _ = fresh.tick() => {
                fresh_connection(&connector, opts, &serial).await?;
                summary.fresh += 1;
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    continue;
                }
                if material.is_withdrawn() && !reported_withdrawal {
                    reported_withdrawal = true;
                    let Some(last) = material.identity() else {
                        return Err(CallerError::Withdrawn);
                    };
                    say(name, &format!(
                        "the agent withdrew this workload's identity; keeping SVID serial {} \
                         (expires in {} s), as a compromised workload would",
                        last.serial,
                        last.not_after - crate::now_unix()
                    ));
                }
                let Some(now) = material.identity() else {
                    continue;
                };
                if now.serial != serial {
                    say(name, &format!(
                        "rotated: serial {serial} -> {} (expires in {} s)",
                        now.serial,
                        now.not_after - crate::now_unix()
                    ));
                    serial = now.serial.clone();
                    summary.rotations += 1;
                    fresh_connection(&connector, opts, &serial).await?;
                    summary.fresh += 1;
                }
            }
        }
    }
    let _ = held.shutdown().await;
    say(
        name,
        &format!(
            "OK: one connection held for {} s ({} pings answered), {} rotation(s), {} fresh \
             connection(s)",
            opts.run_for.as_secs(),
            summary.pings,
            summary.rotations,
            summary.fresh
        ),
    );
    Ok(summary)
}

async fn fresh_connection(
    connector: &TlsConnector,
    opts: &CallerOptions,
    serial: &str,
) -> Result<(), CallerError> {
    let mut conn = connect(connector, opts.connect).await?;
    let reply = ping(&mut conn, "a fresh connection").await?;
    let _ = conn.shutdown().await;
    say(
        &opts.name,
        &format!("fresh connection as serial {serial}; {reply}"),
    );
    Ok(())
}

async fn connect(connector: &TlsConnector, addr: SocketAddr) -> Result<Conn, CallerError> {
    let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| CallerError::Timeout("TCP connect"))?
        .map_err(|source| CallerError::Connect { addr, source })?;
    let tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(server_name(addr), tcp))
        .await
        .map_err(|_| CallerError::Timeout("TLS handshake"))?
        .map_err(|source| CallerError::Handshake { addr, source })?;
    Ok(BufReader::new(tls))
}

/// Sends `ping` and returns the `pong ...` line. With TLS 1.3 a client learns that the
/// service refused its certificate here, at the first read, as an alert.
async fn ping(conn: &mut Conn, what: &'static str) -> Result<String, CallerError> {
    let refused = |reason: String| CallerError::Refused { what, reason };
    let exchange = async {
        let sent = write_line(conn, "ping").await;
        // A refused certificate arrives as an alert: read it rather than report the broken
        // pipe that writing after it gives.
        match (sent, read_line(conn).await) {
            (_, Ok(line)) => Ok(line),
            (Err(e), Err(WireError::Closed)) => Err(WireError::Io(e)),
            (_, Err(e)) => Err(e),
        }
    };
    let reply = tokio::time::timeout(STEP_TIMEOUT, exchange)
        .await
        .map_err(|_| CallerError::Timeout(what))?
        .map_err(|e| refused(e.to_string()))?;
    if reply.starts_with("pong") {
        Ok(reply)
    } else {
        Err(refused(reply))
    }
}
