//! The actor around one pure [`Aggregate`]: decide → persist → apply → reply, one command at
//! a time, so a reply is only ever given for durable events.
//!
//! Supervisor: [`Server`](crate::server::supervisor). Emits the aggregate's own events and
//! consumes every committed record: several servers may write the same log, so the state is
//! the fold of the whole log, followed from the seq it was seeded at (see [`follow`]). A
//! command is decided on the state at seq `h` and appended only if the log's head is still
//! `h`; on a conflict the actor folds what it had not seen and decides again (bounded), so
//! uniqueness rules hold across servers. A storage outage answers `Unavailable` and the actor
//! carries on; any other append failure stops it (fail-stop, as the local log is).
//!
//! [`follow`]: crate::server::follow
//!
//! Mailbox: ractor mailboxes are unbounded, so the bound is enforced at the door: an
//! [`AggregateHandle`] admits at most `max_in_flight` requests (waiting or running); beyond
//! that, callers get [`CommandError::Overloaded`] at once (the API maps it to
//! `ResourceExhausted`). Every call has a timeout.
//!
//! Housekeeping: with a `housekeeping` interval, the actor runs its aggregate's
//! [`Aggregate::housekeeping`] command (pruning what expired) every interval, and sooner when
//! [`Aggregate::next_due`] says something comes due earlier (an entry expiring), through the
//! same decide → persist → apply as any command: the prune is an event, not a silent delete.
//! While a round finds work it runs again a second later (batches are bounded); after a
//! failed round (storage outage) it waits `HOUSEKEEPING_RETRY`.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tessera_eventlog::{Clock, TypedLog};
use tokio::sync::Semaphore;

use crate::random::RandomSource;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::events::ServerEvent;
use crate::server::follow::{
    append_at, catch_up, conflict_backoff, is_next, spawn_follower, Written,
};

/// Messages of an aggregate actor.
pub enum AggregateMsg<A: Aggregate> {
    /// Decide, persist, apply, reply.
    Command(
        A::Command,
        RpcReplyPort<Result<A::Reply, CommandError<A::Error>>>,
    ),
    /// Run a read against the current state (the closure sends its own answer).
    Read(Box<dyn FnOnce(&A) + Send>),
    /// Fold every record committed so far (asking the log, not waiting for the follower),
    /// then run the read: for a caller that must not act on a view older than another
    /// server's latest write. If the log cannot be read, the read runs on what is folded.
    ReadFresh(Box<dyn FnOnce(&A) + Send>),
    /// A committed record, from the follower task.
    Committed(u64, Box<ServerEvent>),
    /// Run the aggregate's housekeeping if any is due (from the actor's own timer).
    Housekeep,
}

/// A read run inside the actor against its state.
type Reader<A> = Box<dyn FnOnce(&A) + Send>;

/// What the actor starts from.
pub struct AggregateArgs<A: Aggregate> {
    /// The server's log.
    pub log: TypedLog<ServerEvent>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Randomness for ids.
    pub random: Arc<dyn RandomSource>,
    /// State already folded by the caller (start-up replays once for all aggregates); `None`
    /// makes the actor replay the log itself (restart after a crash).
    pub initial: Option<A>,
    /// The seq `initial` was folded to (ignored when `initial` is `None`).
    pub seq: u64,
    /// Append conflicts ridden out per command before answering `Unavailable`.
    pub conflict_retries: u32,
    /// Applies configuration to a freshly loaded state.
    pub configure: Arc<dyn Fn(&mut A) + Send + Sync>,
    /// How often housekeeping runs at the latest; `None`: never on its own (tests send
    /// [`AggregateMsg::Housekeep`] or the command itself).
    pub housekeeping: Option<Duration>,
}

/// Wait after a housekeeping round that failed (the log unavailable), before the next.
pub const HOUSEKEEPING_RETRY: Duration = Duration::from_secs(10);
/// Wait after a round that found work, in case more is due (prunes are bounded batches).
const HOUSEKEEPING_AGAIN: Duration = Duration::from_secs(1);

/// The running actor's state.
pub struct AggregateState<A: Aggregate> {
    aggregate: A,
    /// The last seq folded into `aggregate`.
    seq: u64,
    log: TypedLog<ServerEvent>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn RandomSource>,
    conflict_retries: u32,
    follower: tokio::task::JoinHandle<()>,
    housekeeping: Option<Duration>,
    /// The pending housekeeping wake-up and the time it is for (Unix nanos).
    wake: Option<(i128, ractor::concurrency::JoinHandle<HousekeepSent<A>>)>,
}

