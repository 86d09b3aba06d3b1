//! Entries that expire: the expiry index's reads, and which entry a prune removes.

use std::collections::BTreeSet;

use tessera_identity::{EntryId, RegistrationEntry};

use super::{IndexLevel, Registry};

impl Registry {
    pub(super) fn expiry_index(&self) -> BTreeSet<(i64, EntryId)> {
        self.entries
            .iter()
            .filter_map(|e| e.entry.expires_at.map(|at| (at, e.entry.id.clone())))
            .collect()
    }

    /// Entries expired at `now` (Unix seconds), soonest first, at most `limit`.
    pub fn expired_at(&self, now: i64, limit: usize) -> Vec<&RegistrationEntry> {
        if self.level < IndexLevel::Full {
            let mut expired: Vec<&RegistrationEntry> =
                self.iter().filter(|e| e.is_expired_at(now)).collect();
            expired.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
            expired.truncate(limit);
            return expired;
        }
        self.by_expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, id)| self.get(id))
            .take(limit)
            .collect()
    }

    /// When the next entry expires (Unix seconds), if any does ([`IndexLevel::Full`]; a
    /// lighter copy scans).
    pub fn next_expiry(&self) -> Option<i64> {
        if self.level < IndexLevel::Full {
            return self.iter().filter_map(|e| e.expires_at).min();
        }
        self.by_expiry.first().map(|(at, _)| *at)
    }

    /// The entry an `EntryExpired { id, expires_at }` event removes: the one with that id if
    /// it still expires at or before `expires_at` (one extended since is not removed).
    pub fn pruned_by(&self, id: &EntryId, expires_at: i64) -> Option<&RegistrationEntry> {
        self.get(id)
            .filter(|e| e.expires_at.is_some_and(|at| at <= expires_at))
    }
}
