//! The `unix` workload attestor (SPIRE's): selectors from the caller's socket credentials and
//! its `/proc` entry.
//!
//! | selector | from |
//! |---|---|
//! | `unix:uid:N`, `unix:gid:N` | `SO_PEERCRED` (effective ids at connect time) |
//! | `unix:user:NAME`, `unix:group:NAME` | `/etc/passwd`, `/etc/group` |
//! | `unix:supplementary_gid:N`, `unix:supplementary_group:NAME` | `/proc/<pid>/status` `Groups:` |
//! | `unix:path:P`, `unix:sha256:HEX` | `/proc/<pid>/exe`, when `discover_workload_path` |
//!
//! The account files are parsed once and kept until they change (a `stat` per call, see
//! [`accounts`]); the binary's digest is kept by file identity ([`exe`]).
//!
//! Before trusting `/proc/<pid>`, the attestor checks that the process there still has the
//! effective uid and gid the socket reported: a caller that exited and whose pid was reused
//! by another process is refused rather than described by the newcomer's groups and binary.

mod accounts;
mod exe;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use tessera_eventlog::{Clock, SystemClock};
use tessera_identity::Selector;

use self::accounts::AccountsFile;
use self::exe::{DigestCache, Hashed};
use super::process::{self, ProcStatus};
use super::{AttestError, PeerCredentials, WorkloadAttestor};

const NAME: &str = "unix";

/// Which binaries are hashed for `unix:sha256` (SPIRE's `workload_size_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadSizeLimit {
    /// Every binary, whatever its size (SPIRE's 0).
    Unlimited,
    /// Binaries up to this many bytes; larger ones get no `sha256` selector.
    Bytes(u64),
    /// None (SPIRE's negative values).
    Never,
}

impl WorkloadSizeLimit {
    /// From SPIRE's integer: 0 unlimited, negative never, positive a size in bytes.
    pub fn from_spire(value: i64) -> Self {
        match u64::try_from(value) {
            Ok(0) => Self::Unlimited,
            Ok(n) => Self::Bytes(n),
            Err(_) => Self::Never,
        }
    }
}

/// Settings of the `unix` attestor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixAttestorConfig {
    /// Add `unix:path` and `unix:sha256`.
    pub discover_workload_path: bool,
    /// Which binaries are hashed.
    pub workload_size_limit: WorkloadSizeLimit,
    /// The users file (`/etc/passwd`).
    pub passwd_path: PathBuf,
    /// The groups file (`/etc/group`).
    pub group_path: PathBuf,
    /// Where process entries live (`/proc`).
    pub proc_root: PathBuf,
}

