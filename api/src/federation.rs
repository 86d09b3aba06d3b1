//! Federation at the process edge: the bundle endpoint this server publishes its bundle on
//! (SPIFFE Federation, `https_web` and `https_spiffe` profiles), and the refresher that
//! fetches each foreign trust domain's bundle from its relationship's endpoint and hands it to
//! the federation aggregate (`tessera_actors::server::federation`).
//!
//! [`FederationRuntime`] is what the admin API sees of the refresher: each relationship's
//! refresh status (for `federation show`) and a way to ask for a refresh now (SPIRE's
//! `RefreshBundle`).
//!
//! Must not: decide what is stored (the aggregate does), or keep a bundle anywhere but the log.

pub mod endpoint;
pub mod fetch;
pub mod metrics;
pub mod refresher;
pub mod startup;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tessera_identity::TrustDomain;
use tokio::sync::{mpsc, oneshot};

/// How the last refreshes of one relationship went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefreshStatus {
    /// Last attempt, Unix seconds.
    pub last_attempt_at: Option<i64>,
    /// Last attempt that fetched a valid bundle, Unix seconds.
    pub last_success_at: Option<i64>,
    /// Why the last attempt failed; `None` if it succeeded.
    pub last_error: Option<String>,
    /// Failures in a row since the last success.
    pub consecutive_failures: u32,
    /// When the next attempt is due, Unix seconds.
    pub next_refresh_at: Option<i64>,
}

/// Why a refresh asked for through the API did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// No relationship with the trust domain.
    #[error("no federation relationship with {0}; `federation list` shows them")]
    NotFound(TrustDomain),
    /// The refresher is not running (a server started without it, or stopping).
    #[error("the bundle refresher is not running; retry once the server has started")]
    NotRunning,
    /// The fetch failed; the last good bundle stays.
    #[error(
        "refreshing the bundle of {trust_domain} failed: {reason}; the last good bundle is kept"
    )]
    Failed {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// Why.
        reason: String,
    },
}

/// A request for an immediate refresh, answered when it is done.
pub type RefreshRequest = (TrustDomain, oneshot::Sender<Result<(), RefreshError>>);

/// The refresher as the admin API sees it.
#[derive(Debug, Default)]
pub struct FederationRuntime {
    status: Mutex<BTreeMap<TrustDomain, RefreshStatus>>,
    refresh: Option<mpsc::Sender<RefreshRequest>>,
}

impl FederationRuntime {
    /// A runtime with no refresher behind it (tests, and servers before it starts).
    pub fn detached() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A runtime whose refresh requests go to `refresh` (the refresher's queue).
    pub fn new(refresh: mpsc::Sender<RefreshRequest>) -> Arc<Self> {
        Arc::new(Self {
            status: Mutex::default(),
            refresh: Some(refresh),
        })
    }

    /// The refresh status of the relationship with `trust_domain`, if it has been tried.
    pub fn status(&self, trust_domain: &TrustDomain) -> Option<RefreshStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(trust_domain)
            .cloned()
    }

    /// Records a relationship's status (the refresher, after each attempt).
    pub fn set_status(&self, trust_domain: &TrustDomain, status: RefreshStatus) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(trust_domain.clone(), status);
    }

    /// Forgets a relationship's status (it was deleted).
    pub fn forget(&self, trust_domain: &TrustDomain) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(trust_domain);
    }

    /// Refreshes the bundle of `trust_domain` now and waits for the outcome.
    ///
    /// # Errors
    /// [`RefreshError`]: no such relationship, no refresher, or the fetch failed.
    pub async fn refresh_now(&self, trust_domain: &TrustDomain) -> Result<(), RefreshError> {
        let queue = self.refresh.as_ref().ok_or(RefreshError::NotRunning)?;
        let (tx, rx) = oneshot::channel();
        queue
            .send((trust_domain.clone(), tx))
            .await
            .map_err(|_| RefreshError::NotRunning)?;
        rx.await.map_err(|_| RefreshError::NotRunning)?
    }
}
