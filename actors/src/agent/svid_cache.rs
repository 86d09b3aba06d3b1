//! Which entries hold an X.509-SVID: SPIRE's LRU SVID cache (`x509_svid_cache_max_size`).
//!
//! An agent's view may hold far more entries than its workloads use (every node of a node
//! alias sees every entry of the alias). Signing them all costs the server a signature per
//! entry per rotation and the agent a key and chain per entry. So, as SPIRE does:
//! - SVIDs are signed eagerly for at most `x509_svid_cache_max_size` entries (SPIRE fills the
//!   cache with arbitrary uncached entries; here the first ones in entry id order, so runs are
//!   reproducible);
//! - an entry a workload uses (an open stream: "held") gets its SVID on demand, whatever the
//!   size: the size is a soft limit;
//! - beyond the size, the least recently used SVIDs that no workload holds are evicted;
//! - every SVID kept is renewed when due (half its lifetime with jitter, see
//!   [`renew_at`](crate::agent::rotation::renew_at)), or at once when its entry changed or
//!   it chains to a tainted or revoked authority ([`crate::agent::taint`]), a batch per round.
//!
//! Pure and deterministic: no actor, no clock, no I/O. The agent core and the simulator call
//! [`plan`] on every rotation check. Its cost is proportional to the SVIDs held, the entries
//! held by workloads and one signing batch, not to the entries in view: with 100,000 entries
//! in view and a full cache, untouched entries are never visited.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};

use tessera_identity::EntryId;

use crate::agent::cache::Cache;
use crate::agent::rotation::{renew_at, RotationSettings};

/// SPIRE's default `x509_svid_cache_max_size`.
pub const DEFAULT_X509_SVID_CACHE_MAX_SIZE: usize = 1_000;

/// How workloads use entries: how many open streams hold each, and when each was last used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    entries: BTreeMap<EntryId, Use>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Use {
    holders: u32,
    last_used: i64,
}

impl Usage {
    /// A workload used `id` at `now` (a fetch), without holding it.
    pub fn touch(&mut self, id: &EntryId, now: i64) {
        self.entry(id, now).last_used = now;
    }

    /// A workload holds `id` from `now` (an open stream): its SVID is kept and renewed.
    pub fn hold(&mut self, id: &EntryId, now: i64) {
        let u = self.entry(id, now);
        u.holders = u.holders.saturating_add(1);
        u.last_used = now;
    }

    /// One holder of `id` let go of it at `now`.
    pub fn release(&mut self, id: &EntryId, now: i64) {
        if let Some(u) = self.entries.get_mut(id) {
            u.holders = u.holders.saturating_sub(1);
            u.last_used = u.last_used.max(now);
        }
    }

    /// Whether an open stream holds `id`.
    pub fn is_held(&self, id: &EntryId) -> bool {
        self.entries.get(id).is_some_and(|u| u.holders > 0)
    }

    /// When `id` was last used, if ever.
    pub fn last_used(&self, id: &EntryId) -> Option<i64> {
        self.entries.get(id).map(|u| u.last_used)
    }

    /// Forgets entries no longer in the view that nothing holds (a held one stays: its
    /// stream is still open and the entry may come back).
    pub fn forget_vanished(&mut self, cache: &Cache) {
        self.entries
            .retain(|id, u| u.holders > 0 || cache.entries.contains_key(id));
    }

    fn entry(&mut self, id: &EntryId, now: i64) -> &mut Use {
        self.entries.entry(id.clone()).or_insert(Use {
            holders: 0,
            last_used: now,
        })
    }

    fn held(&self) -> impl Iterator<Item = &EntryId> {
        self.entries
            .iter()
            .filter(|(_, u)| u.holders > 0)
            .map(|(id, _)| id)
    }
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held entries without a servable SVID (none yet, entry changed, expired): sign at once,
    /// in a round of their own. In entry id order.
    pub on_demand: Vec<EntryId>,
    /// SVIDs due for renewal or stale, then uncached entries to fill the cache up to its
    /// size: at most `settings.batch` of them (one signing round; the next plan, after the
    /// round, names the rest), so a plan made while much is due costs a batch, not the view.
    pub bulk: Vec<EntryId>,
    /// SVIDs to drop: least recently used first, none held, none in flight.
    pub evict: Vec<EntryId>,
    /// The next time a kept SVID falls due (Unix seconds), if any.
    pub next: Option<i64>,
}

