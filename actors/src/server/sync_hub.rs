//! SyncHub: per connected agent, its authorised view, and the fan-out of relevant changes.
//!
//! Supervisor: the server supervisor. Consumes every committed [`ServerEvent`] (it follows the
//! log from the seq its initial index was folded to); emits nothing to the log.
//!
//! ```text
//!   log.subscribe ──▶ follower task ──Committed(seq, event)──▶ SyncHub ──▶ agent streams
//!                                                              ▲
//!   Agent API ──Connect(agent) / Authorise(agent, entries)─────┘
//! ```
//!
//! Each connected stream has a bounded channel (`stream_buffer`). A stream that falls that far
//! behind is dropped rather than buffered without bound: the agent reconnects with its cursor.
//!
//! Resumption: the hub keeps the per-agent changes of the most recent records (at most
//! `resume_window` changes in all). An agent reconnecting with a cursor inside that window gets
//! the changes it missed and continues; an older cursor (or one from before a restart) gets a
//! fresh snapshot. Views are folded for every attested agent, connected or not, so the
//! retained changes take any agent from its view at the cursor to its view now. Mailbox: commands come from the API through [`SyncHubHandle`], which bounds them
//! like the aggregate handles; committed records arrive at the rate of the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tessera_eventlog::TypedLog;
use tessera_identity::{EntryId, RegistrationEntry, SpiffeId};
use tokio::sync::{mpsc, Semaphore};

use crate::server::events::ServerEvent;
use crate::server::follow::spawn_follower;
use crate::server::sync::{SyncIndex, ViewChange};

/// What a newly connected agent receives first.
#[derive(Clone, Debug)]
pub struct SyncSnapshot {
    /// The log seq the snapshot reflects: the agent's cursor once it has applied it.
    pub seq: u64,
    /// Every entry the agent is authorised for.
    pub entries: Vec<RegistrationEntry>,
}

/// How a stream starts.
#[derive(Clone, Debug)]
pub enum SyncStart {
    /// The agent's whole view, replacing what it holds.
    Snapshot(SyncSnapshot),
    /// The agent's cursor is recent: the updates it missed after it, then live ones.
    Resume {
        /// The cursor the agent sent.
        cursor: u64,
        /// Its updates with a seq after the cursor, in log order.
        missed: Vec<SyncUpdate>,
    },
}

/// A change for one agent, after the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncUpdate {
    /// The log seq that caused it.
    pub seq: u64,
    /// What changed in the agent's view (bundle changes arrive with `bundle_changed`).
    pub changes: Vec<ViewChange>,
    /// Whether the trust bundle changed at this seq.
    pub bundle_changed: bool,
}

/// Messages of the hub.
pub enum SyncHubMsg {
    /// A record committed to the log (from the follower task).
    Committed(u64, Box<ServerEvent>),
    /// An agent opens its stream, resuming after a cursor when it can (0: never).
    Connect(
        SpiffeId,
        u64,
        RpcReplyPort<(SyncStart, mpsc::Receiver<SyncUpdate>)>,
    ),
    /// Which of these entries the agent is authorised for (for signing): per id, the entry,
    /// or the id back if the agent may not have it.
    Authorise(
        SpiffeId,
        Vec<EntryId>,
        RpcReplyPort<Vec<Result<RegistrationEntry, EntryId>>>,
    ),
    /// The agent's current authorised entries.
    EntriesFor(SpiffeId, RpcReplyPort<Vec<RegistrationEntry>>),
    /// The last seq folded.
    Seq(RpcReplyPort<u64>),
    /// Periodic: tell every stream how far the log is folded, so idle agents' cursors move
    /// past records that did not concern them.
    Heartbeat,
}

