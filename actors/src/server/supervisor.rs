//! Starting and stopping the server's actors.
//!
//! ```text
//! Server (this module: start-up, handles, stop)
//!  ├─ Journal      follows the log, folds the whole state, stores snapshots
//!  ├─ Registry     AggregateActor<Registry>
//!  ├─ Nodes        AggregateActor<Nodes>
//!  ├─ Tokens       AggregateActor<Tokens>
//!  ├─ Federation   AggregateActor<Federation>: relationships, federated bundles
//!  ├─ Authority    X.509 CA and JWT keys: rotation timer, signing (off-thread, bounded)
//!  ├─ SyncHub      per-agent authorised views, fan-out of changes
//!  └─ Checkpointer signs the log's head every so many records or minutes (if enabled)
//! ```
//!
//! Start-up replays once: the latest snapshot plus the tail of the log, folded into a
//! [`ServerState`] that seeds every actor. Supervision is fail-stop: if any actor dies (a
//! broken invariant, or the log refusing a write), [`Server::failed`] resolves and the process
//! exits so that its own supervisor (systemd, Kubernetes) restarts it; replay then restores
//! exactly what was acknowledged. Restarting one actor in place could not do better, since
//! the log itself stops accepting appends after a write error.
//!
//! A stop asked for ([`Server::stop`], on SIGTERM) is not a failure: the supervisor is told
//! first, so its children ending then are logged at DEBUG, not as a fail-stop at ERROR; an
//! actor that fails (panics, or returns an error) is an ERROR even during the stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorRef, SupervisionEvent};
use tessera_eventlog::metrics::{AppendStats, MeteredLog};
use tessera_eventlog::typed::decode_state_stream;
use tessera_eventlog::{Clock, EventLog, TypedLog};
use tessera_identity::{EntryLimits, TrustDomain};
use tokio::sync::watch;

use crate::random::RandomSource;
use crate::server::agent_ops::Renewals;
use crate::server::aggregate_actor::{AggregateActor, AggregateArgs, AggregateHandle};
use crate::server::authority::{AuthorityActor, AuthorityArgs, AuthorityHandle, AuthoritySettings};
use crate::server::checkpoint::{CheckpointSettings, Checkpointer, CheckpointerArgs};
use crate::server::events::ServerEvent;
use crate::server::federation::{Federation, FederationHandle, FederationSettings, FederationView};
use crate::server::follow::DEFAULT_CONFLICT_RETRIES;
use crate::server::journal::{Journal, JournalArgs, JournalMsg};
use crate::server::keys::{KeyManager, MemoryKeyManager};
use crate::server::nodes::Nodes;
use crate::server::registry::{Registry, RegistrySettings};
use crate::server::state::ServerState;
use crate::server::sync::SyncIndex;
use crate::server::sync_hub::{SyncHub, SyncHubArgs, SyncHubHandle};
use crate::server::sync_lag::SyncCursors;
use crate::server::tokens::Tokens;

