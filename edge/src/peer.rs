//! Local peers of a Unix-socket gRPC server: who they are, whether they may connect, how many
//! connections they may hold and for how long when idle.
//!
//! [`incoming`] accepts connections for tonic's `serve_with_incoming*` and, at accept:
//! - reads the caller's credentials with `SO_PEERCRED` ([`PeerCredentials`], read once, so the
//!   caller cannot change them afterwards); a connection whose credentials cannot be read is
//!   dropped;
//! - refuses a uid outside the policy's allow list (the admin socket: this process's uid and
//!   root by default), closing the connection and logging the uid and the config key;
//! - refuses a connection over the total cap or the caller's per-uid cap, likewise.
//!
//! Each accepted [`PeerStream`] passes what the client sends through the `:authority` fix
//! ([`crate::authority`]), and closes itself once no request has been in flight on it for the
//! idle timeout (counted by [`TrackRequests`], which the server must use). Services find the
//! caller's [`PeerCredentials`] in each request's extensions.
//!
//! Refusals are logged at the 1st, 2nd, 4th, 8th... of each kind, with the count, so that a
//! caller hammering the socket cannot flood the log.

mod activity;
pub mod proc;
mod slots;
#[cfg(feature = "test-support")]
pub mod testing;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Future, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

pub use self::activity::{Activity, InFlight, TrackRequests, Tracked, TrackedBody};
use self::slots::{Full, Slot, Slots};
use crate::authority::AuthorityFix;

/// Who is calling, as the kernel reports it for the socket (`SO_PEERCRED`): read once when
/// the connection is accepted, so the caller cannot change it afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// Effective user id of the process that connected.
    pub uid: u32,
    /// Effective group id of the process that connected.
    pub gid: u32,
    /// Its process id, when the kernel gives one (absent or 0 for a process in another PID
    /// namespace).
    pub pid: Option<u32>,
    /// That process's start time (clock ticks after boot, `/proc/<pid>/stat`) read at accept,
    /// so a later check can tell it from another process given the same pid; `None` when it
    /// could not be read.
    pub start_time: Option<u64>,
}

impl PeerCredentials {
    /// From tokio's `UCred`; a pid of 0 or below means "not visible here".
    pub fn from_ucred(cred: &tokio::net::unix::UCred) -> Self {
        let pid = cred
            .pid()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid,
            start_time: pid.and_then(proc::start_time),
        }
    }
}

/// The config keys of a [`PeerPolicy`], named in refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyKeys {
    /// Key of [`PeerPolicy::max_connections`].
    pub max_connections: &'static str,
    /// Key of [`PeerPolicy::max_connections_per_uid`].
    pub max_connections_per_uid: &'static str,
    /// Key of [`PeerPolicy::allowed_uids`].
    pub allowed_uids: &'static str,
    /// Key of [`PeerPolicy::idle_timeout`].
    pub idle_timeout: &'static str,
}

/// A [`PeerPolicy`] value that cannot work, naming its config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {reason}")]
pub struct PolicyError {
    /// The config key.
    pub key: &'static str,
    /// The value as written.
    pub value: String,
    /// The rule it breaks.
    pub reason: String,
}