/// What the housekeeping timer task ends with.
type HousekeepSent<A> = Result<(), ractor::MessagingErr<AggregateMsg<A>>>;

/// The actor (no fields: everything lives in its state).
#[derive(Debug)]
pub struct AggregateActor<A>(std::marker::PhantomData<fn() -> A>);

impl<A> Default for AggregateActor<A> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

/// Why a command or read did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Rejected(E),
    /// Too many requests are waiting for this actor.
    #[error("{actor} has {limit} requests in flight (its limit); retry later")]
    Overloaded {
        /// The actor.
        actor: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The actor is down, timed out, or could not persist: retryable.
    #[error("{actor} unavailable: {reason}")]
    Unavailable {
        /// The actor.
        actor: &'static str,
        /// What happened.
        reason: String,
    },
}

impl<A: Aggregate> Actor for AggregateActor<A> {
    type Msg = AggregateMsg<A>;
    type State = AggregateState<A>;
    type Arguments = AggregateArgs<A>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AggregateArgs<A>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (mut aggregate, seq) = match args.initial {
            Some(a) => (a, args.seq),
            None => {
                let mut a = A::default();
                let seq = args.log.replay(0, |_, e| a.apply(&e)).await?;
                (a, seq)
            }
        };
        (args.configure)(&mut aggregate);
        let follower = spawn_follower(&args.log, seq, myself, A::NAME, |seq, event| {
            AggregateMsg::Committed(seq, Box::new(event))
        });
        Ok(AggregateState {
            aggregate,
            seq,
            log: args.log,
            clock: args.clock,
            random: args.random,
            conflict_retries: args.conflict_retries,
            follower,
            housekeeping: args.housekeeping,
            wake: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.housekeeping.is_some() {
            // A first round at start: whatever expired while the server was down.
            state.schedule(&myself, Duration::ZERO);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, timer)) = state.wake.take() {
            timer.abort();
        }
        state.follower.abort();
        // The task holds a subscription, and with it the log: wait until it is gone.
        let _ = (&mut state.follower).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AggregateMsg::Read(read) => read(&state.aggregate),
            AggregateMsg::ReadFresh(read) => {
                let aggregate = &mut state.aggregate;
                if let Err(e) = catch_up(&state.log, &mut state.seq, |e| aggregate.apply(e)).await {
                    tracing::warn!(actor = A::NAME, error = %e, "cannot catch up with the log; reading what is folded");
                }
                read(&state.aggregate);
            }
            AggregateMsg::Committed(seq, event) => {
                if is_next(state.seq, seq, A::NAME)? {
                    state.aggregate.apply(&event);
                    state.seq = seq;
                    state.wake_for_due(&myself);
                }
            }
            AggregateMsg::Command(command, reply) => {
                let (outcome, fatal) = state.command(command).await;
                let _ = reply.send(outcome);
                if let Some(reason) = fatal {
                    // The log is fail-stop after a write error: stop, let the supervisor
                    // decide (a restart replays what is durable).
                    return Err(format!("{}: append failed: {reason}", A::NAME).into());
                }
                state.wake_for_due(&myself);
            }
            AggregateMsg::Housekeep => {
                state.wake = None;
                let now = unix_secs(state.clock.as_ref());
                let next = match state.aggregate.housekeeping(now) {
                    None => state.until_due(),
                    Some(command) => {
                        let (outcome, fatal) = state.command(command).await;
                        if let Some(reason) = fatal {
                            return Err(format!(
                                "{}: housekeeping append failed: {reason}",
                                A::NAME
                            )
                            .into());
                        }
                        match outcome {
                            Ok(reply) => {
                                tracing::info!(actor = A::NAME, ?reply, "housekeeping");
                                HOUSEKEEPING_AGAIN
                            }
                            Err(e) => {
                                tracing::warn!(actor = A::NAME, error = %e, "housekeeping failed; retrying");
                                HOUSEKEEPING_RETRY
                            }
                        }
                    }
                };
                if let Some(every) = state.housekeeping {
                    state.schedule(&myself, next.min(every));
                }
            }
        }
        Ok(())
    }
}

