//! Where each open sync stream is in the log, so the metrics endpoint can show how far agents
//! are behind (log head minus the seq a stream has delivered) and how many are connected.
//!
//! The Agent API registers a stream when it opens and moves its cursor as it sends; the
//! returned [`StreamCursor`] unregisters on drop, so a stream that ends for any reason leaves
//! no stale cursor behind. Reads copy the cursors out under a short lock; writes are one
//! atomic store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tessera_identity::SpiffeId;

/// The open sync streams and the seq each has delivered.
#[derive(Debug, Default)]
pub struct SyncCursors {
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, (SpiffeId, Arc<AtomicU64>)>>,
}

/// One stream's place in the registry; unregisters itself on drop.
#[derive(Debug)]
pub struct StreamCursor {
    id: u64,
    seq: Arc<AtomicU64>,
    registry: Arc<SyncCursors>,
}

impl StreamCursor {
    /// The stream has delivered every change up to `seq`.
    pub fn advance(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::Relaxed);
    }
}

impl Drop for StreamCursor {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl SyncCursors {
    /// Registers a stream of `agent` that starts at `seq`.
    pub fn open(self: &Arc<Self>, agent: SpiffeId, seq: u64) -> StreamCursor {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cursor = Arc::new(AtomicU64::new(seq));
        self.lock().insert(id, (agent, cursor.clone()));
        StreamCursor {
            id,
            seq: cursor,
            registry: self.clone(),
        }
    }

    /// For each connected agent, how many records it is behind `head` (its most advanced
    /// stream counts, if it has several).
    pub fn lags(&self, head: u64) -> Vec<u64> {
        let mut best: HashMap<SpiffeId, u64> = HashMap::new();
        for (agent, seq) in self.lock().values() {
            let seq = seq.load(Ordering::Relaxed);
            let at = best.entry(agent.clone()).or_insert(seq);
            *at = (*at).max(seq);
        }
        best.into_values()
            .map(|seq| head.saturating_sub(seq))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (SpiffeId, Arc<AtomicU64>)>> {
        // The map stays consistent under any panic (each operation is one insert or remove).
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(n: u32) -> SpiffeId {
        format!("spiffe://example.org/spire/agent/join_token/{n}")
            .parse()
            .unwrap()
    }

    #[test]
    fn lag_is_head_minus_the_agents_most_advanced_stream_and_closed_streams_leave() {
        let cursors = Arc::new(SyncCursors::default());
        assert!(cursors.lags(10).is_empty());

        let a = cursors.open(agent(1), 4);
        let b_old = cursors.open(agent(2), 1);
        let b_new = cursors.open(agent(2), 7);
        let mut lags = cursors.lags(10);
        lags.sort_unstable();
        assert_eq!(lags, vec![3, 6], "one value per agent, its best stream");

        a.advance(9);
        a.advance(5); // A cursor never goes back.
        let mut lags = cursors.lags(10);
        lags.sort_unstable();
        assert_eq!(lags, vec![1, 3]);

        drop(b_new);
        let mut lags = cursors.lags(10);
        lags.sort_unstable();
        assert_eq!(lags, vec![1, 9], "agent 2 falls back to its other stream");
        drop(b_old);
        drop(a);
        assert!(cursors.lags(10).is_empty());
        // A cursor ahead of a stale head reads as no lag, never an underflow.
        let c = cursors.open(agent(3), 20);
        assert_eq!(cursors.lags(10), vec![0]);
        drop(c);
    }
}
