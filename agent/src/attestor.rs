//! Workload attestation: from the credentials of a process calling the Workload API to the
//! selectors that describe it. Each [`WorkloadAttestor`] contributes selectors of its own type
//! (`unix:...`); [`Attestors`] runs all of them, bounded in time, and merges the result.
//!
//! A selector an attestor cannot observe is simply absent: missing selectors can only narrow
//! what a workload is entitled to, never widen it.
//!
//! Around the attestors, [`process::ProcessCheck`] makes sure the selectors describe the
//! process that called: it stamps the caller (start time, uid) before they run and refuses the
//! call if the stamp changed by the time they are done (the caller exited, its pid was reused).

pub mod process;
pub mod unix;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tessera_identity::{Selector, SelectorSet};
use tracing::Instrument;

use self::process::ProcessCheck;

/// Who is calling (`SO_PEERCRED`, read once at accept): `tessera_edge::peer`'s.
pub use tessera_edge::peer::PeerCredentials;

/// Why a workload could not be attested. The caller is answered `Unavailable` (it may
/// retry); details go to the agent's log.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// An attestor did not finish within `limits.attestation_timeout`.
    #[error("workload attestor {attestor:?} did not finish within {after:?} (limits.attestation_timeout)")]
    Timeout {
        /// The attestor.
        attestor: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The calling process exited, or its pid now names another process (another start time
    /// or uid), between the connection and the end of attestation: the selectors found might
    /// describe a newcomer. The caller is answered `PermissionDenied`; a live caller that
    /// retries is attested afresh.
    #[error("the calling process exited or its PID was reused during attestation; retry (pid {pid}: {detail})")]
    CallerChanged {
        /// The pid the connection reported.
        pid: u32,
        /// What changed.
        detail: String,
    },
    /// A file the attestor reads could not be read.
    #[error("workload attestor {attestor:?}: cannot read {path}: {source}")]
    Io {
        /// The attestor.
        attestor: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The attestor's worker task failed (a bug).
    #[error("workload attestor {attestor:?} failed: {reason}")]
    Failed {
        /// The attestor.
        attestor: &'static str,
        /// What happened.
        reason: String,
    },
}

impl AttestError {
    /// Whether the caller is refused because it is no longer the process that connected
    /// (`PermissionDenied` rather than `Unavailable`).
    pub fn is_caller_changed(&self) -> bool {
        matches!(self, Self::CallerChanged { .. })
    }
}

/// Turns the credentials of a caller into selectors of one type.
pub trait WorkloadAttestor: Send + Sync + std::fmt::Debug + 'static {
    /// The selector type this attestor produces (`unix`).
    fn name(&self) -> &'static str;

    /// The selectors of the caller. Runs off the async threads where it reads files.
    fn attest<'a>(
        &'a self,
        caller: &'a PeerCredentials,
    ) -> BoxFuture<'a, Result<Vec<Selector>, AttestError>>;
}

/// Every configured attestor, run together, between the two halves of a [`ProcessCheck`].
#[derive(Debug, Clone)]
pub struct Attestors {
    attestors: Vec<Arc<dyn WorkloadAttestor>>,
    timeout: Duration,
    check: ProcessCheck,
}

impl Attestors {
    /// `attestors`, each bounded by `timeout`, checking callers in `/proc`.
    pub fn new(attestors: Vec<Arc<dyn WorkloadAttestor>>, timeout: Duration) -> Self {
        Self {
            attestors,
            timeout,
            check: ProcessCheck::default(),
        }
    }

    /// The same, checking callers with `check` instead (another `/proc`, or a test's probe).
    pub fn with_process_check(mut self, check: ProcessCheck) -> Self {
        self.check = check;
        self
    }

    /// The attestors configured.
    pub fn attestors(&self) -> &[Arc<dyn WorkloadAttestor>] {
        &self.attestors
    }

    /// The caller's selectors: the union of every attestor's. Fails if any attestor fails,
    /// so that a caller is never served on a partial picture it did not ask for, and with
    /// [`AttestError::CallerChanged`] if the caller exited or its pid was reused meanwhile.
    pub async fn attest(&self, caller: &PeerCredentials) -> Result<SelectorSet, AttestError> {
        let span = tracing::info_span!(
            "attest_workload",
            pid = caller.pid,
            uid = caller.uid,
            selectors = tracing::field::Empty,
        );
        let selectors = self.attest_all(caller).instrument(span.clone()).await?;
        span.record("selectors", selectors.len());
        Ok(selectors)
    }

    async fn attest_all(&self, caller: &PeerCredentials) -> Result<SelectorSet, AttestError> {
        // `/proc/<pid>/stat` and `status` are kernel-generated and never wait on a disk.
        let stamp = self.check.record(caller)?;
        let runs = self.attestors.iter().map(|a| async move {
            match tokio::time::timeout(self.timeout, a.attest(caller)).await {
                Ok(result) => result,
                Err(_) => Err(AttestError::Timeout {
                    attestor: a.name(),
                    after: self.timeout,
                }),
            }
        });
        let mut selectors = SelectorSet::new();
        for result in futures::future::join_all(runs).await {
            for s in result? {
                selectors.insert(s);
            }
        }
        self.check.confirm(caller, stamp)?;
        Ok(selectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(&'static str, Vec<&'static str>);

    impl WorkloadAttestor for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }

        fn attest<'a>(
            &'a self,
            _: &'a PeerCredentials,
        ) -> BoxFuture<'a, Result<Vec<Selector>, AttestError>> {
            Box::pin(
                async move { Ok(self.1.iter().map(|s| Selector::parse(s).unwrap()).collect()) },
            )
        }
    }

    #[derive(Debug)]
    struct Stuck;

    impl WorkloadAttestor for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }

        fn attest<'a>(
            &'a self,
            _: &'a PeerCredentials,
        ) -> BoxFuture<'a, Result<Vec<Selector>, AttestError>> {
            Box::pin(futures::future::pending())
        }
    }

    // No pid: these tests are about merging and timeouts, not the process check
    // (`process::tests`).
    const CALLER: PeerCredentials = PeerCredentials {
        uid: 1,
        gid: 2,
        pid: None,
        start_time: None,
    };

    #[tokio::test]
    async fn merges_selectors_of_every_attestor() {
        let a = Attestors::new(
            vec![
                Arc::new(Fixed("a", vec!["a:x", "a:y"])),
                Arc::new(Fixed("b", vec!["b:z", "a:x"])),
            ],
            Duration::from_secs(1),
        );
        let got = a.attest(&CALLER).await.unwrap();
        let want = SelectorSet::parse_all(["a:x", "a:y", "b:z"]).unwrap();
        assert_eq!(got, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_attestor_times_out_naming_itself() {
        let a = Attestors::new(
            vec![Arc::new(Fixed("a", vec!["a:x"])), Arc::new(Stuck)],
            Duration::from_secs(2),
        );
        let err = a.attest(&CALLER).await.unwrap_err();
        assert!(
            matches!(
                err,
                AttestError::Timeout {
                    attestor: "stuck",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("limits.attestation_timeout"));
    }
}
