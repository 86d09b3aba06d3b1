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
//! - A fetch started for a relationship that has since been updated is refused by the
//!   aggregate (`RelationshipChanged`): not a failure; the new relationship is fetched at once.
//! - Each launch has a generation: the end of a fetch whose relationship was deleted (and
//!   perhaps created again) meanwhile is ignored. A fetch task that panics is a failure of its
//!   relationship like any other (waiters answered, status recorded, backoff).
//!
//! At most `max_concurrent_fetches` fetches run at once; nothing polls: the task sleeps until
//! the next refresh is due, a view change, a request, or a fetch ending.
//! Must not: decide what is stored (the aggregate does).

use std::collections::{BTreeMap, HashMap};
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
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::fetch::{BundleSource, Fetcher};
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
pub struct Refresher<F = Fetcher> {
    /// The federation aggregate.
    pub federation: FederationHandle,
    /// How bundles are fetched (a [`Fetcher`] outside tests).
    pub fetcher: F,
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
    /// The generation of the fetch that runs for this entry, if one does.
    running: Option<u64>,
}

/// One launched fetch, as the refresher remembers it while it runs.
#[derive(Debug)]
struct Launch {
    trust_domain: TrustDomain,
    relationship: Relationship,
    generation: u64,
}

/// The fetches that run: tasks, and which launch each task is (a panicked task's result
/// carries nothing but its id).
#[derive(Debug, Default)]
struct Fetches {
    tasks: JoinSet<Outcome>,
    launches: HashMap<tokio::task::Id, Launch>,
    next_generation: u64,
}

impl Fetches {
    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next fetch to end, with its launch.
    async fn next(&mut self) -> Option<(Launch, Outcome)> {
        loop {
            let (id, outcome) = match self.tasks.join_next_with_id().await? {
                Ok((id, outcome)) => (id, outcome),
                Err(e) => (e.id(), task_failed(&e)),
            };
            // Every task is registered when spawned; an unknown id cannot happen, and is
            // skipped rather than trusted.
            if let Some(launch) = self.launches.remove(&id) {
                return Some((launch, outcome));
            }
        }
    }
}

/// A fetch task that did not return: a failure of its relationship.
fn task_failed(e: &JoinError) -> Outcome {
    tracing::error!(error = %e, "bundle fetch task failed");
    Outcome::Failed {
        kind: "panicked",
        reason: if e.is_panic() {
            "the bundle fetch panicked (a bug in Tessera: please report it with the server log); the last good bundle is kept and the fetch is retried after a backoff".to_owned()
        } else {
            format!("the bundle fetch was stopped ({e}); it is retried after a backoff")
        },
    }
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
    /// The relationship was updated while fetching (the aggregate refused the bundle with
    /// `RelationshipChanged`): the bundle from the old endpoint is dropped and the new one
    /// fetched.
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

impl<F: BundleSource> Refresher<F> {
    /// Runs until `shutdown`, serving `requests`.
    pub async fn run(
        self,
        mut requests: mpsc::Receiver<RefreshRequest>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut view = self.federation.subscribe();
        let mut tracked: BTreeMap<TrustDomain, Tracked> = BTreeMap::new();
        let mut fetches = Fetches::default();
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
                Some((launch, outcome)) = fetches.next(), if !fetches.is_empty() => {
                    self.finish(&mut tracked, &launch, outcome);
                }
                () = sleep_until(next_due) => {
                    self.launch_due(&mut tracked, &mut fetches);
                }
            }
        }
        fetches.tasks.abort_all();
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
                            running: None,
                        },
                    );
                }
            }
        }
    }

    /// Starts the fetches that are due, up to the concurrency bound, earliest first.
    fn launch_due(&self, tracked: &mut BTreeMap<TrustDomain, Tracked>, fetches: &mut Fetches) {
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
            let generation = fetches.next_generation;
            fetches.next_generation += 1;
            t.due = None;
            t.running = Some(generation);
            t.in_flight = std::mem::take(&mut t.waiting);
            let relationship = t.relationship.clone();
            let (fetcher, federation) = (self.fetcher.clone(), self.federation.clone());
            let launched = relationship.clone();
            // One span per refresh (a trace of its own): trust domain, URL (no userinfo, by
            // the relationship's rule), outcome.
            let span = tracing::info_span!(
                "federation_refresh",
                trust_domain = %td,
                url = %relationship.bundle_endpoint_url,
                outcome = tracing::field::Empty,
                sequence = tracing::field::Empty,
            );
            let task = fetches.tasks.spawn(
                async move {
                    let outcome = attempt(&fetcher, &federation, &launched).await;
                    record_outcome(&tracing::Span::current(), &outcome);
                    outcome
                }
                .instrument(span),
            );
            fetches.launches.insert(
                task.id(),
                Launch {
                    trust_domain: td,
                    relationship,
                    generation,
                },
            );
        }
    }

    /// Records an attempt's outcome and schedules the next one.
    fn finish(
        &self,
        tracked: &mut BTreeMap<TrustDomain, Tracked>,
        launch: &Launch,
        outcome: Outcome,
    ) {
        let (td, launched) = (&launch.trust_domain, &launch.relationship);
        let Some(t) = tracked.get_mut(td) else {
            return; // Deleted meanwhile: already forgotten.
        };
        if t.running != Some(launch.generation) {
            // Deleted and created again meanwhile: this fetch was for the old entry, whose
            // waiters were answered then; the new entry's own fetch decides.
            tracing::debug!(trust_domain = %td, ?outcome, "bundle fetch for a deleted relationship ended: ignored");
            return;
        }
        t.running = None;
        // Gone, yet still tracked: deleted and created again while the fetch ran (the watch
        // folded both changes into one). Like a superseded fetch, not an answer.
        if matches!(outcome, Outcome::Superseded | Outcome::Gone) {
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

/// Fetches and stores one relationship's bundle. Whether the relationship is still the one
/// fetched for is the aggregate's call (`Refreshed` names it), not a look at the view.
async fn attempt(
    fetcher: &impl BundleSource,
    federation: &FederationHandle,
    relationship: &Relationship,
) -> Outcome {
    let held = federation.view();
    let bundle = match fetcher.fetch_bundle(relationship, &held.bundles).await {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Failed {
                kind: e.kind(),
                reason: e.to_string(),
            }
        }
    };
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
        Err(CommandError::Rejected(FederationError::RelationshipChanged { .. })) => {
            Outcome::Superseded
        }
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

/// Puts an attempt's outcome on its span.
fn record_outcome(span: &tracing::Span, outcome: &Outcome) {
    let name = match outcome {
        Outcome::Stored {
            changed: true,
            sequence,
            ..
        } => {
            span.record("sequence", *sequence);
            "stored"
        }
        Outcome::Stored { .. } => "unchanged",
        Outcome::Gone => "gone",
        Outcome::Superseded => "superseded",
        Outcome::Failed { kind, .. } => kind,
    };
    span.record("outcome", name);
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
