//! The core's side of on-demand SVIDs: which entries workloads use and hold, signing an
//! entry a caller needs at once, and answering callers once their SVIDs are there. What to
//! sign and evict is decided by [`crate::agent::svid_cache::plan`]; this file only keeps its
//! inputs (usage) current and wires its answers to the callers.

use ractor::{ActorRef, RpcReplyPort};
use tessera_identity::{EntryId, SelectorSet};

use super::{retry_secs, AgentMsg, AgentState};
use crate::clock::unix_secs;

impl AgentState {
    /// A workload with `selectors` uses its entries now (see [`AgentMsg::Use`]).
    pub(super) fn use_identities(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        subscription: u64,
        selectors: SelectorSet,
        hold: bool,
        reply: RpcReplyPort<u64>,
        caller: &tracing::Span,
    ) {
        let now = unix_secs(self.args.clock.as_ref());
        let matched = self.args.cache.matching(&selectors, now);
        for id in &matched {
            if hold {
                self.usage.hold(id, now);
            } else {
                self.usage.touch(id, now);
            }
        }
        let missing: Vec<EntryId> = matched
            .iter()
            .filter(|id| !self.servable(id, now))
            .cloned()
            .collect();
        if hold {
            self.holds.insert(subscription, (selectors, matched));
        }
        if missing.is_empty() {
            let _ = reply.send(self.args.cache.generation);
            return;
        }
        // Signed now, in a round of their own: a first fetch waits one server round trip,
        // not behind a bulk round of renewals. Entries that just failed are not asked for
        // again (the caller is answered without them).
        let wanted: Vec<EntryId> = missing
            .iter()
            .filter(|id| !self.failed.contains_key(*id))
            .cloned()
            .collect();
        for chunk in wanted.chunks(self.args.rotation.batch.max(1)) {
            self.sign(myself, chunk.to_vec(), false, caller.id());
        }
        self.waiters.push((missing, reply));
        self.answer_waiters();
    }

    /// The hold of `subscription` ends: its entries become evictable (by last use) unless
    /// another stream holds them.
    pub(super) fn release(&mut self, subscription: u64) {
        let now = unix_secs(self.args.clock.as_ref());
        if let Some((_, ids)) = self.holds.remove(&subscription) {
            for id in &ids {
                self.usage.release(id, now);
            }
        }
    }

    /// The view changed (`upserted`: one entry new or changed; `None`: any change): entries
    /// that now match an open hold are held too, as SPIRE's subscribers follow new entries
    /// for their selectors; usage of vanished entries is forgotten.
    pub(super) fn view_changed(&mut self, upserted: Option<&EntryId>) {
        let now = unix_secs(self.args.clock.as_ref());
        if self.holds.is_empty() {
            self.usage.forget_vanished(&self.args.cache);
            return;
        }
        let cache = &self.args.cache;
        for (selectors, held) in self.holds.values_mut() {
            let matched = match upserted {
                Some(id) => cache
                    .entries
                    .get(id)
                    .filter(|e| {
                        !e.is_node_alias()
                            && e.selectors.is_subset_of(selectors)
                            && !e.is_expired_at(now)
                    })
                    .map(|e| vec![e.id.clone()])
                    .unwrap_or_default(),
                None => cache.matching(selectors, now),
            };
            for id in matched {
                if !held.contains(&id) {
                    self.usage.hold(&id, now);
                    held.push(id);
                }
            }
        }
        if upserted.is_none() {
            self.usage.forget_vanished(&self.args.cache);
        }
    }

    /// A round failed as a whole: its entries leave the in-flight set and wait before they
    /// are asked for again; callers waiting for them are answered.
    pub(super) fn round_failed(&mut self, ids: &[EntryId]) {
        let retry_at = unix_secs(self.args.clock.as_ref()) + retry_secs();
        for id in ids {
            self.in_flight.remove(id);
            self.failed.insert(id.clone(), retry_at);
        }
        self.answer_waiters();
    }

    /// Answers every caller whose entries are all servable or no longer being signed.
    pub(super) fn answer_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let now = unix_secs(self.args.clock.as_ref());
        let generation = self.args.cache.generation;
        for (mut ids, reply) in std::mem::take(&mut self.waiters) {
            ids.retain(|id| self.in_flight.contains(id) && !self.servable(id, now));
            if ids.is_empty() {
                let _ = reply.send(generation);
            } else {
                self.waiters.push((ids, reply));
            }
        }
    }

    /// Whether `id` holds an SVID a workload can be served now.
    fn servable(&self, id: &EntryId, now: i64) -> bool {
        let cache = &self.args.cache;
        match (cache.svids.get(id), cache.entries.get(id)) {
            (Some(svid), Some(entry)) => {
                svid.entry_revision == entry.revision && svid.not_after > now
            }
            _ => false,
        }
    }
}
