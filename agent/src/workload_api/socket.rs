//! The Workload API socket's file: its directory (created if missing), a stale socket left by
//! a crash (replaced), a live one (refused: another agent owns it), mode 0777 so every local
//! user can reach it (what a workload may have is decided by attestation, not by file
//! permissions), and removal at shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Mode of the socket: every local user may connect.
pub const SOCKET_MODE: u32 = 0o777;
/// Mode of a directory created for the socket: every local user may traverse it.
pub const SOCKET_DIR_MODE: u32 = 0o755;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on the socket.
    #[error("{}: another agent is listening on this socket; stop it or choose another --socketPath", .0.display())]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{}: exists and is not a socket; remove it or choose another --socketPath", .0.display())]
    NotASocket(PathBuf),
    /// A file system or socket call failed.
    #[error("{}: cannot {operation}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct SocketGuard(PathBuf);

impl SocketGuard {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn io<'a>(
    path: &'a Path,
    operation: &'static str,
) -> impl FnOnce(std::io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        path: path.to_owned(),
        operation,
        source,
    }
}

/// Binds the Workload API at `path` (see the module doc). The guard removes the file again.
pub async fn bind(path: &Path) -> Result<(UnixListener, SocketGuard), SocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir, "create the socket's directory"))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(SOCKET_DIR_MODE))
                .map_err(io(dir, "set the mode of the socket's directory"))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(SocketError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io(path, "remove the stale socket"))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path, "inspect")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io(path, "bind"))?;
    let guard = SocketGuard(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io(path, "set the socket's mode"))?;
    Ok((listener, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_dir_sets_modes_replaces_stale_refuses_live_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("public/api.sock");
        let (listener, guard) = bind(&path).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), SOCKET_DIR_MODE);
        assert_eq!(mode(&path), SOCKET_MODE);
        assert!(matches!(bind(&path).await, Err(SocketError::InUse(_))));
        // A crash leaves the file behind without a listener: stale.
        drop(listener);
        std::mem::forget(guard);
        assert!(path.exists());
        let (_listener, guard) = bind(&path).await.unwrap();
        drop(guard);
        assert!(!path.exists());

        let file = tmp.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(bind(&file).await, Err(SocketError::NotASocket(_))));
    }
}
