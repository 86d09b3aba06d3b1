//! The bundle refresher: one task that follows the federation view and keeps every
//! relationship's bundle fresh.
//!
//! - A relationship is fetched at once when it appears (at start, and on create or update),
//!   then again after the fetched bundle's `spiffe_refresh_hint` clamped to
//!   [`RefresherSettings::min_refresh`, `max_refresh`] (SPIRE: the hint, 5 minutes without
//!   one).
//! - A failure keeps the last good bundle and retries after a bounded exponential backoff
//!   (`backoff_start` doubling to `backoff_cap`, ±20 % jitter from the injected randomness).
//! - A fetched bundle goes to the aggregate as `FederationCommand::Refreshed` (recorded only if
//!   it changed); the outcome goes to [`FederationRuntime::set_status`] and the metrics.
//! - `refresh_now` requests are served from the runtime's queue; a deleted relationship is
//!   forgotten (status, metrics, pending requests answered `NotFound`).
//!
//! At most `max_concurrent_fetches` fetches run at once; nothing polls: the task sleeps until
//! the next refresh is due, a view change, a request, or a fetch ending.
//! Must not: decide what is stored (the aggregate does).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tessera_actors::random::{random_u64, RandomSource};
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::federation::{
    FederationCommand, FederationError, FederationHandle, FederationReply, Relationship,
};
use tessera_eventlog::Clock;
use tessera_identity::TrustDomain;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::fetch::Fetcher;
use super::metrics::FederationMetrics;
use super::{FederationRuntime, RefreshError, RefreshRequest, RefreshStatus};

/// When to refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefresherSettings {
    /// Shortest time between two good fetches, whatever the hint
    /// (`limits.federation.min_refresh`).
    pub min_refresh: Duration,
    /// Longest time between two good fetches (1 hour).
    pub max_refresh: Duration,
    /// Time between good fetches when the bundle has no hint (SPIRE: 5 minutes).
    pub default_refresh: Duration,
    /// First retry delay after a failure.
    pub backoff_start: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// Fetches at once (`limits.federation.max_concurrent_fetches`).
    pub max_concurrent_fetches: usize,
}

impl RefresherSettings {
    /// The delay after a good fetch: the hint clamped, or the default.
    pub fn after_success(&self, hint_secs: Option<u64>) -> Duration {
        let s = self;
        hint_secs
            .map_or(s.default_refresh, Duration::from_secs)
            .clamp(s.min_refresh, s.max_refresh.max(s.min_refresh))
    }

