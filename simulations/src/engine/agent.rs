//! An agent: the real `Cache` folded from its stream, its stream state, and its rotation
//! schedule — per entry the real `renew_at` (half-life, ±10 % jitter), kept in an ordered
//! set so a wake-up costs O(log n), not a scan. Which entries get SVIDs is decided in one
//! place, [`World::select_for_signing`], the seam for an LRU SVID cache policy.

use std::collections::BTreeSet;

use tessera_actors::agent::cache::{Cache, StoredSvid};
use tessera_actors::agent::rotation::{renew_at, RotationSettings};
use tessera_identity::{EntryId, RegistrationEntry, SpiffeId};

use super::{Ev, World};

/// An open (or opening) stream.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    /// The server.
    pub server: u32,
    /// Its generation: messages of an older one are dropped.
    pub gen: u64,
    /// Whether its first message arrived.
    pub established: bool,
}

/// One agent.
pub struct AgentModel {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Attested and not evicted.
    pub alive: bool,
    /// Cut off by a partition.
    pub partitioned: bool,
    /// The real cache.
    pub cache: Cache,
    /// Its stream, if open.
    pub conn: Option<Conn>,
    /// Generation of the latest stream.
    pub gen: u64,
    /// Delivery time of the last message put on the stream (order is kept).
    pub stream_tail_ms: u64,
    /// Messages on the stream not yet delivered.
    pub in_flight_msgs: u32,
    /// Next reconnect delay.
    pub backoff_ms: u64,
    /// Whether it ever had a stream (later ones are reconnects).
    pub ever_connected: bool,
    /// Last seq applied (the checker's view).
    pub last_seq: u64,
    /// Entries it keeps SVIDs for, and whether workloads use them.
    pub tracked: super::Map<EntryId, Track>,
    /// Tracked entries with no current SVID (none yet, or the entry changed).
    pub pending: BTreeSet<EntryId>,
    /// Tracked entries with a current SVID, by renewal time (Unix seconds).
    pub renew: BTreeSet<(i64, EntryId)>,
    /// The signing round in flight.
    pub round: Option<u64>,
    /// No new round before this (after a failure).
    pub hold_until_ms: u64,
    /// The rotation timer's current token (older timers are ignored).
    pub wake_token: u64,
    /// When the rotation timer fires, if set.
    pub wake_at_ms: Option<u64>,
    /// The pending expiry check, if any.
    pub expiry_at_ms: Option<u64>,
    /// Used entries without a valid SVID.
    pub unserved: u64,
    /// CAs (indexes) whose trust anchor its bundle holds.
    pub held: Vec<u32>,
}

/// Rotation state of one entry.
#[derive(Clone, Copy, Debug)]
pub struct Track {
    /// Used by workloads on the node.
    pub used: bool,
    /// Its SVID's renewal time, when it has a current one.
    pub renew_at: Option<i64>,
}

impl AgentModel {
    /// A new agent, not yet attested.
    pub fn new(id: SpiffeId, backoff_ms: u64) -> Self {
        Self {
            id,
            alive: false,
            partitioned: false,
            cache: Cache::default(),
            conn: None,
            gen: 0,
            stream_tail_ms: 0,
            in_flight_msgs: 0,
            backoff_ms,
            ever_connected: false,
            last_seq: 0,
            tracked: super::Map::default(),
            pending: BTreeSet::new(),
            renew: BTreeSet::new(),
            round: None,
            hold_until_ms: 0,
            wake_token: 0,
            wake_at_ms: None,
            expiry_at_ms: None,
            unserved: 0,
            held: Vec::new(),
        }
    }
}

/// Whether an SVID is current for an entry (signed for its revision).
pub fn current(svid: Option<&StoredSvid>, entry: &RegistrationEntry) -> bool {
    svid.is_some_and(|s| s.entry_revision == entry.revision)
}

