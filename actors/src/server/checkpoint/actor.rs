//! The checkpointer: on every tick it reads the records committed since its last look, and
//! when the [`Cadence`] says a checkpoint is due, signs the head with the server's active JWT
//! key and appends a `CheckpointSigned` record right after it.
//!
//! Supervisor: the server supervisor (a failure of the actor stops the server, as any
//! actor's; a failed checkpoint is only logged and tried again on the next tick). Consumes
//! the log by reading it (every kind counts; checkpoints, any server's, reset the count);
//! emits `CheckpointSigned`.
//!
//! Several servers on one log: the append expects the head the checkpoint covers, so a
//! checkpoint always covers the record just before it, and when two servers decide at once
//! only one commits; the other reads that checkpoint on its next tick and starts counting
//! again, as every server does after any server's checkpoint.
//!
//! Mailbox: its own timer (one `Tick` every `tick`) and tests. A tick awaits the log and the
//! signer (which signs on the blocking pool), so ticks queue behind a slow one instead of
//! overlapping.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tessera_eventlog::typed::TypedError;
use tessera_eventlog::{AppendCondition, Clock, Digest32, LogError, TypedLog};
use tessera_identity::TrustDomain;
use tokio::task::JoinHandle;

use super::scan::{checkpoint_in, find_latest};
use super::{signed_bytes, Cadence, CheckpointRecord, CheckpointSettings};
use crate::server::authority::signer::{SignError, Signer};
use crate::server::events::ServerEvent;
use crate::server::supervisor::ServerSettings;

/// Records read from the log at a time.
const CHUNK: u64 = 1_024;

/// Messages of the checkpointer.
#[derive(Debug)]
pub enum CheckpointerMsg {
    /// Look at the log and checkpoint it if due; the reply (if any) says what happened.
    Tick(Option<RpcReplyPort<TickOutcome>>),
}

/// What one tick did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// A checkpoint of seq `covers` was appended as record `record_seq`.
    Appended {
        /// The checkpoint record's seq.
        record_seq: u64,
        /// The seq it covers.
        covers: u64,
    },
    /// Nothing was due.
    NotDue,
    /// Due, but there is no JWT key to sign with yet (or it just rotated).
    NoKey(String),
    /// Another server's checkpoint committed first; nothing was appended.
    Lost,
    /// Reading, signing or appending failed.
    Failed(String),
}

/// What the checkpointer starts from.
#[derive(Debug)]
pub struct CheckpointerArgs {
    /// The server's log.
    pub log: TypedLog<ServerEvent>,
    /// The authority's signer (its installed JWT key signs).
    pub signer: Signer,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The trust domain (part of the signed bytes).
    pub trust_domain: TrustDomain,
    /// This server's id on a shared log; `None` on its own.
    pub server_id: Option<String>,
    /// Cadence.
    pub settings: CheckpointSettings,
}

impl CheckpointerArgs {
    /// For the server of `settings`, signing with its authority's `signer`.
    pub fn for_server(
        settings: &ServerSettings,
        log: &TypedLog<ServerEvent>,
        signer: &Signer,
        clock: &Arc<dyn Clock>,
    ) -> Self {
        Self {
            log: log.clone(),
            signer: signer.clone(),
            clock: clock.clone(),
            trust_domain: settings.trust_domain.clone(),
            server_id: settings
                .authority
                .owner
                .as_ref()
                .map(|o| o.server_id.clone()),
            settings: settings.checkpoint.clone(),
        }
    }
}

/// One tick without an actor: what the checkpointer would do now, started fresh on `args`
/// (tools, tests). The cadence is the one a starting checkpointer has.
///
/// # Errors
/// A [`ScanError`](super::scan::ScanError) if the log cannot be read at the start.
pub async fn checkpoint_once(
    args: CheckpointerArgs,
) -> Result<TickOutcome, super::scan::ScanError> {
    let mut state = CheckpointerState::new(args).await?;
    Ok(state.tick().await)
}

/// The checkpointer's state.
#[derive(Debug)]
pub struct CheckpointerState {
    args: CheckpointerArgs,
    cadence: Cadence,
    /// Hash of record `cadence.seen_to()`.
    seen_hash: Digest32,
    timer: Option<JoinHandle<()>>,
}

/// The checkpointer actor.
#[derive(Debug, Default)]
pub struct Checkpointer;

