//! One secure binder for the Unix sockets of both binaries (the server's admin API, the
//! agent's Workload API): [`bind`] with a [`SocketPolicy`].
//!
//! What `bind` does, in order:
//!
//! 1. Creates the socket's directory if it is missing, one component at a time, each with an
//!    explicit mode that the umask cannot widen: the socket's own directory gets
//!    [`SocketPolicy::dir_mode`] (admin 0770, Workload API 0755), directories above it 0755.
//! 2. Checks the directory and every directory above it ([`check`]): a squatter who owns, or
//!    may write to, any of them could swap the socket for its own and read what clients send
//!    or answer in the server's name. Refused, with an error naming the path, the problem and
//!    the fix:
//!    - a directory (or a symbolic link on the way) owned by a uid other than this process's or
//!      root's;
//!    - the socket's own directory writable by others, or by its group unless the policy says
//!      its group is trusted (the admin socket: SPIRE gives the group access on purpose);
//!    - a directory above it writable by group or others without the sticky bit (`/tmp`, mode
//!      1777, is fine: nobody can rename or remove what another user put there).
//!
//!    SPIRE creates the directory (0750 for the server) and chmods the socket but checks an
//!    existing directory not at all; Tessera refuses what SPIRE would silently use.
//! 3. A socket file already there: if something answers on it, refused (another process owns
//!    it); if nothing does, it is stale (left by a crash) and replaced. Any other file is
//!    refused.
//! 4. Binds, then sets the socket's mode ([`SocketPolicy::socket_mode`]: admin 0770 by default,
//!    Workload API 0777: who gets what there is decided by attestation, not file modes). The
//!    instant between the two is covered by the directory's mode and, for the admin socket, by
//!    the peer check at accept (`crate::peer`).
//!
//! The returned [`SocketGuard`] removes the socket file when dropped.

mod check;

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

pub use self::check::{check_dir, DirProblem};

/// How one socket is bound: modes, and who may own or write its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPolicy {
    /// What the socket is, for messages (`admin socket`, `Workload API socket`).
    pub what: &'static str,
    /// How its path is configured, for messages (`--socketPath / server.socket_path`).
    pub path_key: &'static str,
    /// Mode of the socket's directory when `bind` creates it.
    pub dir_mode: u32,
    /// Mode set on the socket file after binding.
    pub socket_mode: u32,
    /// Whether an existing socket directory may be writable by its group (the admin socket's
    /// group is its admins); writable by others is always refused.
    pub group_may_write_dir: bool,
}

/// Mode of a directory `bind` creates above the socket's own: traversable, written by us only.
pub const PARENT_DIR_MODE: u32 = 0o755;

impl SocketPolicy {
    /// The server's admin socket: directory 0770, socket `socket_mode` (0770 by default,
    /// SPIRE's), group-writable directory accepted (the group is the admins').
    pub fn admin(socket_mode: u32) -> Self {
        Self {
            what: "admin socket",
            path_key: "--socketPath / server.socket_path",
            dir_mode: 0o770,
            socket_mode,
            group_may_write_dir: true,
        }
    }

    /// The agent's Workload API socket: directory 0755, socket 0777 (every local user may
    /// connect; attestation decides what they get), directory writable by us only.
    pub fn workload() -> Self {
        Self {
            what: "Workload API socket",
            path_key: "--socketPath / agent.socket_path",
            dir_mode: 0o755,
            socket_mode: 0o777,
            group_may_write_dir: false,
        }
    }
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on the socket.
    #[error("{what} {}: another process is listening on this socket; stop it or choose another path ({key})", .path.display())]
    InUse {
        /// Which socket.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// How the path is configured.
        key: &'static str,
    },
    /// Something that is not a socket is in the way.
    #[error("{what} {}: exists and is not a socket; remove it or choose another path ({key})", .path.display())]
    NotASocket {
        /// Which socket.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// How the path is configured.
        key: &'static str,
    },
    /// The socket's directory, or one above it, could be used to swap the socket.
    #[error("{what} {}: {problem}; or choose another path ({key})", .path.display())]
    UnsafeDir {
        /// Which socket.
        what: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// What is wrong, and the fix.
        problem: DirProblem,
        /// How the path is configured.
        key: &'static str,
    },
    /// A file system or socket call failed.
    #[error("{what} {}: cannot {operation}: {source}", .path.display())]
    Io {
        /// Which socket.
        what: &'static str,
        /// The path the call was about.
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

/// The effective uid of this process: the owner of the files it creates, trusted beside root.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Binds a Unix listener at `path` under `policy` (see the module doc).
pub async fn bind(
    path: &Path,
    policy: &SocketPolicy,
) -> Result<(UnixListener, SocketGuard), SocketError> {
    let io = |path: &Path, operation: &'static str| {
        let path = path.to_owned();
        move |source| SocketError::Io {
            what: policy.what,
            path,
            operation,
            source,
        }
    };
    // A relative path is taken from the working directory, as bind(2) would.
    let absolute = std::path::absolute(path).map_err(io(path, "resolve the path"))?;
    let dir = match absolute.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("/"),
    };
    create_dirs(&dir, policy).map_err(|(at, source)| SocketError::Io {
        what: policy.what,
        path: at,
        operation: "create the socket's directory",
        source,
    })?;
    check_dir(&dir, own_uid(), policy.group_may_write_dir).map_err(|problem| {
        SocketError::UnsafeDir {
            what: policy.what,
            path: path.to_owned(),
            problem,
            key: policy.path_key,
        }
    })?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(SocketError::InUse {
                    what: policy.what,
                    path: path.to_owned(),
                    key: policy.path_key,
                });
            }
            std::fs::remove_file(path).map_err(io(path, "remove the stale socket"))?;
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                what: policy.what,
                path: path.to_owned(),
                key: policy.path_key,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path, "inspect")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io(path, "bind"))?;
    let guard = SocketGuard(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(policy.socket_mode))
        .map_err(io(path, "set the socket's mode"))?;
    Ok((listener, guard))
}

/// Creates `dir` and its missing ancestors, each with its mode set explicitly (the umask may
/// be 000); returns the directory that could not be made.
fn create_dirs(dir: &Path, policy: &SocketPolicy) -> Result<(), (PathBuf, std::io::Error)> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| std::fs::symlink_metadata(d).is_err())
        .collect();
    for d in missing.into_iter().rev() {
        let mode = if d == dir {
            policy.dir_mode
        } else {
            PARENT_DIR_MODE
        };
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => {}
            // Another process made it meanwhile: the checks judge it like any existing one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err((d.to_owned(), e)),
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
            .map_err(|e| (d.to_owned(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