/// A stable small hash of an entry id (FNV-1a), to pick the used entries.
fn fnv(id: &EntryId) -> u64 {
    id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl World<'_> {
    pub(super) fn rotation_settings(&self) -> RotationSettings {
        RotationSettings {
            renew_at_percent: self.sc.agent.renew_at_percent,
            jitter_percent: self.sc.agent.jitter_percent,
            batch: usize::try_from(self.sc.agent.batch).unwrap_or(usize::MAX),
            ..RotationSettings::default()
        }
    }

    /// After the agent's entries changed: which entries it keeps SVIDs for (SVID cache
    /// policy: eagerly up to `x509_svid_cache_max_size`, used ones always), their renewal
    /// times, what it serves, and the next signing round.
    pub(super) fn after_view_change(&mut self, agent: u32, _full: bool) {
        let settings = self.rotation_settings();
        let cap = self.sc.agent.x509_svid_cache_max_size;
        let used_per_agent = self.sc.fleet.used_entries_per_agent;
        let a = &mut self.agents[agent as usize];
        a.tracked.clear();
        a.pending.clear();
        a.renew.clear();
        let view = a.cache.workload_entries().count() as u64;
        let mut eager = 0u64;
        for e in a.cache.workload_entries() {
            let used = used_per_agent == 0 || fnv(&e.id) % view.max(1) < used_per_agent;
            if !used {
                if cap != 0 && eager >= cap {
                    continue;
                }
                eager += 1;
            }
            let svid = a.cache.svids.get(&e.id);
            let renew = if current(svid, e) {
                svid.map(|s| renew_at(s, &settings, e.id.as_str().as_bytes()))
            } else {
                None
            };
            match renew {
                Some(t) => {
                    a.renew.insert((t, e.id.clone()));
                }
                None => {
                    a.pending.insert(e.id.clone());
                }
            }
            a.tracked.insert(
                e.id.clone(),
                Track {
                    used,
                    renew_at: renew,
                },
            );
        }
        self.recount(agent);
        self.rotate(agent);
    }

    /// Whether the agent serves `id` now (a used, tracked entry with a current, unexpired
    /// SVID): the unit of `unserved`.
    pub(super) fn served(&self, agent: u32, id: &EntryId) -> bool {
        let now = self.now_s();
        let a = &self.agents[agent as usize];
        let Some(entry) = a.cache.entries.get(id) else {
            return false;
        };
        a.cache
            .svids
            .get(id)
            .is_some_and(|s| current(Some(s), entry) && s.not_after > now)
            && !entry.is_expired_at(now)
    }

    /// Counts a change of one used entry's served state, and schedules an expiry check for
    /// its SVID if it is the agent's earliest.
    pub(super) fn served_changed(&mut self, agent: u32, id: &EntryId, was: bool) {
        let used = self.agents[agent as usize]
            .tracked
            .get(id)
            .is_some_and(|t| t.used);
        let is = self.served(agent, id);
        if used && was != is {
            let a = &mut self.agents[agent as usize];
            if is {
                a.unserved -= 1;
                self.unserved -= 1;
            } else {
                a.unserved += 1;
                self.unserved += 1;
            }
        }
        let not_after = self.agents[agent as usize]
            .cache
            .svids
            .get(id)
            .map(|s| s.not_after);
        if let Some(t) = not_after.filter(|_| is) {
            let at = self.ms_of(t);
            let a = &mut self.agents[agent as usize];
            if a.expiry_at_ms.is_none_or(|e| at < e) {
                a.expiry_at_ms = Some(at);
                self.queue.push(at, Ev::Expiry { agent, at_ms: at });
            }
        }
    }

    /// A fresh SVID for one entry was stored: its renewal time moves.
    pub(super) fn svid_stored(&mut self, agent: u32, id: &EntryId) {
        let settings = self.rotation_settings();
        let a = &mut self.agents[agent as usize];
        let Some(track) = a.tracked.get_mut(id) else {
            return;
        };
        let (Some(entry), Some(svid)) = (a.cache.entries.get(id), a.cache.svids.get(id)) else {
            return;
        };
        if let Some(old) = track.renew_at.take() {
            a.renew.remove(&(old, id.clone()));
        }
        a.pending.remove(id);
        if current(Some(svid), entry) {
            let t = renew_at(svid, &settings, id.as_str().as_bytes());
            track.renew_at = Some(t);
            a.renew.insert((t, id.clone()));
        } else {
            a.pending.insert(id.clone());
        }
    }

    /// THE SEAM: which entries the agent asks the server to sign now, at most a batch.
    /// The agent's `due` rule (no SVID, a stale one, or past `renew_at`) over the entries the
    /// SVID cache policy tracks (see [`World::after_view_change`]): an LRU policy replaces
    /// the tracking there and the choice here.
    pub(super) fn select_for_signing(&self, agent: u32) -> Vec<(EntryId, u64)> {
        let now = self.now_s();
        let batch = usize::try_from(self.sc.agent.batch).unwrap_or(usize::MAX);
        let a = &self.agents[agent as usize];
        let due_renewals = a
            .renew
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| id);
        a.pending
            .iter()
            .chain(due_renewals)
            .filter_map(|id| a.cache.entries.get(id).map(|e| (id.clone(), e.revision)))
            .take(batch)
            .collect()
    }

    /// The agent's rotation step: a signing round for what is due (one at a time), else a
    /// timer for the next renewal (at least a second away, as the agent's).
    pub(super) fn rotate(&mut self, agent: u32) {
        let a = &self.agents[agent as usize];
        if !a.alive || a.round.is_some() {
            return;
        }
        let items = self.select_for_signing(agent);
        let a = &self.agents[agent as usize];
        if !items.is_empty() && self.now_ms >= a.hold_until_ms {
            self.start_round(agent, items);
            return;
        }
        let next_ms = if items.is_empty() {
            match a.renew.first() {
                Some((t, _)) => self.ms_of(*t).max(self.now_ms + 1000),
                None => return,
            }
        } else {
            a.hold_until_ms
        };
        self.wake(agent, next_ms);
    }

    /// Sets the rotation timer (replacing a later one).
    pub(super) fn wake(&mut self, agent: u32, at_ms: u64) {
        let a = &mut self.agents[agent as usize];
        if a.wake_at_ms.is_some_and(|w| w <= at_ms && w > self.now_ms) {
            return;
        }
        a.wake_token += 1;
        a.wake_at_ms = Some(at_ms);
        let token = a.wake_token;
        self.queue.push(at_ms, Ev::Rotate { agent, token });
    }

    /// Recounts the agent's unserved used entries and schedules its next expiry check.
    pub(super) fn recount(&mut self, agent: u32) {
        let now = self.now_s();
        let a = &mut self.agents[agent as usize];
        let mut unserved = 0;
        let mut next_expiry: Option<i64> = None;
        for (id, track) in &a.tracked {
            let Some(entry) = a.cache.entries.get(id) else {
                continue;
            };
            let svid = a.cache.svids.get(id).filter(|s| current(Some(s), entry));
            let served = svid.is_some_and(|s| s.not_after > now) && !entry.is_expired_at(now);
            if track.used && !served {
                unserved += 1;
            }
            if let Some(s) = svid.filter(|s| s.not_after > now) {
                next_expiry = Some(next_expiry.map_or(s.not_after, |n| n.min(s.not_after)));
            }
        }
        // Used entries not tracked cannot happen (used ones are always tracked).
        self.unserved = self.unserved - a.unserved + unserved;
        a.unserved = unserved;
        if let Some(t) = next_expiry {
            let at = self.sc_ms_of(t);
            let a = &mut self.agents[agent as usize];
            if a.expiry_at_ms.is_none_or(|e| at < e || e < self.now_ms) {
                a.expiry_at_ms = Some(at);
                self.queue.push(at, Ev::Expiry { agent, at_ms: at });
            }
        }
    }

    fn sc_ms_of(&self, unix: i64) -> u64 {
        self.ms_of(unix)
    }

    /// The agent's earliest SVID expiry: check what it serves if one expires now, recount.
    pub(super) fn expiry(&mut self, agent: u32, at_ms: u64) {
        let now = self.now_s();
        let a = &mut self.agents[agent as usize];
        if a.expiry_at_ms != Some(at_ms) {
            return;
        }
        a.expiry_at_ms = None;
        let expiring = a.cache.svids.values().any(|s| s.not_after == now);
        if expiring {
            self.check_served(agent);
        }
        self.recount(agent);
    }
}
