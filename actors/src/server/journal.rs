//! Journal: follows the committed log, folds the whole server state, and stores a snapshot
//! every `snapshot_every` records so that start-up replays only the tail.
//!
//! Supervisor: the server supervisor. Consumes every committed event; emits none (snapshots
//! are stored beside the log, not in it). The appends themselves are the log's single writer
//! thread (`tessera_eventlog::LocalLog`), which already does group commit; the journal is its
//! reader side.
//!
//! Mailbox: only its own follower task sends to it, at the log's rate.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tessera_eventlog::typed::encode_state;
use tessera_eventlog::TypedLog;

use crate::server::events::ServerEvent;
use crate::server::follow::spawn_follower;
use crate::server::state::ServerState;

/// Messages of the journal.
#[derive(Debug)]
pub enum JournalMsg {
    /// A committed record, from the follower task.
    Committed(u64, Box<ServerEvent>),
    /// Store a snapshot now; replies with its seq.
    SnapshotNow(RpcReplyPort<Result<u64, String>>),
    /// The last seq folded.
    Seq(RpcReplyPort<u64>),
}

/// What the journal starts from.
#[derive(Debug)]
pub struct JournalArgs {
    /// The server's log.
    pub log: TypedLog<ServerEvent>,
    /// State folded up to `seq`.
    pub state: ServerState,
    /// Last seq folded into `state`.
    pub seq: u64,
    /// Records between automatic snapshots (0: never).
    pub snapshot_every: u64,
}

/// The journal's state.
#[derive(Debug)]
pub struct JournalState {
    log: TypedLog<ServerEvent>,
    state: ServerState,
    seq: u64,
    last_snapshot: u64,
    snapshot_every: u64,
    follower: tokio::task::JoinHandle<()>,
}

/// The journal actor.
#[derive(Debug, Default)]
pub struct Journal;

impl Actor for Journal {
    type Msg = JournalMsg;
    type State = JournalState;
    type Arguments = JournalArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JournalMsg>,
        args: JournalArgs,
    ) -> Result<JournalState, ActorProcessingErr> {
        let follower = spawn_follower(&args.log, args.seq, myself, "journal", |seq, event| {
            JournalMsg::Committed(seq, Box::new(event))
        });
        Ok(JournalState {
            log: args.log,
            state: args.state,
            seq: args.seq,
            last_snapshot: args.seq,
            snapshot_every: args.snapshot_every,
            follower,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<JournalMsg>,
        state: &mut JournalState,
    ) -> Result<(), ActorProcessingErr> {
        state.follower.abort();
        // Wait until the task is gone: it holds a subscription, and with it the log's store.
        let _ = (&mut state.follower).await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<JournalMsg>,
        message: JournalMsg,
        state: &mut JournalState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JournalMsg::Committed(seq, event) => {
                if seq > state.seq {
                    state.state.apply(&event);
                    state.seq = seq;
                }
                // At least `snapshot_every` records apart, and at least as many as the state
                // is large, so the cost of snapshots stays proportional to the events.
                let size = (state.state.registry.len() + state.state.nodes.len()) as u64;
                let due = state.snapshot_every.max(size);
                if state.snapshot_every > 0 && state.seq - state.last_snapshot >= due {
                    if let Err(e) = state.snapshot().await {
                        // A missed snapshot only costs start-up time; keep going.
                        tracing::warn!(error = %e, seq = state.seq, "snapshot failed");
                    }
                }
            }
            JournalMsg::SnapshotNow(reply) => {
                let _ = reply.send(state.snapshot().await);
            }
            JournalMsg::Seq(reply) => {
                let _ = reply.send(state.seq);
            }
        }
        Ok(())
    }
}

impl JournalState {
    async fn snapshot(&mut self) -> Result<u64, String> {
        if self.seq == 0 {
            return Ok(0);
        }
        let data = encode_state(&self.state).map_err(|e| e.to_string())?;
        self.log
            .raw()
            .save_snapshot(self.seq, data)
            .await
            .map_err(|e| e.to_string())?;
        self.last_snapshot = self.seq;
        tracing::info!(seq = self.seq, "snapshot stored");
        Ok(self.seq)
    }
}