impl std::fmt::Debug for SyncHubMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncHubMsg::Committed(seq, e) => write!(f, "Committed({seq}, {e:?})"),
            SyncHubMsg::Connect(a, cursor, _) => write!(f, "Connect({a}, {cursor})"),
            SyncHubMsg::Authorise(a, ids, _) => write!(f, "Authorise({a}, {} ids)", ids.len()),
            SyncHubMsg::EntriesFor(a, _) => write!(f, "EntriesFor({a})"),
            SyncHubMsg::Seq(_) => f.write_str("Seq"),
            SyncHubMsg::Heartbeat => f.write_str("Heartbeat"),
        }
    }
}

/// What the hub starts from.
pub struct SyncHubArgs {
    /// The server's log, followed from `seq + 1`.
    pub log: TypedLog<ServerEvent>,
    /// The index folded up to `seq`.
    pub index: SyncIndex,
    /// Last seq folded into `index`.
    pub seq: u64,
    /// Updates buffered per stream before it is dropped.
    pub stream_buffer: usize,
    /// How often idle streams get a checkpoint.
    pub heartbeat: Duration,
    /// Most per-agent changes kept for resumption.
    pub resume_window: usize,
}

impl std::fmt::Debug for SyncHubArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHubArgs")
            .field("seq", &self.seq)
            .finish()
    }
}

/// The hub's state.
pub struct SyncHubState {
    index: SyncIndex,
    seq: u64,
    stream_buffer: usize,
    streams: HashMap<SpiffeId, Vec<mpsc::Sender<SyncUpdate>>>,
    follower: tokio::task::JoinHandle<()>,
    heartbeat: ractor::concurrency::JoinHandle<()>,
    last_heartbeat_seq: u64,
    /// Changes of recent records, oldest first; they cover every record after `recent_floor`.
    recent: VecDeque<Recent>,
    recent_floor: u64,
    recent_changes: usize,
    resume_window: usize,
    /// Seq of the last federated bundle deletion folded here: an agent whose cursor is older
    /// may still hold that bundle, and a resumption (which re-sends the federated bundles
    /// that exist) could not tell it to drop it, so it gets a snapshot instead.
    federated_removed_at: u64,
}

/// The per-agent changes one record made.
struct Recent {
    seq: u64,
    changes: BTreeMap<SpiffeId, Vec<ViewChange>>,
    bundle_changed: bool,
}

impl std::fmt::Debug for SyncHubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHubState")
            .field("seq", &self.seq)
            .field("agents_connected", &self.streams.len())
            .finish()
    }
}

/// The hub actor.
#[derive(Debug, Default)]
pub struct SyncHub;

impl Actor for SyncHub {
    type Msg = SyncHubMsg;
    type State = SyncHubState;
    type Arguments = SyncHubArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SyncHubMsg>,
        args: SyncHubArgs,
    ) -> Result<SyncHubState, ActorProcessingErr> {
        let heartbeat = myself.send_interval(args.heartbeat, || SyncHubMsg::Heartbeat);
        let follower = spawn_follower(&args.log, args.seq, myself, "sync-hub", |seq, event| {
            SyncHubMsg::Committed(seq, Box::new(event))
        });
        Ok(SyncHubState {
            index: args.index,
            seq: args.seq,
            stream_buffer: args.stream_buffer.max(1),
            streams: HashMap::new(),
            follower,
            heartbeat,
            last_heartbeat_seq: args.seq,
            recent: VecDeque::new(),
            recent_floor: args.seq,
            recent_changes: 0,
            resume_window: args.resume_window,
            federated_removed_at: 0,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SyncHubMsg>,
        state: &mut SyncHubState,
    ) -> Result<(), ActorProcessingErr> {
        state.follower.abort();
        // Wait until the task is gone: it holds a subscription, and with it the log's store.
        let _ = (&mut state.follower).await;
        state.heartbeat.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SyncHubMsg>,
        message: SyncHubMsg,
        state: &mut SyncHubState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SyncHubMsg::Committed(seq, event) => state.committed(seq, &event),
            SyncHubMsg::Connect(agent, cursor, reply) => {
                let (tx, rx) = mpsc::channel(state.stream_buffer);
                let start = state.start_for(&agent, cursor);
                state.streams.entry(agent).or_default().push(tx);
                let _ = reply.send((start, rx));
            }
            SyncHubMsg::Authorise(agent, ids, reply) => {
                let answer = ids
                    .into_iter()
                    .map(|id| {
                        if state.index.is_authorised(&agent, &id) {
                            state.index.registry().get(&id).cloned().ok_or(id)
                        } else {
                            Err(id)
                        }
                    })
                    .collect();
                let _ = reply.send(answer);
            }
            SyncHubMsg::EntriesFor(agent, reply) => {
                let _ = reply.send(state.index.entries_for(&agent));
            }
            SyncHubMsg::Seq(reply) => {
                let _ = reply.send(state.seq);
            }
            SyncHubMsg::Heartbeat => {
                if state.seq > state.last_heartbeat_seq {
                    state.last_heartbeat_seq = state.seq;
                    let update = SyncUpdate {
                        seq: state.seq,
                        changes: Vec::new(),
                        bundle_changed: false,
                    };
                    state.streams.retain(|_, senders| {
                        senders.retain(|tx| tx.try_send(update.clone()).is_ok());
                        !senders.is_empty()
                    });
                }
            }
        }
        Ok(())
    }
}

