//! Accepting agent connections: TCP accept, then the TLS handshake in its own task (so one slow
//! client never holds up the others), bounded in time and in how many run at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::tls::TlsConn;

/// Bounds of the accept path.
#[derive(Clone, Debug)]
pub struct AcceptLimits {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the kernel's backlog.
    pub max_handshakes: usize,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 512,
        }
    }
}

/// Established TLS connections from `listener`, for `serve_with_incoming`.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: AcceptLimits,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, addr) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "agent API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let timeout = limits.handshake_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConn::new(stream))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "agent TLS handshake failed"),
                    Err(_) => tracing::debug!(%addr, "agent TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