impl<A: Aggregate> AggregateState<A> {
    /// Schedules the next housekeeping round `after` from now, replacing a pending one.
    fn schedule(&mut self, myself: &ActorRef<AggregateMsg<A>>, after: Duration) {
        if let Some((_, timer)) = self.wake.take() {
            timer.abort();
        }
        let at = i128::from(self.clock.now_unix_nanos())
            .saturating_add(i128::try_from(after.as_nanos()).unwrap_or(i128::MAX));
        let timer = myself.send_after(after, || AggregateMsg::Housekeep);
        self.wake = Some((at, timer));
    }

    /// How long until the aggregate's next due work (at most the housekeeping interval); a
    /// second if it is already due (a round that just ran left some, or failed).
    fn until_due(&self) -> Duration {
        let every = self.housekeeping.unwrap_or(HOUSEKEEPING_RETRY);
        match self.aggregate.next_due() {
            None => every,
            Some(due) => {
                let due_nanos = i128::from(due) * 1_000_000_000;
                let now = i128::from(self.clock.now_unix_nanos());
                if due_nanos <= now {
                    HOUSEKEEPING_AGAIN
                } else {
                    // A millisecond past the second it is due, so it is due when the round runs.
                    let wait = u64::try_from(due_nanos - now + 1_000_000).unwrap_or(u64::MAX);
                    Duration::from_nanos(wait).min(every)
                }
            }
        }
    }

    /// After a fold: wakes earlier if something now comes due before the pending round.
    fn wake_for_due(&mut self, myself: &ActorRef<AggregateMsg<A>>) {
        if self.housekeeping.is_none() {
            return;
        }
        let Some(due) = self.aggregate.next_due() else {
            return;
        };
        let due_nanos = i128::from(due) * 1_000_000_000;
        let now = i128::from(self.clock.now_unix_nanos());
        // Keep a pending round that comes first, or one already set for work overdue (a
        // round that failed waits its retry delay, not one per fold).
        if self
            .wake
            .as_ref()
            .is_some_and(|(at, _)| *at <= due_nanos || due_nanos <= now)
        {
            return;
        }
        let after = self.until_due();
        self.schedule(myself, after);
    }
}

impl<A: Aggregate> AggregateState<A> {
    /// Decide → persist (at the folded seq) → apply, riding out conflicts with other writers.
    /// The second value, if any, is why the actor must stop after replying.
    async fn command(
        &mut self,
        command: A::Command,
    ) -> (Result<A::Reply, CommandError<A::Error>>, Option<String>) {
        let unavailable = |reason: String| CommandError::Unavailable {
            actor: A::NAME,
            reason,
        };
        let mut conflicts = 0;
        let mut refolded = false;
        loop {
            let mut random = [0u8; 16];
            self.random.fill(&mut random);
            let ctx = Context {
                now: unix_secs(self.clock.as_ref()),
                random,
            };
            let decision = match self.aggregate.decide(command.clone(), &ctx) {
                Ok(d) => d,
                Err(e) if refolded => return (Err(CommandError::Rejected(e)), None),
                Err(e) => {
                    // A refusal is final only on the log's latest state: what it depends on
                    // (a join token just created, by another actor or server) may be
                    // committed and not yet folded here. Fold what the log has, decide once
                    // more.
                    refolded = true;
                    let before = self.seq;
                    let aggregate = &mut self.aggregate;
                    let caught = catch_up(&self.log, &mut self.seq, |e| aggregate.apply(e)).await;
                    if caught.is_err() || self.seq == before {
                        return (Err(CommandError::Rejected(e)), None);
                    }
                    continue;
                }
            };
            if decision.events.is_empty() {
                return (Ok(decision.reply), None);
            }
            match append_at(&self.log, &decision.events, self.seq).await {
                Written::Committed(receipt) => {
                    for e in &decision.events {
                        self.aggregate.apply(e);
                    }
                    self.seq = receipt.last_seq;
                    return (Ok(decision.reply), None);
                }
                Written::Conflict if conflicts < self.conflict_retries => {
                    conflicts += 1;
                    tokio::time::sleep(conflict_backoff(conflicts, self.random.as_ref())).await;
                    let aggregate = &mut self.aggregate;
                    if let Err(e) = catch_up(&self.log, &mut self.seq, |e| aggregate.apply(e)).await
                    {
                        let reason = format!("catching up with the log after a conflict: {e}");
                        return (Err(unavailable(reason.clone())), Some(reason));
                    }
                }
                Written::Conflict => {
                    let reason = format!(
                        "the log moved under {conflicts} attempts in a row (other servers are writing); retry"
                    );
                    return (Err(unavailable(reason)), None);
                }
                Written::Unavailable(reason) => return (Err(unavailable(reason)), None),
                Written::Failed(reason) => {
                    return (
                        Err(unavailable(format!("could not persist: {reason}"))),
                        Some(reason),
                    )
                }
            }
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for AggregateMsg<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateMsg::Command(c, _) => f.debug_tuple("Command").field(c).finish(),
            AggregateMsg::Read(_) => f.write_str("Read"),
            AggregateMsg::ReadFresh(_) => f.write_str("ReadFresh"),
            AggregateMsg::Committed(seq, _) => write!(f, "Committed({seq})"),
            AggregateMsg::Housekeep => f.write_str("Housekeep"),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for AggregateArgs<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateArgs")
            .field("actor", &A::NAME)
            .field("initial", &self.initial.is_some())
            .finish()
    }
}

impl<A: Aggregate> std::fmt::Debug for AggregateState<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateState")
            .field("actor", &A::NAME)
            .finish()
    }
}