static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// The actors' configuration.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// The trust domain this server is the root of.
    pub trust_domain: TrustDomain,
    /// Bounds on entries. Their longest SVID TTLs (`limits.entry.max_x509_svid_ttl_secs`,
    /// `max_jwt_svid_ttl_secs`) also bound every signing request: [`Server::start`] sets the
    /// signer's maxima from them, so no path (agent, admin mint) outlives what an entry may ask.
    pub entry_limits: EntryLimits,
    /// Most entries the registry holds.
    pub max_entries: usize,
    /// Requests admitted per actor (waiting or running); beyond it, `Overloaded`.
    pub max_in_flight: usize,
    /// Timeout of every call into an actor.
    pub call_timeout: Duration,
    /// Records between snapshots (0: never).
    pub snapshot_every: u64,
    /// Updates buffered per agent sync stream before the stream is dropped.
    pub sync_stream_buffer: usize,
    /// How often idle sync streams get a checkpoint.
    pub sync_heartbeat: Duration,
    /// Per-agent changes the sync hub keeps so that reconnecting agents resume instead of
    /// taking a snapshot.
    pub sync_resume_window: usize,
    /// The authority's configuration (CA, JWT keys, rotation, signing).
    pub authority: AuthoritySettings,
    /// Where the authority keeps private keys.
    pub key_manager: Arc<dyn KeyManager>,
    /// Append conflicts (another server wrote first) an actor rides out per command before
    /// answering `Unavailable`.
    pub conflict_retries: u32,
    /// Most (agent, entry) pairs whose SVIDs the server remembers signing, to tell renewals
    /// (bulk) from first SVIDs (on demand) (default 1 000 000; about 32 bytes each).
    pub max_tracked_svids: usize,
    /// How often the registry prunes expired entries and the tokens aggregate expired join
    /// tokens, at the latest (default 5 min, as SPIRE); an entry is also pruned, and leaves
    /// agents' views, when it expires. `None`: only when asked (tests).
    pub prune_interval: Option<Duration>,
    /// Bounds of the federation aggregate (its `own` trust domain is set from
    /// `trust_domain` at start).
    pub federation: FederationSettings,
    /// When the log's head is signed (config `[audit]`; default every 1 000 records or
    /// 10 minutes, whichever comes first, if there are new records).
    pub checkpoint: CheckpointSettings,
}

impl ServerSettings {
    /// Defaults for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            authority: AuthoritySettings::new(trust_domain.clone()),
            key_manager: Arc::new(MemoryKeyManager::default()),
            trust_domain,
            entry_limits: EntryLimits::default(),
            max_entries: 1_000_000,
            max_in_flight: 10_000,
            call_timeout: Duration::from_secs(30),
            snapshot_every: 10_000,
            sync_stream_buffer: 4_096,
            sync_heartbeat: Duration::from_secs(5),
            sync_resume_window: 65_536,
            conflict_retries: DEFAULT_CONFLICT_RETRIES,
            prune_interval: Some(Duration::from_secs(300)),
            max_tracked_svids: 1_000_000,
            federation: FederationSettings::default(),
            checkpoint: CheckpointSettings::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Replaying the log failed.
    #[error("cannot replay the event log: {0}")]
    Replay(String),
    /// An actor failed to start.
    #[error("cannot start actor {actor}: {reason}")]
    Spawn {
        /// Which.
        actor: &'static str,
        /// Why.
        reason: String,
    },
}

/// The running server's actors, by handle.
#[derive(Clone, Debug)]
pub struct Server {
    /// Registration entries.
    pub registry: AggregateHandle<Registry>,
    /// Attested agents.
    pub nodes: AggregateHandle<Nodes>,
    /// Join tokens.
    pub tokens: AggregateHandle<Tokens>,
    /// Federation relationships and federated bundles.
    pub federation: FederationHandle,
    /// X.509 CAs, JWT keys, signing.
    pub authority: AuthorityHandle,
    /// Per-agent views.
    pub sync: SyncHubHandle,
    /// SVIDs signed per (agent, entry): renewals are signed as bulk work.
    pub renewals: Arc<Renewals>,
    /// The journal (snapshots).
    pub journal: ActorRef<JournalMsg>,
    /// The log.
    pub log: TypedLog<ServerEvent>,
    /// Appends to the log by outcome, and their latency (for the metrics endpoint).
    pub append_stats: Arc<AppendStats>,
    /// Where each open sync stream is in the log (for the sync-lag metrics).
    pub sync_cursors: Arc<SyncCursors>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub random: Arc<dyn RandomSource>,
    /// The settings it runs with.
    pub settings: ServerSettings,
    supervisor: ActorRef<()>,
    failed: watch::Receiver<Option<String>>,
    /// Set by [`Server::stop`] before it stops the actors.
    stopping: Arc<AtomicBool>,
}

/// The supervising actor: it only watches its children.
#[derive(Debug)]
struct Supervisor;

/// The supervisor's state: where a failure is reported, and whether a stop was asked for.
#[derive(Debug)]
struct Watch {
    failed: watch::Sender<Option<String>>,
    stopping: Arc<AtomicBool>,
}

