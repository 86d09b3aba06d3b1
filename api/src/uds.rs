//! The admin socket's file, bound by `tessera_edge::socket` under the admin policy: a
//! directory it creates is 0770 (as SPIRE's), an existing one must be ours or root's and
//! writable by nobody but us and its group, the socket gets `[admin_socket] mode` (0770 by
//! default), a stale socket is replaced, a live one refused (another server owns it), and the
//! file is removed at shutdown.

use std::path::Path;

pub use tessera_edge::socket::{SocketError, SocketGuard, SocketPolicy};
use tokio::net::UnixListener;

use crate::config::admin_socket::DEFAULT_SOCKET_MODE;

/// Binds the admin socket at `path` with the default mode (0770).
pub async fn bind(path: &Path) -> Result<(UnixListener, SocketGuard), SocketError> {
    bind_with_mode(path, DEFAULT_SOCKET_MODE).await
}

/// Binds the admin socket at `path`, the socket file getting `mode`.
pub async fn bind_with_mode(
    path: &Path,
    mode: u32,
) -> Result<(UnixListener, SocketGuard), SocketError> {
    tessera_edge::socket::bind(path, &SocketPolicy::admin(mode)).await
}