    /// The delay after `failures` failures in a row: doubling from `backoff_start`, capped,
    /// with ±20 % jitter.
    pub fn backoff(&self, failures: u32, random: &dyn RandomSource) -> Duration {
        let s = self;
        let doublings = failures.saturating_sub(1).min(30);
        let base = s
            .backoff_start
            .saturating_mul(1u32 << doublings)
            .min(s.backoff_cap);
        // 0.8 + 0.4 × r, r uniform in [0, 1).
        let r = (random_u64(random) >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(0.8 + 0.4 * r).min(s.backoff_cap)
    }
}

impl Default for RefresherSettings {
    fn default() -> Self {
        Self {
            min_refresh: Duration::from_secs(10),
            max_refresh: Duration::from_secs(3600),
            default_refresh: Duration::from_secs(300),
            backoff_start: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            max_concurrent_fetches: 8,
        }
    }
}

/// What the refresher works with.
#[derive(Debug, Clone)]
pub struct Refresher {
    /// The federation aggregate.
    pub federation: FederationHandle,
    /// How bundles are fetched.
    pub fetcher: Fetcher,
    /// Where statuses go and refresh requests come from.
    pub runtime: Arc<FederationRuntime>,
    /// Metrics, if the server exports them.
    pub metrics: Option<FederationMetrics>,
    /// The server's clock (status timestamps, TLS time is the fetcher's).
    pub clock: Arc<dyn Clock>,
    /// Jitter of the backoff.
    pub random: Arc<dyn RandomSource>,
    /// Timing.
    pub settings: RefresherSettings,
}

type Waiter = oneshot::Sender<Result<(), RefreshError>>;

/// One relationship as the refresher tracks it.
#[derive(Debug)]
struct Tracked {
    relationship: Relationship,
    /// When the next fetch is due; `None` while one runs.
    due: Option<Instant>,
    status: RefreshStatus,
    /// Requests for the next fetch.
    waiting: Vec<Waiter>,
    /// Requests answered by the fetch that runs.
    in_flight: Vec<Waiter>,
}

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    /// The fetched bundle was stored (`changed`) or was the one held.
    Stored {
        changed: bool,
        sequence: u64,
        hint: Option<u64>,
    },
    /// The relationship was deleted while fetching.
    Gone,
    /// The relationship was updated while fetching: the bundle from the old endpoint is
    /// dropped and the new one fetched.
    Superseded,
    /// Fetching or storing failed.
    Failed { kind: &'static str, reason: String },
}

// Scheduling is process plumbing in tokio's time (paused in tests), like the agent API's
// connection ages; statuses use the server's `Clock`.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

impl Refresher {
    /// Runs until `shutdown`, serving `requests`.
    pub async fn run(
        self,
        mut requests: mpsc::Receiver<RefreshRequest>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut view = self.federation.subscribe();
        let mut tracked: BTreeMap<TrustDomain, Tracked> = BTreeMap::new();
        let mut fetches: JoinSet<(TrustDomain, Relationship, Outcome)> = JoinSet::new();
        let mut requests_open = true;
        tokio::pin!(shutdown);
        let current = view.borrow_and_update().clone();
        self.reconcile(&mut tracked, &current.relationships);
        loop {
            let next_due = if fetches.len() < self.settings.max_concurrent_fetches.max(1) {
                tracked.values().filter_map(|t| t.due).min()
            } else {
                None
            };
            tokio::select! {
                () = &mut shutdown => break,
                changed = view.changed() => {
                    if changed.is_err() {
                        break; // The aggregate is gone: the server is stopping.
                    }
                    let current = view.borrow_and_update().clone();
                    self.reconcile(&mut tracked, &current.relationships);
                }
                request = requests.recv(), if requests_open => match request {
                    Some((td, reply)) => {
                        // A request right after `federation update` is for the updated
                        // relationship: fold a pending view change first.
                        if view.has_changed().unwrap_or(false) {
                            let current = view.borrow_and_update().clone();
                            self.reconcile(&mut tracked, &current.relationships);
                        }
                        match tracked.get_mut(&td) {
                        Some(t) => {
                            t.waiting.push(reply);
                            if t.due.is_some() {
                                t.due = Some(now());
                            }
                        }
                        None => {
                            let _ = reply.send(Err(RefreshError::NotFound(td)));
                        }
                        }
                    }
                    None => requests_open = false,
                },
                Some(done) = fetches.join_next(), if !fetches.is_empty() => match done {
                    Ok((td, relationship, outcome)) => {
                        self.finish(&mut tracked, &td, &relationship, outcome);
                    }
                    Err(e) => tracing::error!(error = %e, "bundle fetch task failed"),
                },
                () = sleep_until(next_due) => {
                    self.launch_due(&mut tracked, &mut fetches);
                }
            }
        }
        fetches.abort_all();
        for t in tracked.into_values() {
            for w in t.waiting.into_iter().chain(t.in_flight) {
                let _ = w.send(Err(RefreshError::NotRunning));
            }
        }
    }