impl PeerPolicy {
    /// Checks the policy's values, naming the key of the first bad one.
    pub fn check(&self) -> Result<(), PolicyError> {
        let bad = |key, value: String, reason: String| Err(PolicyError { key, value, reason });
        if self.max_connections == 0 {
            return bad(
                self.keys.max_connections,
                "0".into(),
                "must be at least 1".into(),
            );
        }
        if self.max_connections_per_uid == 0 || self.max_connections_per_uid > self.max_connections
        {
            return bad(
                self.keys.max_connections_per_uid,
                self.max_connections_per_uid.to_string(),
                format!(
                    "must be between 1 and {} ({})",
                    self.keys.max_connections, self.max_connections
                ),
            );
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return bad(
                self.keys.idle_timeout,
                "0s".into(),
                "must be positive, e.g. \"5m\"".into(),
            );
        }
        if self.allowed_uids.as_ref().is_some_and(Vec::is_empty) {
            return bad(
                self.keys.allowed_uids,
                "[]".into(),
                "would let nobody in; list at least one uid, or remove the key for the default"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Who may connect, how many connections they may hold, and how long an idle one stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    /// What is served, for log lines (`admin API`, `Workload API`).
    pub what: &'static str,
    /// Connections open at once, all callers.
    pub max_connections: usize,
    /// Connections open at once per caller uid.
    pub max_connections_per_uid: usize,
    /// A connection with no request in flight for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// The uids that may connect; `None`: every uid.
    pub allowed_uids: Option<Vec<u32>>,
    /// The config keys, for refusals.
    pub keys: PolicyKeys,
}

/// What tonic hands each request of a [`PeerStream`] (the [`TrackRequests`] layer unpacks it).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The caller.
    pub credentials: PeerCredentials,
    /// The connection's requests in flight.
    pub activity: Arc<Activity>,
}

/// A Unix connection, the credentials of the process that opened it, its `:authority` fix,
/// its slot under the connection caps and its idle timer.
#[derive(Debug)]
pub struct PeerStream {
    io: UnixStream,
    peer: PeerCredentials,
    fix: AuthorityFix,
    closed: bool,
    activity: Arc<Activity>,
    idle_timeout: Option<Duration>,
    /// The idle timer and the activity epoch it was armed at.
    idle: Option<(Pin<Box<tokio::time::Sleep>>, u64)>,
    what: &'static str,
    _slot: Option<Slot>,
}

impl PeerStream {
    /// Wraps a connection, reading its peer's credentials; no idle timeout, no caps.
    pub fn new(io: UnixStream) -> io::Result<Self> {
        let cred = io.peer_cred()?;
        Ok(Self {
            io,
            peer: PeerCredentials::from_ucred(&cred),
            fix: AuthorityFix::default(),
            closed: false,
            activity: Arc::default(),
            idle_timeout: None,
            idle: None,
            what: "Unix socket",
            _slot: None,
        })
    }

    /// The caller.
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    /// Bytes held by the `:authority` fix now.
    pub fn held(&self) -> usize {
        self.fix.held()
    }

    /// Whether the idle timer has fired (the connection has been idle for the timeout).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        // Registered before reading the count, so that a request ending meanwhile wakes us.
        self.activity.register_reader(cx);
        if self.activity.in_flight() > 0 {
            self.idle = None;
            return false;
        }
        let epoch = self.activity.epoch();
        let timer = match &mut self.idle {
            Some((timer, at)) if *at == epoch => timer,
            slot => {
                &mut slot
                    .insert((Box::pin(tokio::time::sleep(timeout)), epoch))
                    .0
            }
        };
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        PeerInfo {
            credentials: self.peer,
            activity: self.activity.clone(),
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.closed && this.idle_expired(cx) {
            tracing::debug!(what = this.what, uid = this.peer.uid, after = ?this.idle_timeout, "closing a connection with no request in flight");
            // Seen by the server as the client's end of the connection.
            this.closed = true;
            this.fix = AuthorityFix::default();
        }
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

/// Counts refusals of one kind and says when to log one (1st, 2nd, 4th, ...).
#[derive(Debug, Default)]
struct Refusals(AtomicU64);

impl Refusals {
    fn count(&self) -> Option<u64> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_power_of_two().then_some(n)
    }
}

#[derive(Debug)]
struct Gate {
    policy: PeerPolicy,
    slots: Slots,
    not_allowed: Refusals,
    total_full: Refusals,
    uid_full: Refusals,
}

impl Gate {
    /// The connection, or `None` (logged) if the policy refuses it.
    fn admit(&self, io: UnixStream) -> Option<PeerStream> {
        let p = &self.policy;
        let mut conn = match PeerStream::new(io) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(what = p.what, error = %e, "cannot read the caller's credentials; connection closed");
                return None;
            }
        };
        let uid = conn.peer.uid;
        if let Some(allowed) = &p.allowed_uids {
            if !allowed.contains(&uid) {
                if let Some(n) = self.not_allowed.count() {
                    tracing::warn!(what = p.what, uid, refused_so_far = n, "connection refused: uid {uid} is not in {} ({allowed:?}); add it there to let it in", p.keys.allowed_uids);
                }
                return None;
            }
        }
        match self.slots.try_acquire(uid) {
            Ok(slot) => conn._slot = Some(slot),
            Err(Full::Total) => {
                if let Some(n) = self.total_full.count() {
                    tracing::warn!(what = p.what, uid, refused_so_far = n, "connection refused: {} connections are open ({}); connection of uid {uid} closed", p.max_connections, p.keys.max_connections);
                }
                return None;
            }
            Err(Full::PerUid) => {
                if let Some(n) = self.uid_full.count() {
                    tracing::warn!(what = p.what, uid, refused_so_far = n, "connection refused: uid {uid} holds {} connections ({}); connection closed", p.max_connections_per_uid, p.keys.max_connections_per_uid);
                }
                return None;
            }
        }
        conn.idle_timeout = p.idle_timeout;
        conn.what = p.what;
        Some(conn)
    }
}

/// Connections accepted from `listener` under `policy`, for tonic's `serve_with_incoming*`
/// (see the module doc). Accept errors (out of file descriptors...) are logged and retried
/// after a pause instead of spinning; the stream never ends by itself.
pub fn incoming(
    listener: UnixListener,
    policy: PeerPolicy,
) -> impl Stream<Item = io::Result<PeerStream>> + Send + 'static {
    let gate = Arc::new(Gate {
        slots: Slots::new(policy.max_connections, policy.max_connections_per_uid),
        policy,
        not_allowed: Refusals::default(),
        total_full: Refusals::default(),
        uid_full: Refusals::default(),
    });
    futures::stream::unfold((listener, gate), |(listener, gate)| async move {
        loop {
            match listener.accept().await {
                Ok((io, _)) => {
                    if let Some(conn) = gate.admit(io) {
                        return Some((Ok(conn), (listener, gate)));
                    }
                }
                Err(e) => {
                    tracing::warn!(what = gate.policy.what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
