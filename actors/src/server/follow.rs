//! How a server actor keeps its state a fold of the *whole* log, which several servers may
//! write: it follows the committed records (its own appends come back too, and are skipped by
//! seq), and it writes with optimistic concurrency on the seq it has folded to.
//!
//! ```text
//!   decide at seq h ──append(ExpectHead(h))──▶ Committed: apply, seq = last
//!        ▲                                  └─▶ Conflict: catch up (fold h+1..=head), decide again
//!        └──────────── at most `conflict_retries` times, then Unavailable
//! ```
//!
//! A record reaches the actor twice at most (its own append, then the follower); `seq` makes
//! the second a no-op. The follower delivers every record in order from the seq the actor's
//! state was folded to, so the actor never sees a gap.

use futures::StreamExt;
use ractor::ActorRef;
use tessera_eventlog::typed::TypedError;
use tessera_eventlog::{AppendCondition, AppendReceipt, LogError, TypedLog};
use tokio::task::JoinHandle;

use crate::server::events::ServerEvent;

/// Conflicts an actor rides out for one command before answering `Unavailable`: every round,
/// some writer's append commits, so losing this many in a row means the log is contended
/// beyond what retrying helps.
pub const DEFAULT_CONFLICT_RETRIES: u32 = 16;

/// Spawns the task that sends every committed record after `after` to `myself`, wrapped by
/// `wrap`. A follow failure (a damaged log) stops the actor, which stops the server.
pub(crate) fn spawn_follower<M>(
    log: &TypedLog<ServerEvent>,
    after: u64,
    myself: ActorRef<M>,
    who: &'static str,
    wrap: impl Fn(u64, ServerEvent) -> M + Send + 'static,
) -> JoinHandle<()>
where
    M: ractor::Message,
{
    let mut records = log.subscribe(after + 1);
    tokio::spawn(async move {
        while let Some(item) = records.next().await {
            match item {
                Ok((seq, event)) => {
                    if myself.send_message(wrap(seq, event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(actor = who, error = %e, "stopped following the log");
                    myself.stop(Some(format!("{who}: log follow failed: {e}")));
                    return;
                }
            }
        }
    })
}

/// What became of an append at the folded seq.
#[derive(Debug)]
pub(crate) enum Written {
    /// Committed right after the folded seq.
    Committed(AppendReceipt),
    /// Another writer appended first; the log's head is at `actual`.
    Conflict,
    /// The storage is unreachable; nothing was written; the actor carries on.
    Unavailable(String),
    /// The log refused for good (fail-stop storage error, closed log, bad record).
    Failed(String),
}

/// Appends `events` only if the log's head is still `folded`.
pub(crate) async fn append_at(
    log: &TypedLog<ServerEvent>,
    events: &[ServerEvent],
    folded: u64,
) -> Written {
    match log
        .append(events, AppendCondition::ExpectHead(folded))
        .await
    {
        Ok(receipt) => Written::Committed(receipt),
        Err(TypedError::Log(LogError::Conflict { .. })) => Written::Conflict,
        Err(TypedError::Log(e @ LogError::Unavailable { .. })) => {
            Written::Unavailable(e.to_string())
        }
        Err(e) => Written::Failed(e.to_string()),
    }
}

/// Folds every committed record after `*seq` into `apply` and moves `*seq` to the last.
pub(crate) async fn catch_up(
    log: &TypedLog<ServerEvent>,
    seq: &mut u64,
    mut apply: impl FnMut(&ServerEvent),
) -> Result<(), TypedError> {
    *seq = log.replay(*seq, |_, event| apply(&event)).await?;
    Ok(())
}

/// Whether a record from the follower is new to a fold at `folded`; a record beyond the next
/// one means the follower and the fold disagree, a broken invariant.
pub(crate) fn is_next(folded: u64, seq: u64, who: &'static str) -> Result<bool, String> {
    if seq <= folded {
        Ok(false)
    } else if seq == folded + 1 {
        Ok(true)
    } else {
        Err(format!(
            "{who}: the log follower delivered seq {seq} after seq {folded}: records are missing"
        ))
    }
}
