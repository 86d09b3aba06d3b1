//! [`Renewals`]: which agent holds a still-valid SVID for which entry, so that a signing
//! request can be told apart: a renewal (bulk, can wait) or someone waiting on a first SVID
//! (on demand). The agent API does not say which it is; the server knows what it signed.
//!
//! In memory only, per server, bounded: a server restarted, or another server than the one
//! that signed, sees every request as on demand, which is the order without priorities (no
//! worse than before). Keys are a per-process keyed 64-bit hash of (agent, entry).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use tessera_identity::{EntryId, SpiffeId};

use crate::server::authority::signer::priority::Priority;

/// SVIDs signed for (agent, entry) pairs and when each expires.
#[derive(Debug)]
pub struct Renewals {
    held: Mutex<HashMap<u64, i64>>,
    hasher: foldhash::fast::RandomState,
    max: usize,
}

impl Renewals {
    /// Tracks at most `max` pairs; beyond that (after dropping expired ones) new pairs are not
    /// tracked and count as on demand.
    pub fn new(max: usize) -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            hasher: foldhash::fast::RandomState::default(),
            max,
        }
    }

    fn key(&self, agent: &SpiffeId, entry: &EntryId) -> u64 {
        self.hasher.hash_one((agent.to_string(), entry.as_str()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, i64>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Priority::Bulk`] if `agent` holds an SVID for `entry` this server signed and that is
    /// still valid at `now`, else [`Priority::OnDemand`].
    pub fn priority(&self, agent: &SpiffeId, entry: &EntryId, now: i64) -> Priority {
        let key = self.key(agent, entry);
        match self.lock().get(&key) {
            Some(not_after) if *not_after > now => Priority::Bulk,
            _ => Priority::OnDemand,
        }
    }

    /// Records an SVID signed for `agent` and `entry`, valid until `not_after`.
    pub fn record(&self, agent: &SpiffeId, entry: &EntryId, not_after: i64, now: i64) {
        let key = self.key(agent, entry);
        let mut held = self.lock();
        if held.len() >= self.max && !held.contains_key(&key) {
            held.retain(|_, until| *until > now);
            if held.len() >= self.max {
                return;
            }
        }
        held.insert(key, not_after);
    }

    /// Pairs tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_valid_svid_makes_a_renewal_and_the_map_is_bounded() {
        let r = Renewals::new(2);
        let agent = SpiffeId::new("spiffe://example.org/spire/agent/x/1").unwrap();
        let (a, b, c) = (
            EntryId::new("a").unwrap(),
            EntryId::new("b").unwrap(),
            EntryId::new("c").unwrap(),
        );
        assert_eq!(r.priority(&agent, &a, 100), Priority::OnDemand);
        r.record(&agent, &a, 200, 100);
        assert_eq!(r.priority(&agent, &a, 150), Priority::Bulk);
        assert_eq!(r.priority(&agent, &a, 200), Priority::OnDemand, "expired");
        r.record(&agent, &b, 300, 100);
        r.record(&agent, &c, 300, 100);
        assert_eq!(r.len(), 2, "full: c is not tracked");
        assert_eq!(r.priority(&agent, &c, 150), Priority::OnDemand);
        // Once a's SVID has expired, it makes room.
        r.record(&agent, &c, 300, 250);
        assert_eq!(r.priority(&agent, &c, 260), Priority::Bulk);
        assert_eq!(r.len(), 2);
    }
}