/// What a child's end means.
#[derive(Debug, PartialEq, Eq)]
enum ChildEnd {
    /// It failed, or stopped while nobody asked: the server fails (fail-stop).
    Failure(String),
    /// It stopped because [`Server::stop`] asked.
    Stopped(String),
}

impl ChildEnd {
    /// `None` for events that are not a child's end.
    fn of(event: &SupervisionEvent, stopping: bool) -> Option<ChildEnd> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => Some(ChildEnd::Failure(format!(
                "actor {:?} failed: {err}",
                cell.get_name()
            ))),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = format!(
                    "actor {:?} stopped: {}",
                    cell.get_name(),
                    reason.as_deref().unwrap_or("no reason")
                );
                Some(if stopping {
                    ChildEnd::Stopped(reason)
                } else {
                    ChildEnd::Failure(reason)
                })
            }
            _ => None,
        }
    }
}

impl Actor for Supervisor {
    type Msg = ();
    type State = Watch;
    type Arguments = Watch;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        watch: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(watch)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        watch: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let stopping = watch.stopping.load(Ordering::Acquire);
        match ChildEnd::of(&event, stopping) {
            None => {}
            Some(ChildEnd::Stopped(reason)) => {
                tracing::debug!(%reason, "server actor stopped (server stopping)");
            }
            Some(ChildEnd::Failure(reason)) => {
                if watch.failed.borrow().is_none() {
                    if stopping {
                        tracing::error!(%reason, "server actor failed while the server was stopping");
                    } else {
                        tracing::error!(%reason, "server actor down; stopping the server (fail-stop)");
                    }
                    watch.failed.send_replace(Some(reason));
                    if !stopping {
                        myself.stop(Some("child failed".into()));
                    }
                } else {
                    // The first failure stops the server; the others follow from it.
                    tracing::debug!(%reason, "another server actor down after a failure");
                }
            }
        }
        Ok(())
    }
}