impl SyncHubState {
    /// A resumption after `cursor` if the retained changes cover it, else a snapshot.
    fn start_for(&self, agent: &SpiffeId, cursor: u64) -> SyncStart {
        if cursor != 0
            && cursor >= self.recent_floor
            && cursor >= self.federated_removed_at
            && cursor <= self.seq
        {
            let missed = self
                .recent
                .iter()
                .filter(|r| r.seq > cursor)
                .filter_map(|r| {
                    let changes = r.changes.get(agent).cloned();
                    (changes.is_some() || r.bundle_changed).then(|| SyncUpdate {
                        seq: r.seq,
                        changes: changes.unwrap_or_default(),
                        bundle_changed: r.bundle_changed,
                    })
                })
                .collect();
            return SyncStart::Resume { cursor, missed };
        }
        SyncStart::Snapshot(SyncSnapshot {
            seq: self.seq,
            entries: self.index.entries_for(agent),
        })
    }

    /// Keeps a record's changes for resumption, dropping the oldest beyond the window.
    fn retain_recent(&mut self, recent: Recent) {
        let count: usize = recent.changes.values().map(Vec::len).sum();
        if count == 0 && !recent.bundle_changed {
            return;
        }
        self.recent_changes += count.max(1);
        self.recent.push_back(recent);
        while self.recent_changes > self.resume_window {
            let Some(oldest) = self.recent.pop_front() else {
                break;
            };
            let n: usize = oldest.changes.values().map(Vec::len).sum();
            self.recent_changes -= n.max(1);
            self.recent_floor = oldest.seq;
        }
    }

    fn committed(&mut self, seq: u64, event: &ServerEvent) {
        if seq <= self.seq {
            return; // Already folded (the follower starts after the index's seq).
        }
        self.seq = seq;
        if let ServerEvent::FederatedBundleDeleted { .. } = event {
            self.federated_removed_at = seq;
        }
        let bundle_changed = event.touches_bundle();
        let changes = self.index.apply(event);
        let targets: Vec<SpiffeId> = if bundle_changed {
            self.streams.keys().cloned().collect()
        } else {
            changes
                .keys()
                .filter(|a| self.streams.contains_key(*a))
                .cloned()
                .collect()
        };
        for agent in targets {
            let update = SyncUpdate {
                seq,
                changes: changes.get(&agent).cloned().unwrap_or_default(),
                bundle_changed,
            };
            if let Some(senders) = self.streams.get_mut(&agent) {
                // Full or closed streams are dropped: the agent reconnects for a snapshot.
                senders.retain(|tx| tx.try_send(update.clone()).is_ok());
                if senders.is_empty() {
                    self.streams.remove(&agent);
                }
            }
        }
        // An evicted or banned agent has been sent the removal of its whole view; closing its
        // streams makes it reconnect, be refused, and attest again (or stop) at once.
        if let ServerEvent::AgentEvicted { agent_id } | ServerEvent::AgentBanned { agent_id } =
            event
        {
            self.streams.remove(agent_id);
        }
        self.retain_recent(Recent {
            seq,
            changes,
            bundle_changed,
        });
    }
}