    /// Follows the relationships: new or changed ones are due now, deleted ones forgotten.
    fn reconcile(
        &self,
        tracked: &mut BTreeMap<TrustDomain, Tracked>,
        relationships: &BTreeMap<TrustDomain, Relationship>,
    ) {
        tracked.retain(|td, t| {
            if relationships.contains_key(td) {
                return true;
            }
            tracing::info!(trust_domain = %td, "federation relationship deleted: no longer refreshed");
            self.runtime.forget(td);
            if let Some(m) = &self.metrics {
                m.forget(td);
            }
            for w in t.waiting.drain(..).chain(t.in_flight.drain(..)) {
                let _ = w.send(Err(RefreshError::NotFound(td.clone())));
            }
            false
        });
        for (td, relationship) in relationships {
            match tracked.get_mut(td) {
                Some(t) if t.relationship == *relationship => {}
                Some(t) => {
                    t.relationship = relationship.clone();
                    t.status.consecutive_failures = 0;
                    if t.due.is_some() {
                        t.due = Some(now());
                    }
                }
                None => {
                    tracked.insert(
                        td.clone(),
                        Tracked {
                            relationship: relationship.clone(),
                            due: Some(now()),
                            status: self.runtime.status(td).unwrap_or_default(),
                            waiting: Vec::new(),
                            in_flight: Vec::new(),
                        },
                    );
                }
            }
        }
    }

    /// Starts the fetches that are due, up to the concurrency bound, earliest first.
    fn launch_due(
        &self,
        tracked: &mut BTreeMap<TrustDomain, Tracked>,
        fetches: &mut JoinSet<(TrustDomain, Relationship, Outcome)>,
    ) {
        let now = now();
        let mut due: Vec<(Instant, TrustDomain)> = tracked
            .iter()
            .filter_map(|(td, t)| t.due.filter(|d| *d <= now).map(|d| (d, td.clone())))
            .collect();
        due.sort();
        let free = self
            .settings
            .max_concurrent_fetches
            .max(1)
            .saturating_sub(fetches.len());
        for (_, td) in due.into_iter().take(free) {
            let Some(t) = tracked.get_mut(&td) else {
                continue;
            };
            t.due = None;
            t.in_flight = std::mem::take(&mut t.waiting);
            let relationship = t.relationship.clone();
            let fetcher = self.fetcher.clone();
            let federation = self.federation.clone();
            fetches.spawn(async move {
                let outcome = attempt(&fetcher, &federation, &relationship).await;
                (td, relationship, outcome)
            });
        }
    }

