//! The Workload API socket's file, bound by `tessera_edge::socket` under the Workload API's
//! policy: a directory it creates is 0755, an existing one must be ours or root's and writable
//! by nobody else, the socket is 0777 (every local user may connect; attestation decides what
//! they get), a stale socket is replaced, a live one refused, and the file is removed at
//! shutdown.

use std::path::Path;

pub use tessera_edge::socket::{SocketError, SocketGuard, SocketPolicy};
use tokio::net::UnixListener;

/// Binds the Workload API at `path` (see the module doc). The guard removes the file again.
pub async fn bind(path: &Path) -> Result<(UnixListener, SocketGuard), SocketError> {
    tessera_edge::socket::bind(path, &SocketPolicy::workload()).await
}
