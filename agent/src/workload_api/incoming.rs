//! Accepted Workload API connections, each carrying its caller's credentials: read with
//! `SO_PEERCRED` once at accept and handed to every request as a request extension
//! ([`PeerCredentials`], through tonic's `Connected`). A connection whose credentials cannot
//! be read is dropped: nothing is served to an unknown caller. What the client sends passes
//! through [`AuthorityFix`] (grpc clients that send the socket path as `:authority`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

use super::authority::AuthorityFix;
use crate::attestor::PeerCredentials;

/// A Unix connection and the credentials of the process that opened it.
#[derive(Debug)]
pub struct PeerStream {
    io: UnixStream,
    peer: PeerCredentials,
    fix: AuthorityFix,
    closed: bool,
}

impl PeerStream {
    /// Wraps an accepted connection, reading its peer's credentials.
    pub fn new(io: UnixStream) -> io::Result<Self> {
        let cred = io.peer_cred()?;
        Ok(Self {
            io,
            peer: PeerCredentials::from_ucred(&cred),
            fix: AuthorityFix::default(),
            closed: false,
        })
    }

    /// The caller.
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerCredentials;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.fix.has_ready() || this.closed {
                let n = this.fix.take(buf.initialize_unfilled());
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 8192];
            let mut read = ReadBuf::new(&mut raw);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.fix.finish();
                    this.closed = true;
                }
                Poll::Ready(Ok(())) => this.fix.feed(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Connections accepted from `listener`, for `serve_with_incoming`. Accept errors (out of
/// file descriptors...) are logged and retried after a pause instead of spinning; the stream
/// never ends by itself.
pub fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = io::Result<PeerStream>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((io, _)) => match PeerStream::new(io) {
                    Ok(conn) => return Some((Ok(conn), listener)),
                    Err(e) => {
                        tracing::warn!(error = %e, "Workload API: cannot read the caller's credentials; connection dropped")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "Workload API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_carry_the_callers_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut conns = Box::pin(incoming(listener));
        let _client = UnixStream::connect(&path).await.unwrap();
        let conn = tokio::time::timeout(Duration::from_secs(10), conns.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let me = PeerStream::new(UnixStream::pair().unwrap().0)
            .unwrap()
            .peer();
        assert_eq!(conn.connect_info(), me);
        assert_eq!(conn.peer().pid, Some(std::process::id()));
    }
}