/// Decides which entries need an SVID now and which SVIDs to evict, given the cache, how
/// workloads use it, the entries already being signed (`in_flight`, left out of every list),
/// the time and the settings (`settings.x509_svid_cache_max_size` is the size, 0 signing
/// nothing eagerly; `settings.batch` bounds `bulk`).
pub fn plan(
    cache: &Cache,
    usage: &Usage,
    in_flight: &HashSet<EntryId>,
    now: i64,
    settings: &RotationSettings,
) -> Plan {
    let max = settings.x509_svid_cache_max_size;
    let batch = settings.batch.max(1);
    let evict = evictions(cache, usage, in_flight, max);
    let evicted: HashSet<&EntryId> = evict.iter().collect();
    let mut plan = Plan::default();

    // Every SVID kept: renewed when due; a held one that can no longer be served goes first.
    for (id, svid) in &cache.svids {
        if in_flight.contains(id) || evicted.contains(id) {
            continue;
        }
        let Some(entry) = cache.entries.get(id) else {
            continue;
        };
        if entry.is_node_alias() || entry.is_expired_at(now) {
            continue;
        }
        let unservable = svid.entry_revision != entry.revision || svid.not_after <= now;
        // Forced rotation: an SVID of a tainted (or revoked) authority is due now.
        let at = if cache.needs_resign(id) {
            now
        } else {
            renew_at(svid, settings, id.as_str().as_bytes())
        };
        if unservable && usage.is_held(id) {
            plan.on_demand.push(id.clone());
        } else if unservable || at <= now {
            if plan.bulk.len() < batch {
                plan.bulk.push(id.clone());
            }
        } else {
            plan.next = Some(plan.next.map_or(at, |n| n.min(at)));
        }
    }

    // Held entries never signed (or evicted before a workload came for them).
    for id in usage.held() {
        if cache.svids.contains_key(id) || in_flight.contains(id) {
            continue;
        }
        if cache
            .entries
            .get(id)
            .is_some_and(|e| !e.is_node_alias() && !e.is_expired_at(now))
        {
            plan.on_demand.push(id.clone());
        }
    }
    plan.on_demand.sort();

    // Eager fill of whatever room is left, counting what is already on its way.
    let pending = in_flight
        .iter()
        .filter(|id| !cache.svids.contains_key(*id))
        .count();
    let kept = cache.svids.len() - evict.len();
    let mut room = max
        .saturating_sub(kept + pending + plan.on_demand.len())
        .min(batch.saturating_sub(plan.bulk.len()));
    if room > 0 {
        for entry in cache.workload_entries() {
            if room == 0 {
                break;
            }
            let id = &entry.id;
            if cache.svids.contains_key(id)
                || in_flight.contains(id)
                || usage.is_held(id)
                || entry.is_expired_at(now)
            {
                continue;
            }
            plan.bulk.push(id.clone());
            room -= 1;
        }
    }
    plan.evict = evict;
    plan
}

/// The SVIDs past `max`, least recently used first (never used counts as oldest; ties by
/// id), skipping held and in-flight ones: the limit is soft.
fn evictions(
    cache: &Cache,
    usage: &Usage,
    in_flight: &HashSet<EntryId>,
    max: usize,
) -> Vec<EntryId> {
    let over = cache.svids.len().saturating_sub(max);
    if over == 0 {
        return Vec::new();
    }
    let mut candidates: Vec<(i64, &EntryId)> = cache
        .svids
        .keys()
        .filter(|id| !usage.is_held(id) && !in_flight.contains(*id))
        .map(|id| (usage.last_used(id).unwrap_or(i64::MIN), id))
        .collect();
    candidates.sort_unstable();
    candidates
        .into_iter()
        .take(over)
        .map(|(_, id)| id.clone())
        .collect()
}
