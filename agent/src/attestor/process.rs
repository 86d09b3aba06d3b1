//! Is the process attested still the process that called? A caller's credentials are read
//! once per connection, and its pid names a process only until that process exits: the pid may
//! then be given to another one, which would be described by the attestors instead (its
//! binary, its groups). The start time read at accept (`PeerCredentials::start_time`) must still
//! be the pid's when attestation starts; then, as SPIRE's peer tracker does, [`ProcessCheck`]
//! stamps the caller before the attestors run (start time and effective uid from `/proc/<pid>`) and checks the stamp
//! again once they are done; a process that is gone, a zombie, or has another start time or
//! uid is refused with [`AttestError::CallerChanged`] (`PermissionDenied`, retry).
//!
//! `/proc` is read through [`ProcessProbe`], so the check can be tested with a mismatch that a
//! real system would only produce after a pid wraps around.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{AttestError, PeerCredentials};

/// What tells one process from a later one with the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessStamp {
    /// Start time, clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
    /// Effective uid (second field of `Uid:` in `/proc/<pid>/status`).
    pub euid: u32,
}

/// Reads a process's [`ProcessStamp`].
pub trait ProcessProbe: Send + Sync + fmt::Debug + 'static {
    /// The stamp of process `pid`; `Ok(None)` when there is no live process with that pid (no
    /// entry, or a zombie that has exited and not been reaped yet).
    fn stamp(&self, pid: u32) -> Result<Option<ProcessStamp>, AttestError>;
}

/// The [`ProcessProbe`] of a `/proc` file system.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    /// Reads process entries under `root` (`/proc`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl Default for ProcFs {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcessProbe for ProcFs {
    fn stamp(&self, pid: u32) -> Result<Option<ProcessStamp>, AttestError> {
        let dir = self.root.join(pid.to_string());
        let stat_path = dir.join("stat");
        let Some(stat) = read_small(&stat_path)? else {
            return Ok(None);
        };
        let stat = ProcStat::parse(&stat).map_err(|reason| AttestError::Failed {
            attestor: CHECK,
            reason: format!("{}: {reason}", stat_path.display()),
        })?;
        if stat.exited() {
            return Ok(None);
        }
        let status_path = dir.join("status");
        let Some(status) = read_small(&status_path)? else {
            return Ok(None);
        };
        let euid = ProcStatus::parse(&status)
            .euid
            .ok_or_else(|| AttestError::Failed {
                attestor: CHECK,
                reason: format!("{}: no effective uid", status_path.display()),
            })?;
        Ok(Some(ProcessStamp {
            start_time: stat.start_time,
            euid,
        }))
    }
}

const CHECK: &str = "process check";

/// Stamps a caller before attestation and confirms the stamp after it.
#[derive(Debug, Clone)]
pub struct ProcessCheck {
    probe: Arc<dyn ProcessProbe>,
}

impl Default for ProcessCheck {
    fn default() -> Self {
        Self::new(Arc::new(ProcFs::default()))
    }
}

impl ProcessCheck {
    /// A check reading processes through `probe`.
    pub fn new(probe: Arc<dyn ProcessProbe>) -> Self {
        Self { probe }
    }

    /// The caller's stamp, taken before its attestation; `None` when the kernel gave no pid
    /// (a caller in another pid namespace), and there is nothing to check.
    pub fn record(&self, caller: &PeerCredentials) -> Result<Option<ProcessStamp>, AttestError> {
        let Some(pid) = caller.pid else {
            return Ok(None);
        };
        let stamp = self
            .probe
            .stamp(pid)?
            .ok_or_else(|| changed(pid, "it has exited".into()))?;
        if let Some(at_accept) = caller.start_time.filter(|t| *t != stamp.start_time) {
            return Err(changed(
                pid,
                format!(
                    "the process that connected (start time {at_accept}) is gone; the pid now names one started at {}",
                    stamp.start_time
                ),
            ));
        }
        if stamp.euid != caller.uid {
            return Err(changed(
                pid,
                format!(
                    "it connected with uid {} and now runs as uid {}",
                    caller.uid, stamp.euid
                ),
            ));
        }
        Ok(Some(stamp))
    }

    /// Checks, after attestation, that the caller is still the process `record` stamped.
    pub fn confirm(
        &self,
        caller: &PeerCredentials,
        recorded: Option<ProcessStamp>,
    ) -> Result<(), AttestError> {
        let (Some(pid), Some(before)) = (caller.pid, recorded) else {
            return Ok(());
        };
        match self.probe.stamp(pid)? {
            None => Err(changed(pid, "it has exited".into())),
            Some(now) if now.start_time != before.start_time => Err(changed(
                pid,
                format!(
                    "the process now has start time {} (was {})",
                    now.start_time, before.start_time
                ),
            )),
            Some(now) if now.euid != before.euid => Err(changed(
                pid,
                format!("it now runs as uid {} (was {})", now.euid, before.euid),
            )),
            Some(_) => Ok(()),
        }
    }
}

fn changed(pid: u32, detail: String) -> AttestError {
    AttestError::CallerChanged { pid, detail }
}

/// Reads a small `/proc` file; `None` when the process is gone (ENOENT, or ESRCH while
/// reading).
fn read_small(path: &Path) -> Result<Option<String>, AttestError> {
    let io = |source| AttestError::Io {
        attestor: CHECK,
        path: path.display().to_string(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if is_gone(&e) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut text = String::new();
    // These files are a few KiB; bound them anyway.
    match file.take(256 * 1024).read_to_string(&mut text) {
        Ok(_) => Ok(Some(text)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// ENOENT, or ESRCH: the process died while its entry was being read.
pub(super) fn is_gone(e: &std::io::Error) -> bool {
    const ESRCH: i32 = 3;
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH)
}

pub(crate) use tessera_edge::peer::proc::ProcStat;

/// What the attestors read from `/proc/<pid>/status`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcStatus {
    pub euid: Option<u32>,
    pub egid: Option<u32>,
    pub groups: Vec<u32>,
}

impl ProcStatus {
    /// Reads the `Uid:`, `Gid:` (real, effective, saved, fs) and `Groups:` lines.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let mut ids = rest.split_whitespace().map(str::parse::<u32>);
            match key {
                "Uid" => s.euid = ids.nth(1).and_then(Result::ok),
                "Gid" => s.egid = ids.nth(1).and_then(Result::ok),
                "Groups" => s.groups = ids.filter_map(Result::ok).collect(),
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;
