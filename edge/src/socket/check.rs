//! Whether a socket's directory is safe from squatters: owned by this process's uid or root,
//! and writable by nobody else (see `socket`'s module doc for the rules).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const GROUP_WRITE: u32 = 0o020;
const OTHER_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;

/// What makes a directory unsafe for a socket, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum DirProblem {
    /// The directory, one above it, or a symbolic link on the way belongs to another user.
    #[error("{} is owned by uid {owner}, not by this process (uid {own}) or root, so its owner could replace the socket; remove it or `chown {own} {}`", .path.display(), .path.display())]
    Owner {
        /// The directory or link.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        own: u32,
    },
    /// The socket's own directory may be written by users who must not replace the socket.
    #[error("{} is writable by {by} (mode {mode:04o}), so they could replace the socket; `chmod {fix:04o} {}`", .path.display(), .path.display())]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// `others` or `its group`.
        by: &'static str,
        /// The mode to set instead.
        fix: u32,
    },
    /// A directory above the socket's may be written by others and has no sticky bit.
    #[error("{} (above the socket) is writable by {by} without the sticky bit (mode {mode:04o}), so they could rename the socket's directory; `chmod go-w {}` or `chmod +t {}`", .path.display(), .path.display(), .path.display())]
    ParentWritable {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// `others` or `its group`.
        by: &'static str,
    },
    /// Something on the way is not a directory.
    #[error("{} is not a directory; remove it", .path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A directory on the way cannot be inspected.
    #[error("cannot inspect {}: {source}", .path.display())]
    Inspect {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Checks `dir` (the socket's directory, which exists) and everything above it, both as
/// written (a symbolic link on the way must be ours or root's) and resolved.
pub fn check_dir(dir: &Path, own: u32, group_may_write: bool) -> Result<(), DirProblem> {
    let inspect = |path: &Path| {
        let path = path.to_owned();
        move |source| DirProblem::Inspect { path, source }
    };
    for prefix in top_down(dir) {
        let meta = std::fs::symlink_metadata(prefix).map_err(inspect(prefix))?;
        owner(prefix, &meta, own)?;
        if meta.file_type().is_symlink() {
            // The link is ours or root's; where it leads is checked resolved below.
            continue;
        }
        if !meta.is_dir() {
            return Err(DirProblem::NotADirectory {
                path: prefix.to_owned(),
            });
        }
        modes(prefix, &meta, prefix == dir, group_may_write)?;
    }
    let resolved = std::fs::canonicalize(dir).map_err(inspect(dir))?;
    for prefix in top_down(&resolved) {
        let meta = std::fs::metadata(prefix).map_err(inspect(prefix))?;
        owner(prefix, &meta, own)?;
        if !meta.is_dir() {
            return Err(DirProblem::NotADirectory {
                path: prefix.to_owned(),
            });
        }
        modes(prefix, &meta, prefix == resolved, group_may_write)?;
    }
    Ok(())
}

/// `/`, `/a`, `/a/b`, ... down to `dir`.
fn top_down(dir: &Path) -> Vec<&Path> {
    let mut all: Vec<&Path> = dir
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    all.reverse();
    all
}

fn owner(path: &Path, meta: &std::fs::Metadata, own: u32) -> Result<(), DirProblem> {
    let uid = meta.uid();
    if uid == own || uid == 0 {
        Ok(())
    } else {
        Err(DirProblem::Owner {
            path: path.to_owned(),
            owner: uid,
            own,
        })
    }
}

fn modes(
    path: &Path,
    meta: &std::fs::Metadata,
    socket_dir: bool,
    group_may_write: bool,
) -> Result<(), DirProblem> {
    let mode = meta.permissions().mode() & 0o7777;
    let by = if mode & OTHER_WRITE != 0 {
        "others"
    } else if mode & GROUP_WRITE != 0 && !(socket_dir && group_may_write) {
        "its group"
    } else {
        return Ok(());
    };
    if socket_dir {
        let forbidden = if group_may_write {
            OTHER_WRITE
        } else {
            OTHER_WRITE | GROUP_WRITE
        };
        return Err(DirProblem::Writable {
            path: path.to_owned(),
            mode,
            by,
            fix: mode & !forbidden & !STICKY,
        });
    }
    if mode & STICKY != 0 {
        return Ok(());
    }
    Err(DirProblem::ParentWritable {
        path: path.to_owned(),
        mode,
        by,
    })
}
