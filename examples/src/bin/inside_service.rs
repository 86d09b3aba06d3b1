//! `inside-service`: a service inside the platform that only talks mTLS with SPIFFE IDs.
//!
//! It gets its own X.509-SVID and the bundles it trusts from the Workload API (crates.io
//! `spiffe` crate, `X509Source`), presents its current SVID on every handshake, and accepts a
//! caller when (1) the caller's SVID verifies against the bundle of the caller's trust domain
//! (its own or a federated one) and (2) the caller's SPIFFE ID is on the allow-list given with
//! `--allow`. It prints one line per connection: accepted or refused, the peer's ID and its
//! certificate serial. It answers `ping` with `pong from <its ID>`. A connection stays open
//! across the caller's rotations; each new one must present a currently valid SVID.
//!
//! ```text
//! inside-service --endpoint unix:/tmp/agent.sock --listen 127.0.0.1:0 \
//!     --allow spiffe://platform.example/device/caller --allow spiffe://partner.example/caller
//! ```

#![allow(clippy::print_stdout)] // The program's output is its interface.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rustls::pki_types::CertificateDer;
use tessera_examples::caller::say;
use tessera_examples::material::{follow_source, Material};
use tessera_examples::verify::{cert_info, server_config, PeerError};
use tessera_examples::wire::{read_line, write_line, WireError};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

const NAME: &str = "inside-service";

#[derive(Debug, Parser)]
#[command(about = "An mTLS service that authorises callers by SPIFFE ID.")]
struct Args {
    /// The Workload API socket, e.g. unix:/tmp/agent.sock (default: $SPIFFE_ENDPOINT_SOCKET).
    #[arg(long)]
    endpoint: Option<String>,
    /// Address to listen on; port 0 picks a free one (printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A SPIFFE ID allowed to call; repeat for several.
    #[arg(long = "allow", required = true)]
    allow: Vec<String>,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Longest TLS handshake (a peer could otherwise hold a slot forever).
    #[arg(long, default_value = "5", value_parser = seconds)]
    handshake_timeout: Duration,
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?}: a whole number of seconds"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = spiffe::X509Source::builder().initial_sync_timeout(Duration::from_secs(30));
    if let Some(endpoint) = &args.endpoint {
        builder = builder.endpoint(endpoint);
    }
    let source = Arc::new(
        builder
            .build()
            .await
            .context("no identity from the Workload API (is there an entry for this service?)")?,
    );
    let material = Material::new();
    follow_source(source, material.clone())?;
    let me = material
        .identity()
        .context("the Workload API gave no SVID")?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    say(
        NAME,
        &format!(
            "listening on {} as {} (SVID serial {}); allowed: {}",
            listener.local_addr()?,
            me.spiffe_id,
            me.serial,
            args.allow.join(", ")
        ),
    );
    tokio::spawn(report_rotations(material.clone()));

    let acceptor = TlsAcceptor::from(Arc::new(server_config(material.clone())?));
    let allow = Arc::new(args.allow);
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_connections.max(1)));
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let (tcp, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("{NAME}: accept: {e}");
                continue;
            }
        };
        let (acceptor, allow, material) = (acceptor.clone(), allow.clone(), material.clone());
        let timeout = args.handshake_timeout;
        tokio::spawn(async move {
            serve(acceptor, tcp, from, &allow, &material, timeout).await;
            drop(slot);
        });
    }
}

async fn serve(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    from: SocketAddr,
    allow: &[String],
    material: &Material,
    handshake_timeout: Duration,
) {
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Err(_) => {
            return say(
                NAME,
                &format!("refused {from}: no TLS handshake within {handshake_timeout:?}"),
            )
        }
        Ok(Err(e)) => {
            return match PeerError::from_io(&e) {
                Some(peer) => say(NAME, &format!("refused {peer}")),
                None => say(NAME, &format!("refused {from}: TLS handshake failed: {e}")),
            }
        }
        Ok(Ok(tls)) => tls,
    };
    // The verifier has checked the chain; read who it is and decide.
    let leaf: Option<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned());
    let Some(info) = leaf.as_ref().and_then(|c| cert_info(c).ok()) else {
        return say(
            NAME,
            &format!("refused {from}: no readable client certificate"),
        );
    };
    let id = info.spiffe_id.unwrap_or_default();
    let serial = info.serial;
    let mut conn = BufReader::new(tls);
    if !allow.contains(&id) {
        say(
            NAME,
            &format!("refused {id} (serial {serial}): not on the allow-list"),
        );
        // Answer the caller's first request with the reason, then close.
        let _ = tokio::time::timeout(handshake_timeout, read_line(&mut conn)).await;
        let refusal = format!("refused: {id} is not on this service's allow-list");
        let _ = write_line(&mut conn, &refusal).await;
        let _ = conn.shutdown().await;
        return;
    }
    let left = info.not_after - tessera_examples::now_unix();
    say(
        NAME,
        &format!("accepted {id} (serial {serial}, SVID expires in {left} s)"),
    );

    // Serve pings until the caller hangs up. An established connection outlives the SVID it
    // was opened with (TLS cannot swap certificates mid-connection); every new connection
    // must show a valid one.
    let mut pings = 0u64;
    loop {
        let reply = match read_line(&mut conn).await {
            Ok(l) if l == "ping" => match material.identity() {
                Some(me) => format!("pong from {}", me.spiffe_id),
                None => "closed: this service has no identity now".to_owned(),
            },
            Ok(other) => format!("error: unknown request {other:?} (send ping)"),
            Err(WireError::Closed) => {
                return say(
                    NAME,
                    &format!("ended {id} (serial {serial}): hung up after {pings} ping(s)"),
                );
            }
            Err(e) => return say(NAME, &format!("ended {id} (serial {serial}): {e}")),
        };
        pings += 1;
        if write_line(&mut conn, &reply).await.is_err() {
            return;
        }
    }
}

/// Prints the service's own SVID rotations, and the trust domains it trusts when they change
/// (a new federation reaches a running service through its entry's `--federatesWith`).
async fn report_rotations(material: Arc<Material>) {
    let mut changes = material.subscribe();
    let mut serial = material.identity().map(|i| i.serial.clone());
    let mut domains = trusted(&material);
    say(NAME, &format!("trusting {}", domains.join(", ")));
    while changes.changed().await.is_ok() {
        let now = material.identity().map(|i| i.serial.clone());
        if now != serial {
            let shown = now.as_deref().unwrap_or("none (withdrawn)");
            say(NAME, &format!("my SVID rotated: serial {shown}"));
            serial = now;
        }
        let now = trusted(&material);
        if now != domains {
            say(NAME, &format!("now trusting {}", now.join(", ")));
            domains = now;
        }
    }
}

fn trusted(material: &Material) -> Vec<String> {
    let mut domains: Vec<String> = material.trust().keys().cloned().collect();
    domains.sort();
    domains
}