pub use crate::clock::unix_secs;

/// A bounded, timed door to an aggregate actor.
pub struct AggregateHandle<A: Aggregate> {
    actor: ActorRef<AggregateMsg<A>>,
    in_flight: Arc<Semaphore>,
    limit: usize,
    timeout: Duration,
}

impl<A: Aggregate> Clone for AggregateHandle<A> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
            in_flight: self.in_flight.clone(),
            limit: self.limit,
            timeout: self.timeout,
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for AggregateHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateHandle")
            .field("actor", &A::NAME)
            .field("limit", &self.limit)
            .finish()
    }
}

impl<A: Aggregate> AggregateHandle<A> {
    /// Wraps a spawned actor with an admission bound and a call timeout.
    pub fn new(actor: ActorRef<AggregateMsg<A>>, max_in_flight: usize, timeout: Duration) -> Self {
        Self {
            actor,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            limit: max_in_flight.max(1),
            timeout,
        }
    }

    /// The actor.
    pub fn actor(&self) -> &ActorRef<AggregateMsg<A>> {
        &self.actor
    }

    /// Requests waiting or running.
    pub fn in_flight(&self) -> usize {
        self.limit - self.in_flight.available_permits()
    }

    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, CommandError<A::Error>> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| CommandError::Overloaded {
                actor: A::NAME,
                limit: self.limit,
            })
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> CommandError<A::Error> {
        CommandError::Unavailable {
            actor: A::NAME,
            reason: reason.to_string(),
        }
    }

    /// Sends a command and waits for its durable outcome.
    pub async fn command(&self, command: A::Command) -> Result<A::Reply, CommandError<A::Error>> {
        let _permit = self.admit()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let port = RpcReplyPort::from(tx);
        self.actor
            .send_message(AggregateMsg::Command(command, port))
            .map_err(|e| self.unavailable(e))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(self.unavailable("the actor stopped before replying")),
            Err(_) => Err(self.unavailable(format!("no reply within {:?}", self.timeout))),
        }
    }

    /// Runs `read` against the current state.
    pub async fn read<R: Send + 'static>(
        &self,
        read: impl FnOnce(&A) -> R + Send + 'static,
    ) -> Result<R, CommandError<A::Error>> {
        self.read_with(read, AggregateMsg::Read).await
    }

    /// Runs `read` once the state has folded every record the log has committed so far
    /// (see [`AggregateMsg::ReadFresh`]): costs a read of the log, so only for the rare
    /// caller that found the folded state behind (an agent that attested on another server).
    pub async fn read_fresh<R: Send + 'static>(
        &self,
        read: impl FnOnce(&A) -> R + Send + 'static,
    ) -> Result<R, CommandError<A::Error>> {
        self.read_with(read, AggregateMsg::ReadFresh).await
    }

    async fn read_with<R: Send + 'static>(
        &self,
        read: impl FnOnce(&A) -> R + Send + 'static,
        message: fn(Reader<A>) -> AggregateMsg<A>,
    ) -> Result<R, CommandError<A::Error>> {
        let _permit = self.admit()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.actor
            .send_message(message(Box::new(move |a| {
                let _ = tx.send(read(a));
            })))
            .map_err(|e| self.unavailable(e))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(self.unavailable("the actor stopped before replying")),
            Err(_) => Err(self.unavailable(format!("no reply within {:?}", self.timeout))),
        }
    }
}