/// Errors of hub calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncHubError {
    /// Too many requests waiting.
    #[error("sync hub has {limit} requests in flight (its limit); retry later")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// The hub is down or slow.
    #[error("sync hub unavailable: {0}")]
    Unavailable(String),
}

/// A bounded, timed door to the hub.
#[derive(Clone, Debug)]
pub struct SyncHubHandle {
    actor: ActorRef<SyncHubMsg>,
    in_flight: Arc<Semaphore>,
    limit: usize,
    timeout: Duration,
}

impl SyncHubHandle {
    /// Wraps the hub.
    pub fn new(actor: ActorRef<SyncHubMsg>, max_in_flight: usize, timeout: Duration) -> Self {
        Self {
            actor,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            limit: max_in_flight.max(1),
            timeout,
        }
    }

    /// The hub actor.
    pub fn actor(&self) -> &ActorRef<SyncHubMsg> {
        &self.actor
    }

    /// Requests waiting for or running in the hub now (at most `max_in_flight`).
    pub fn in_flight(&self) -> usize {
        self.limit - self.in_flight.available_permits()
    }

    async fn call<R: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<R>) -> SyncHubMsg,
    ) -> Result<R, SyncHubError> {
        let _permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| SyncHubError::Overloaded { limit: self.limit })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.actor
            .send_message(msg(RpcReplyPort::from(tx)))
            .map_err(|e| SyncHubError::Unavailable(e.to_string()))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(SyncHubError::Unavailable("stopped before replying".into())),
            Err(_) => Err(SyncHubError::Unavailable(format!(
                "no reply within {:?}",
                self.timeout
            ))),
        }
    }

    /// Opens an agent's stream: its snapshot, then its updates.
    pub async fn connect(
        &self,
        agent: SpiffeId,
    ) -> Result<(SyncSnapshot, mpsc::Receiver<SyncUpdate>), SyncHubError> {
        let (start, updates) = self.connect_from(agent, 0).await?;
        match start {
            SyncStart::Snapshot(snapshot) => Ok((snapshot, updates)),
            SyncStart::Resume { .. } => Err(SyncHubError::Unavailable(
                "the hub resumed a stream that asked for a snapshot".into(),
            )),
        }
    }

    /// Opens an agent's stream after `cursor`: the updates it missed if the hub still holds
    /// them, else a snapshot; then its updates.
    pub async fn connect_from(
        &self,
        agent: SpiffeId,
        cursor: u64,
    ) -> Result<(SyncStart, mpsc::Receiver<SyncUpdate>), SyncHubError> {
        self.call(|port| SyncHubMsg::Connect(agent, cursor, port))
            .await
    }

    /// Per id, the entry if the agent is authorised for it, else the id back.
    pub async fn authorise(
        &self,
        agent: SpiffeId,
        ids: Vec<EntryId>,
    ) -> Result<Vec<Result<RegistrationEntry, EntryId>>, SyncHubError> {
        self.call(|port| SyncHubMsg::Authorise(agent, ids, port))
            .await
    }

    /// The agent's authorised entries.
    pub async fn entries_for(
        &self,
        agent: SpiffeId,
    ) -> Result<Vec<RegistrationEntry>, SyncHubError> {
        self.call(|port| SyncHubMsg::EntriesFor(agent, port)).await
    }

    /// The last seq the hub folded.
    pub async fn seq(&self) -> Result<u64, SyncHubError> {
        self.call(SyncHubMsg::Seq).await
    }
}