    /// Records an attempt's outcome and schedules the next one.
    fn finish(
        &self,
        tracked: &mut BTreeMap<TrustDomain, Tracked>,
        td: &TrustDomain,
        launched: &Relationship,
        outcome: Outcome,
    ) {
        let Some(t) = tracked.get_mut(td) else {
            return; // Deleted meanwhile: already forgotten.
        };
        if matches!(outcome, Outcome::Superseded) {
            // Not an attempt of the relationship as it is: its requests wait for the next.
            let mut waiting = std::mem::take(&mut t.in_flight);
            waiting.append(&mut t.waiting);
            t.waiting = waiting;
            t.due = Some(now());
            return;
        }
        let at = unix_now(self.clock.as_ref());
        t.status.last_attempt_at = Some(at);
        let (delay, answer) = match outcome {
            Outcome::Stored {
                changed,
                sequence,
                hint,
            } => {
                if changed {
                    tracing::info!(trust_domain = %td, sequence, "federated bundle changed: stored");
                }
                if let Some(m) = &self.metrics {
                    m.attempt(td, if changed { "ok" } else { "unchanged" });
                    m.success(td, sequence, at);
                }
                t.status.last_success_at = Some(at);
                t.status.last_error = None;
                t.status.consecutive_failures = 0;
                (self.settings.after_success(hint), Ok(()))
            }
            Outcome::Gone | Outcome::Superseded => (
                self.settings.default_refresh,
                Err(RefreshError::NotFound(td.clone())),
            ),
            Outcome::Failed { kind, reason } => {
                tracing::warn!(trust_domain = %td, error = %reason, "federated bundle refresh failed; the last good bundle is kept");
                if let Some(m) = &self.metrics {
                    m.attempt(td, kind);
                }
                t.status.last_error = Some(reason.clone());
                t.status.consecutive_failures = t.status.consecutive_failures.saturating_add(1);
                (
                    self.settings
                        .backoff(t.status.consecutive_failures, self.random.as_ref()),
                    Err(RefreshError::Failed {
                        trust_domain: td.clone(),
                        reason,
                    }),
                )
            }
        };
        // A changed relationship or a request that came during the fetch wants another now.
        let again = t.relationship != *launched || !t.waiting.is_empty();
        let delay = if again { Duration::ZERO } else { delay };
        t.due = Some(now() + delay);
        t.status.next_refresh_at =
            Some(at.saturating_add(i64::try_from(delay.as_secs()).unwrap_or(i64::MAX)));
        self.runtime.set_status(td, t.status.clone());
        for w in t.in_flight.drain(..) {
            let _ = w.send(match &answer {
                Ok(()) => Ok(()),
                Err(RefreshError::NotFound(td)) => Err(RefreshError::NotFound(td.clone())),
                Err(RefreshError::Failed {
                    trust_domain,
                    reason,
                }) => Err(RefreshError::Failed {
                    trust_domain: trust_domain.clone(),
                    reason: reason.clone(),
                }),
                Err(RefreshError::NotRunning) => Err(RefreshError::NotRunning),
            });
        }
    }
}

/// Fetches and stores one relationship's bundle.
async fn attempt(
    fetcher: &Fetcher,
    federation: &FederationHandle,
    relationship: &Relationship,
) -> Outcome {
    let held = federation.view();
    let bundle = match fetcher.fetch(relationship, &held.bundles).await {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Failed {
                kind: e.kind(),
                reason: e.to_string(),
            }
        }
    };
    if federation
        .view()
        .relationships
        .get(&relationship.trust_domain)
        != Some(relationship)
    {
        return Outcome::Superseded;
    }
    let (sequence, hint) = (bundle.sequence_number(), bundle.refresh_hint());
    match federation
        .command(FederationCommand::Refreshed {
            bundle,
            from: relationship.clone(),
        })
        .await
    {
        Ok(FederationReply::Unchanged) => Outcome::Stored {
            changed: false,
            sequence,
            hint,
        },
        Ok(_) => Outcome::Stored {
            changed: true,
            sequence,
            hint,
        },
        Err(CommandError::Rejected(FederationError::RelationshipNotFound { .. })) => Outcome::Gone,
        Err(CommandError::Rejected(e)) => Outcome::Failed {
            kind: "refused",
            reason: e.to_string(),
        },
        Err(e) => Outcome::Failed {
            kind: "store",
            reason: format!("the fetched bundle could not be stored: {e}"),
        },
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unix_now(clock: &dyn Clock) -> i64 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use tessera_actors::random::SeededRandom;

    use super::*;

    #[test]
    fn good_fetches_follow_the_hint_within_bounds() {
        let s = RefresherSettings::default();
        assert_eq!(s.after_success(None), Duration::from_secs(300));
        assert_eq!(s.after_success(Some(120)), Duration::from_secs(120));
        assert_eq!(s.after_success(Some(0)), s.min_refresh);
        assert_eq!(s.after_success(Some(86_400)), Duration::from_secs(3600));
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_up_to_the_cap() {
        let s = RefresherSettings::default();
        let random = SeededRandom::new(7);
        for failures in 1..=40u32 {
            let base = Duration::from_secs(1u64 << (failures - 1).min(20)).min(s.backoff_cap);
            let d = s.backoff(failures, &random);
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2).min(s.backoff_cap),
                "{failures}: {d:?}"
            );
        }
        let spread: std::collections::BTreeSet<_> =
            (0..20).map(|_| s.backoff(3, &random)).collect();
        assert!(spread.len() > 10, "jitter spreads retries: {spread:?}");
    }
}
