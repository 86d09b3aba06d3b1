//! How a server actor keeps its state a fold of the *whole* log, which several servers may
//! write: it follows the committed records (its own appends come back too, and are skipped by
//! seq), and it writes with optimistic concurrency on the seq it has folded to.
//!
//! ```text
//!   decide at seq h ──append(ExpectHead(h))──▶ Committed: apply, seq = last
//!        ▲                                  └─▶ Conflict: catch up (fold h+1..=head), decide again
//!        └──── after a jittered pause, at most `conflict_retries` times, then Unavailable
//! ```
//!
//! A record reaches the actor twice at most (its own append, then the follower); `seq` makes
//! the second a no-op. The follower delivers every record in order from the seq the actor's
//! state was folded to, so the actor never sees a gap.

use std::time::Duration;

use futures::StreamExt;
use ractor::ActorRef;
use tessera_eventlog::typed::TypedError;
use tessera_eventlog::{AppendCondition, AppendReceipt, Event, LogError, TypedLog};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::random::{random_u64, RandomSource};
use crate::server::events::ServerEvent;

/// Conflicts an actor rides out for one command before answering `Unavailable`. Every round
/// some writer's append commits, but not always this one's: a server whose actor has a queue
/// of commands wins the head back to back (it decides on its own last append, while the loser
/// must first read what it missed), so the loser backs off ([`conflict_backoff`]) until the
/// winner's burst ends. 64 rounds are about three seconds of backoff.
pub const DEFAULT_CONFLICT_RETRIES: u32 = 64;

/// Longest pause before deciding again after a conflict.
const MAX_CONFLICT_BACKOFF_MS: u64 = 100;

/// The pause before the `attempt`-th new decision after a conflict: uniformly random in
/// `[0, min(2^attempt, 100)]` ms ("full jitter"), so that losers do not retry in step.
pub(crate) fn conflict_backoff(attempt: u32, random: &dyn RandomSource) -> Duration {
    let cap = 1u64
        .checked_shl(attempt.min(16))
        .unwrap_or(u64::MAX)
        .min(MAX_CONFLICT_BACKOFF_MS);
    Duration::from_millis(random_u64(random) % (cap + 1))
}

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

/// Appends `events` only if the log's head is still `folded`. One span per append (every
/// server actor appends here): the kind of the first event, how many, and the committed seq.
pub(crate) async fn append_at(
    log: &TypedLog<ServerEvent>,
    events: &[ServerEvent],
    folded: u64,
) -> Written {
    let span = tracing::info_span!(
        "append_events",
        kind = events.first().map(Event::kind).unwrap_or(""),
        events = events.len(),
        expect_head = folded,
        seq = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let written = append_at_inner(log, events, folded)
        .instrument(span.clone())
        .await;
    match &written {
        Written::Committed(receipt) => {
            span.record("seq", receipt.last_seq);
            span.record("outcome", "committed");
        }
        Written::Conflict => {
            span.record("outcome", "conflict");
        }
        Written::Unavailable(_) | Written::Failed(_) => {
            span.record("outcome", "failed");
        }
    }
    written
}

async fn append_at_inner(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn conflict_backoff_grows_then_is_capped_and_jittered() {
        let random = SeededRandom::new(3);
        for attempt in 0..100 {
            let cap = (1u64 << attempt.min(16)).min(MAX_CONFLICT_BACKOFF_MS);
            let pause = conflict_backoff(attempt, &random);
            assert!(pause <= Duration::from_millis(cap), "{attempt}: {pause:?}");
        }
        let pauses: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| conflict_backoff(20, &random)).collect();
        assert!(pauses.len() > 10, "jittered, not in step: {pauses:?}");
    }

    #[test]
    fn the_follower_never_skips_ahead() {
        assert_eq!(is_next(5, 5, "t"), Ok(false));
        assert_eq!(is_next(5, 6, "t"), Ok(true));
        assert!(is_next(5, 7, "t").unwrap_err().contains("missing"));
    }
}