impl Server {
    /// Replays the log and starts every actor.
    pub async fn start(
        mut settings: ServerSettings,
        log: Arc<dyn EventLog>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn RandomSource>,
    ) -> Result<Server, StartError> {
        let signer = &mut settings.authority.signer;
        signer.max_x509_svid_ttl =
            Duration::from_secs(u64::from(settings.entry_limits.max_x509_svid_ttl_secs));
        signer.max_jwt_svid_ttl =
            Duration::from_secs(u64::from(settings.entry_limits.max_jwt_svid_ttl_secs));
        let append_stats = Arc::new(AppendStats::default());
        let log: Arc<dyn EventLog> = Arc::new(MeteredLog::new(log, append_stats.clone()));
        let typed = TypedLog::<ServerEvent>::new(log.clone());
        let (state, seq) = replay(&typed).await?;
        let (state, registry_copy, sync_copy) = index_copies(state).await?;
        // A log opened with its check in the background was replayed while the check ran;
        // nothing starts (and nothing is appended) until it has passed.
        typed
            .raw()
            .opened()
            .await
            .map_err(|e| StartError::Replay(format!("the log failed its open check: {e}")))?;

        // Actor names are global in ractor's registry; several servers may share a process
        // (tests, the simulator), so each server's names carry its instance number.
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let (failed_tx, failed) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let watch = Watch {
            failed: failed_tx,
            stopping: stopping.clone(),
        };
        let (supervisor, _) = Actor::spawn(None, Supervisor, watch)
            .await
            .map_err(|e| spawn_err("supervisor", e))?;
        let cell: ActorCell = supervisor.get_cell();

        let registry_settings = RegistrySettings {
            trust_domain: settings.trust_domain.clone(),
            limits: settings.entry_limits.clone(),
            max_entries: settings.max_entries,
        };
        let common = Common {
            settings: &settings,
            log: &typed,
            clock: &clock,
            random: &random,
            supervisor: cell.clone(),
            instance,
            seq,
        };
        let prune = settings.prune_interval;
        let registry = spawn_aggregate(
            &common,
            registry_copy,
            Arc::new(move |r: &mut Registry| r.configure(registry_settings.clone())),
            prune,
        )
        .await?;
        let nodes = spawn_aggregate(
            &common,
            state.nodes.clone(),
            Arc::new(|_: &mut Nodes| {}),
            None,
        )
        .await?;
        let tokens = spawn_aggregate(
            &common,
            state.tokens.clone(),
            Arc::new(|_: &mut Tokens| {}),
            prune,
        )
        .await?;

        let federation_settings = FederationSettings {
            own: Some(settings.trust_domain.clone()),
            ..settings.federation.clone()
        };
        let (view_tx, view_rx) = watch::channel(Arc::new(FederationView::default()));
        let federation = spawn_aggregate(
            &common,
            state.federation.clone(),
            Arc::new(move |f: &mut Federation| {
                f.configure(federation_settings.clone(), Some(view_tx.clone()))
            }),
            None,
        )
        .await?;
        let federation = FederationHandle::new(federation, view_rx);

        let authority_args = AuthorityArgs::new(
            typed.clone(),
            clock.clone(),
            random.clone(),
            settings.key_manager.clone(),
            settings.authority.clone(),
            Some(state.authority.clone()),
        )
        .folded_to(seq);
        let (signer, bundle) = (
            authority_args.signer().clone(),
            authority_args.bundle_receiver(),
        );
        let (authority_ref, _) = Actor::spawn_linked(
            Some(format!("authority-{instance}")),
            AuthorityActor,
            authority_args,
            cell.clone(),
        )
        .await
        .map_err(|e| spawn_err("authority", e))?;
        let authority = AuthorityHandle::connect(
            authority_ref,
            signer,
            bundle,
            settings.authority.max_in_flight,
            settings.authority.call_timeout,
        );

        let index = SyncIndex::new(sync_copy, state.nodes.clone());
        let (hub, _) = Actor::spawn_linked(
            Some(format!("sync-hub-{instance}")),
            SyncHub,
            SyncHubArgs {
                log: typed.clone(),
                index,
                seq,
                stream_buffer: settings.sync_stream_buffer,
                heartbeat: settings.sync_heartbeat,
                resume_window: settings.sync_resume_window,
            },
            cell.clone(),
        )
        .await
        .map_err(|e| spawn_err("sync-hub", e))?;
        if settings.checkpoint.enabled() {
            let args = CheckpointerArgs::for_server(&settings, &typed, authority.signer(), &clock);
            let name = Some(format!("checkpointer-{instance}"));
            Actor::spawn_linked(name, Checkpointer, args, cell.clone())
                .await
                .map_err(|e| spawn_err("checkpointer", e))?;
        }
        let (journal, _) = Actor::spawn_linked(
            Some(format!("journal-{instance}")),
            Journal,
            JournalArgs {
                log: typed.clone(),
                state,
                seq,
                snapshot_every: settings.snapshot_every,
            },
            cell,
        )
        .await
        .map_err(|e| spawn_err("journal", e))?;

        Ok(Server {
            registry,
            nodes,
            tokens,
            federation,
            authority,
            sync: SyncHubHandle::new(hub, settings.max_in_flight, settings.call_timeout),
            renewals: Arc::new(Renewals::new(settings.max_tracked_svids)),
            journal,
            log: typed,
            append_stats,
            sync_cursors: Arc::new(SyncCursors::default()),
            clock,
            random,
            settings,
            supervisor,
            failed,
            stopping,
        })
    }

    /// Resolves with the reason once any actor has died (fail-stop).
    pub async fn failed(&self) -> String {
        let mut rx = self.failed.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return "supervisor stopped".into();
            }
        }
    }

    /// Stores a snapshot of the current state now; returns its seq.
    pub async fn snapshot_now(&self) -> Result<u64, String> {
        ractor::call_t!(self.journal, JournalMsg::SnapshotNow, 60_000).map_err(|e| e.to_string())?
    }

    /// Stops every actor. Their ends are not failures: [`Server::failed`] stays pending, and
    /// nothing is logged at ERROR unless an actor fails while stopping.
    pub async fn stop(&self) {
        // Before any child stops, so that the supervisor reads their ends as asked for.
        self.stopping.store(true, Ordering::Release);
        // Wait (bounded) for every actor to finish, so the log's last handles are released
        // when this returns: a log reopened afterwards in the same process finds it closed.
        let grace = Some(Duration::from_secs(10));
        self.supervisor
            .stop_children_and_wait(Some("server stopping".into()), grace)
            .await;
        let _ = self
            .supervisor
            .stop_and_wait(Some("server stopping".into()), grace)
            .await;
    }
}

