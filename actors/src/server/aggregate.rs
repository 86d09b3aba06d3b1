//! The shape every server aggregate has: a pure `decide` from (state, command) to events and a
//! reply, and a pure `apply` folding committed events into state. No I/O, no clock reads, no
//! randomness: what they need (time, fresh ids) arrives in [`Context`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::server::events::ServerEvent;

/// What a decision may depend on besides state and command: handed in by the actor so the
/// functions stay pure and tests can fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// Now, Unix seconds.
    pub now: i64,
    /// Fresh random bytes for ids (entry ids...), from the injected source.
    pub random: [u8; 16],
}

/// A decision: the events to persist, and the reply to give once they are durable.
#[derive(Debug)]
pub struct Decision<R> {
    /// Events to persist, in order. Empty for a command that changes nothing.
    pub events: Vec<ServerEvent>,
    /// The answer for the caller.
    pub reply: R,
}

impl<R> Decision<R> {
    /// A decision that changes nothing.
    pub fn no_change(reply: R) -> Self {
        Self {
            events: Vec::new(),
            reply,
        }
    }
}

/// A pure aggregate over the server's log.
pub trait Aggregate: Default + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// Commands it decides on.
    /// `Clone`: a command is decided again after a conflict with another writer.
    type Command: Clone + Send + std::fmt::Debug + 'static;
    /// Successful replies.
    type Reply: Send + std::fmt::Debug + 'static;
    /// Rejections of a whole command.
    type Error: std::error::Error + Send + 'static;

    /// Name for logs and metrics.
    const NAME: &'static str;

    /// Decides what `command` means given the current state. Must not change state.
    fn decide(
        &self,
        command: Self::Command,
        ctx: &Context,
    ) -> Result<Decision<Self::Reply>, Self::Error>;

    /// Folds one committed event. Events of other aggregates are ignored.
    fn apply(&mut self, event: &ServerEvent);

    /// Work that comes due with time (pruning what expired): the command the actor runs on
    /// its housekeeping schedule at `now` (Unix seconds), if any is due. Pure, like `decide`;
    /// the command's events are appended like any other, so replay folds the same state and
    /// servers sharing a log prune once (the second decides again on the first's events).
    fn housekeeping(&self, _now: i64) -> Option<Self::Command> {
        None
    }

    /// When housekeeping next comes due (Unix seconds), if the aggregate knows: the actor
    /// wakes then rather than waiting for its next round (an expired entry leaves agents'
    /// views when it expires). Called after every fold: must be cheap.
    fn next_due(&self) -> Option<i64> {
        None
    }
}
