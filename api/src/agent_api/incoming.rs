//! Accepting agent connections. The accept loop only accepts: it never waits on a slot or a
//! handshake, so idle sockets cannot hold it up (the slowloris of issue 11). Each accepted
//! socket first takes a place among the connections counted in total and per source IP
//! (`limits.max_agent_connections`, `limits.max_agent_connections_per_ip`) or is closed at
//! once; then its TLS handshake runs in its own task, bounded by
//! `limits.agent_handshake_timeout`. The place is held for the connection's whole life.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::limits::{AgentApiLimits, Counter, Full};
use super::tls::TlsConn;

/// Established TLS connections from `listener`, for `serve_with_incoming`; `counter` counts
/// the open ones (handshaking or established) per source IP.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: &AgentApiLimits,
    counter: Counter<IpAddr>,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    // A small queue: connections wait here only while tonic takes the previous ones.
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let handshake_timeout = limits.handshake_timeout;
    let (max_age, grace) = (limits.connection_max_age, limits.connection_max_age_grace);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "agent API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = match counter.try_acquire(addr.ip()) {
                Ok(slot) => slot,
                Err(full) => {
                    // Closing at once is the cheapest answer; a legitimate agent retries.
                    let key = match full {
                        Full::Total(_) => "limits.max_agent_connections",
                        Full::PerKey(_) => "limits.max_agent_connections_per_ip",
                    };
                    tracing::debug!(%addr, limit = key, "agent API connection refused: at the limit");
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let conn = TlsConn::new(stream, addr, slot, max_age, grace);
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "agent TLS handshake failed"),
                    Err(_) => tracing::debug!(
                        %addr,
                        "agent TLS handshake timed out (limits.agent_handshake_timeout)"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