impl Actor for Checkpointer {
    type Msg = CheckpointerMsg;
    type State = CheckpointerState;
    type Arguments = CheckpointerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<CheckpointerMsg>,
        args: CheckpointerArgs,
    ) -> Result<CheckpointerState, ActorProcessingErr> {
        Ok(CheckpointerState::new(args).await?)
    }

    async fn post_start(
        &self,
        myself: ActorRef<CheckpointerMsg>,
        state: &mut CheckpointerState,
    ) -> Result<(), ActorProcessingErr> {
        if let (Some(every), true) = (state.args.settings.tick, state.args.settings.enabled()) {
            state.timer = Some(myself.send_interval(every, || CheckpointerMsg::Tick(None)));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<CheckpointerMsg>,
        state: &mut CheckpointerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<CheckpointerMsg>,
        message: CheckpointerMsg,
        state: &mut CheckpointerState,
    ) -> Result<(), ActorProcessingErr> {
        let CheckpointerMsg::Tick(reply) = message;
        let outcome = state.tick().await;
        match &outcome {
            TickOutcome::Appended { record_seq, covers } => {
                tracing::info!(record_seq, covers, "log checkpoint signed");
            }
            TickOutcome::NoKey(reason) => {
                tracing::debug!(%reason, "log checkpoint due, but no JWT key to sign it");
            }
            TickOutcome::Failed(reason) => {
                tracing::warn!(%reason, "log checkpoint failed; trying again on the next tick");
            }
            TickOutcome::NotDue | TickOutcome::Lost => {}
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
        Ok(())
    }
}

impl CheckpointerState {
    /// Counting starts at the last checkpoint in the window (it resets the count), or at the
    /// window's start: a log with `every_records` records and no checkpoint among them is
    /// due at the first tick.
    async fn new(args: CheckpointerArgs) -> Result<Self, super::scan::ScanError> {
        let head = args.log.raw().head().seq;
        let window = args.settings.start_window();
        let now = now_secs(args.clock.as_ref());
        let latest = find_latest(args.log.raw().as_ref(), head, Some(window)).await?;
        let (from, last_at) = match &latest {
            Some(found) => (found.record_seq, found.checkpoint.signed_at),
            None => (head.saturating_sub(window), now),
        };
        let cadence = Cadence::new(args.settings.clone(), from, last_at);
        Ok(Self {
            args,
            cadence,
            seen_hash: Digest32::GENESIS,
            timer: None,
        })
    }

    async fn tick(&mut self) -> TickOutcome {
        if let Err(e) = self.catch_up().await {
            return TickOutcome::Failed(format!("reading the log: {e}"));
        }
        let now = now_secs(self.args.clock.as_ref());
        if !self.cadence.due(now) {
            return TickOutcome::NotDue;
        }
        let covers = self.cadence.seen_to();
        let record = match self.sign(covers, now).await {
            Ok(record) => record,
            Err(SignError::NoActiveJwtKey { reason }) => return TickOutcome::NoKey(reason),
            Err(e) => return TickOutcome::Failed(format!("signing: {e}")),
        };
        let event = [ServerEvent::CheckpointSigned(record)];
        let appended = match self
            .args
            .log
            .append(&event, AppendCondition::ExpectHead(covers))
            .await
        {
            Err(TypedError::Log(LogError::Conflict { .. })) => {
                // The head moved while we signed. If another server's checkpoint came in
                // meanwhile, ours is not needed; otherwise it still proves seq `covers` (only
                // a checkpoint of a seq before its own record is asked for), so it goes in
                // wherever the head is now: under sustained writes a checkpoint is late,
                // never skipped.
                if let Err(e) = self.catch_up().await {
                    return TickOutcome::Failed(format!("reading the log: {e}"));
                }
                if !self.cadence.due(now) {
                    return TickOutcome::Lost;
                }
                self.args.log.append(&event, AppendCondition::Any).await
            }
            other => other,
        };
        match appended {
            Ok(receipt) => {
                self.cadence.observe(receipt.first_seq, Some(now));
                TickOutcome::Appended {
                    record_seq: receipt.first_seq,
                    covers,
                }
            }
            Err(TypedError::Log(LogError::Conflict { .. })) => TickOutcome::Lost,
            Err(e) => TickOutcome::Failed(format!("appending: {e}")),
        }
    }

    /// Reads every record after the last one seen, up to the head.
    async fn catch_up(&mut self) -> Result<(), super::scan::ScanError> {
        let log = self.args.log.raw().clone();
        let head = log.head().seq;
        while self.cadence.seen_to() < head {
            let from = self.cadence.seen_to() + 1;
            let want = usize::try_from((head - from + 1).min(CHUNK)).unwrap_or(1);
            let records = log.read(from, want).await?;
            if records.is_empty() {
                break;
            }
            let before = self.cadence.seen_to();
            for r in records.iter().filter(|r| r.seq <= head) {
                let signed_at = match checkpoint_in(r) {
                    Ok(c) => c.map(|c| c.signed_at),
                    Err(e) => {
                        // Counted as a record; the chain check and audit report it.
                        tracing::warn!(seq = r.seq, error = %e, "undecodable checkpoint record");
                        None
                    }
                };
                self.cadence.observe(r.seq, signed_at);
                self.seen_hash = r.hash;
            }
            if self.cadence.seen_to() == before {
                break;
            }
        }
        Ok(())
    }

    async fn sign(&self, covers: u64, now: i64) -> Result<CheckpointRecord, SignError> {
        let args = &self.args;
        let kid = args
            .signer
            .active_kid()
            .ok_or_else(|| SignError::NoActiveJwtKey {
                reason: "none prepared yet".into(),
            })?;
        let server_id = args.server_id.as_deref();
        let hash = self.seen_hash.0;
        let message = signed_bytes(&args.trust_domain, server_id, covers, &hash, now, &kid)
            .map_err(|e| SignError::Internal {
                reason: e.to_string(),
            })?;
        let (key, signature) = args.signer.sign_checkpoint(&kid, message).await?;
        Ok(CheckpointRecord {
            server_id: args.server_id.clone(),
            seq: covers,
            hash: hash.to_vec(),
            signed_at: now,
            kid,
            public_key_der: key.public_key_der,
            signature,
        })
    }
}

fn now_secs(clock: &dyn Clock) -> i64 {
    clock.now_unix_nanos().div_euclid(1_000_000_000)
}