impl Default for UnixAttestorConfig {
    fn default() -> Self {
        Self {
            discover_workload_path: false,
            workload_size_limit: WorkloadSizeLimit::Bytes(128 * 1024 * 1024),
            passwd_path: PathBuf::from("/etc/passwd"),
            group_path: PathBuf::from("/etc/group"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// The `unix` attestor.
#[derive(Debug, Clone)]
pub struct UnixAttestor {
    config: Arc<UnixAttestorConfig>,
    passwd: Arc<AccountsFile>,
    groups: Arc<AccountsFile>,
    digests: Arc<DigestCache>,
    clock: Arc<dyn Clock>,
}

impl UnixAttestor {
    /// An attestor with `config`.
    pub fn new(config: UnixAttestorConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// An attestor with `config`, judging how recently the account files changed by `clock`.
    pub fn with_clock(config: UnixAttestorConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            passwd: Arc::new(AccountsFile::new(config.passwd_path.clone())),
            groups: Arc::new(AccountsFile::new(config.group_path.clone())),
            config: Arc::new(config),
            digests: Arc::new(DigestCache::default()),
            clock,
        }
    }

    /// The selectors of `caller`, reading files (blocking).
    pub fn attest_blocking(&self, caller: &PeerCredentials) -> Result<Vec<Selector>, AttestError> {
        let c = &self.config;
        let mut out = Vec::new();
        push(&mut out, "uid", &caller.uid.to_string());
        push(&mut out, "gid", &caller.gid.to_string());
        let now = self.clock.now_unix_nanos();
        let passwd = self.passwd.load(now).map_err(io_err(self.passwd.path()))?;
        if let Some(user) = passwd.name(caller.uid) {
            push(&mut out, "user", user);
        }
        let groups = self.groups.load(now).map_err(io_err(self.groups.path()))?;
        if let Some(group) = groups.name(caller.gid) {
            push(&mut out, "group", group);
        }
        let Some(pid) = caller.pid else {
            tracing::debug!(
                uid = caller.uid,
                "caller's pid is not visible: no /proc selectors"
            );
            return Ok(out);
        };
        let proc_dir = c.proc_root.join(pid.to_string());
        let status = read_proc(&proc_dir.join("status"), pid)?;
        let status = ProcStatus::parse(&status);
        if status.euid != Some(caller.uid) || status.egid != Some(caller.gid) {
            return Err(AttestError::CallerChanged {
                pid,
                detail: "the process no longer has the uid and gid it connected with".into(),
            });
        }
        for gid in status.groups {
            push(&mut out, "supplementary_gid", &gid.to_string());
            if let Some(name) = groups.name(gid) {
                push(&mut out, "supplementary_group", name);
            }
        }
        if c.discover_workload_path {
            self.workload_path(&proc_dir, pid, &mut out)?;
        }
        Ok(out)
    }

    fn workload_path(
        &self,
        proc_dir: &Path,
        pid: u32,
        out: &mut Vec<Selector>,
    ) -> Result<(), AttestError> {
        let exe = proc_dir.join("exe");
        let target = std::fs::read_link(&exe).map_err(|e| proc_err(&exe, pid, e))?;
        match target.to_str() {
            Some(path) => push(out, "path", path),
            None => {
                tracing::warn!(pid, path = %target.display(), "workload path is not UTF-8: no unix:path selector")
            }
        }
        let limit = match self.config.workload_size_limit {
            WorkloadSizeLimit::Never => return Ok(()),
            WorkloadSizeLimit::Unlimited => None,
            WorkloadSizeLimit::Bytes(n) => Some(n),
        };
        match self
            .digests
            .sha256(&exe, limit)
            .map_err(|e| proc_err(&exe, pid, e))?
        {
            Hashed::Digest(hex) => push(out, "sha256", &hex),
            Hashed::TooLarge { size, limit } => tracing::warn!(
                pid,
                path = %target.display(),
                size,
                limit,
                "workload binary is larger than workload_attestor.unix.workload_size_limit: no unix:sha256 selector"
            ),
        }
        Ok(())
    }
}

impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attest<'a>(
        &'a self,
        caller: &'a PeerCredentials,
    ) -> BoxFuture<'a, Result<Vec<Selector>, AttestError>> {
        let this = self.clone();
        let caller = *caller;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.attest_blocking(&caller))
                .await
                .map_err(|e| AttestError::Failed {
                    attestor: NAME,
                    reason: e.to_string(),
                })?
        })
    }
}

/// Adds `unix:<kind>:<value>`; a value the selector rules refuse (a control character in a
/// path) is logged and left out.
fn push(out: &mut Vec<Selector>, kind: &str, value: &str) {
    match Selector::new(NAME, &format!("{kind}:{value}")) {
        Ok(s) => out.push(s),
        Err(e) => tracing::warn!(error = %e, "unix attestor: selector left out"),
    }
}

fn read_proc(path: &Path, pid: u32) -> Result<String, AttestError> {
    let mut text = String::new();
    let file = std::fs::File::open(path).map_err(|e| proc_err(path, pid, e))?;
    // /proc/<pid>/status is a few KiB; bound it anyway.
    std::io::Read::read_to_string(&mut std::io::Read::take(file, 1024 * 1024), &mut text)
        .map_err(|e| proc_err(path, pid, e))?;
    Ok(text)
}

fn proc_err(path: &Path, pid: u32, e: std::io::Error) -> AttestError {
    if process::is_gone(&e) {
        AttestError::CallerChanged {
            pid,
            detail: "it has exited".into(),
        }
    } else {
        io_err(path)(e)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AttestError + '_ {
    move |source| AttestError::Io {
        attestor: NAME,
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests;