fn spawn_err(actor: &'static str, e: impl std::fmt::Display) -> StartError {
    StartError::Spawn {
        actor,
        reason: e.to_string(),
    }
}

/// Latest snapshot + tail of the log.
async fn replay(log: &TypedLog<ServerEvent>) -> Result<(ServerState, u64), StartError> {
    // The snapshot is decoded as it is read, off the async threads: a million entries are a
    // 150 MB snapshot, which then never sits in memory whole beside the state it decodes to.
    let (mut state, after) = match log.raw().latest_snapshot_stream().await {
        Ok(Some(stream)) => {
            let seq = stream.seq;
            let decoded =
                tokio::task::spawn_blocking(move || decode_state_stream::<ServerState>(stream))
                    .await
                    .map_err(|e| {
                        StartError::Replay(format!("decoding the snapshot failed: {e}"))
                    })?;
            match decoded {
                Ok(mut state) => {
                    // The nodes aggregate's copy of the pending tokens is not stored twice.
                    state.nodes.seed_tokens(state.tokens.clone());
                    (state, seq)
                }
                Err(e) => {
                    // A snapshot this build cannot read is only a lost shortcut.
                    tracing::warn!(error = %e, seq, "ignoring undecodable snapshot; replaying from the start");
                    (ServerState::default(), 0)
                }
            }
        }
        Ok(None) => (ServerState::default(), 0),
        Err(e) => return Err(StartError::Replay(e.to_string())),
    };
    let seq = log
        .replay(after, |_, e| state.apply_owned(e))
        .await
        .map_err(|e| StartError::Replay(e.to_string()))?;
    Ok((state, seq))
}

/// The registry actor's copy (every index) and the sync hub's (by parent), built side by side
/// off the async threads: with a million entries each takes a noticeable part of start-up.
async fn index_copies(state: ServerState) -> Result<(ServerState, Registry, Registry), StartError> {
    tokio::task::spawn_blocking(move || {
        let (full, parents) = state
            .registry
            .indexed_full_and_parents()
            .map_err(StartError::Replay)?;
        Ok((state, full, parents))
    })
    .await
    .map_err(|e| StartError::Replay(format!("indexing the registry failed: {e}")))?
}

/// What every aggregate actor is spawned with.
struct Common<'a> {
    settings: &'a ServerSettings,
    log: &'a TypedLog<ServerEvent>,
    clock: &'a Arc<dyn Clock>,
    random: &'a Arc<dyn RandomSource>,
    supervisor: ActorCell,
    instance: u64,
    /// The seq the initial state was folded to.
    seq: u64,
}

async fn spawn_aggregate<A: crate::server::aggregate::Aggregate + Clone>(
    common: &Common<'_>,
    initial: A,
    configure: Arc<dyn Fn(&mut A) + Send + Sync>,
    housekeeping: Option<Duration>,
) -> Result<AggregateHandle<A>, StartError> {
    let Common {
        settings,
        log,
        clock,
        random,
        supervisor,
        instance,
        seq,
    } = common;
    let seq = *seq;
    let (settings, supervisor, instance) = (*settings, supervisor.clone(), *instance);
    let (actor, _) = Actor::spawn_linked(
        Some(format!("{}-{instance}", A::NAME)),
        AggregateActor::<A>::default(),
        AggregateArgs {
            log: (*log).clone(),
            clock: (*clock).clone(),
            random: (*random).clone(),
            initial: Some(initial),
            seq,
            conflict_retries: settings.conflict_retries,
            configure,
            housekeeping,
        },
        supervisor,
    )
    .await
    .map_err(|e| spawn_err(A::NAME, e))?;
    Ok(AggregateHandle::new(
        actor,
        settings.max_in_flight,
        settings.call_timeout,
    ))
}

#[cfg(test)]
mod tests;
