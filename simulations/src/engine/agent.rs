//! An agent: the real `Cache` folded from its stream, its stream state, and its SVID cache
//! decisions, made by the agent's own function, `svid_cache::plan` (SPIRE's LRU SVID cache,
//! `x509_svid_cache_max_size`; docs/adr/0015-agent-lru-svid-cache.md): what to sign (on
//! demand first, then bulk), what to evict, when to wake. The entries workloads use are held
//! in the agent's `Usage` (a workload with an open stream), so the simulator measures what
//! the agent decides. Like the agent's core, it plans only when its state changed (a view
//! change, a round's answer) or its wake-up fires, never per event.

use std::collections::{BTreeSet, HashSet};

use tessera_actors::agent::cache::{Cache, StoredSvid};
use tessera_actors::agent::rotation::RotationSettings;
use tessera_actors::agent::svid_cache::{self, Usage, DEFAULT_X509_SVID_CACHE_MAX_SIZE};
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
    /// Entries its workloads use (each held once in `usage`): the unit of `unserved`.
    pub used: BTreeSet<EntryId>,
    /// How its workloads use entries, as the agent's core keeps it.
    pub usage: Usage,
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
            used: BTreeSet::new(),
            usage: Usage::default(),
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

/// The agent's `x509_svid_cache_max_size` for a scenario's value: 0 is the agent's default
/// (SPIRE's unset value, as `agent/src/config.rs` reads it), not "no bound".
pub fn cache_max_size(configured: u64) -> usize {
    match configured {
        0 => DEFAULT_X509_SVID_CACHE_MAX_SIZE,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    }
}

impl World<'_> {
    pub(super) fn rotation_settings(&self) -> RotationSettings {
        RotationSettings {
            renew_at_percent: self.sc.agent.renew_at_percent,
            jitter_percent: self.sc.agent.jitter_percent,
            batch: usize::try_from(self.sc.agent.batch).unwrap_or(usize::MAX),
            x509_svid_cache_max_size: cache_max_size(self.sc.agent.x509_svid_cache_max_size),
            ..RotationSettings::default()
        }
    }

    /// After the agent's entries changed: which of them its workloads use (held in its
    /// `Usage`, released when no longer used), what it serves, and the next plan.
    pub(super) fn after_view_change(&mut self, agent: u32, _full: bool) {
        let used_per_agent = self.sc.fleet.used_entries_per_agent;
        let now = self.now_s();
        let a = &mut self.agents[agent as usize];
        let view = a.cache.workload_entries().count() as u64;
        let used: BTreeSet<EntryId> = a
            .cache
            .workload_entries()
            .filter(|e| used_per_agent == 0 || fnv(&e.id) % view.max(1) < used_per_agent)
            .map(|e| e.id.clone())
            .collect();
        for id in a.used.difference(&used) {
            a.usage.release(id, now);
        }
        for id in used.difference(&a.used) {
            a.usage.hold(id, now);
        }
        a.used = used;
        a.usage.forget_vanished(&a.cache);
        self.recount(agent);
        self.recheck_migration(agent);
        self.rotate(agent);
    }

    /// Whether the agent serves `id` now (an entry with a current, unexpired SVID): the
    /// unit of `unserved` for a used entry.
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
        let used = self.agents[agent as usize].used.contains(id);
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

    /// The agent's rotation step, as its core's: the real `svid_cache::plan` decides; its
    /// evictions are applied, one signing round (on demand first, then bulk, at most a
    /// batch) is started, else a timer is set for the plan's next due time (at least a
    /// second away, as the agent's).
    ///
    /// The simulated agent has one round in flight at a time and plans only between rounds,
    /// so nothing is in flight when it plans (the core may add an on-demand round beside a
    /// bulk one; here held entries wait for the round in flight, a few ms of virtual time).
    pub(super) fn rotate(&mut self, agent: u32) {
        let a = &self.agents[agent as usize];
        if !a.alive || a.round.is_some() {
            return;
        }
        let now = self.now_s();
        let settings = self.rotation_settings();
        let batch = settings.batch.max(1);
        let a = &mut self.agents[agent as usize];
        let plan = svid_cache::plan(&a.cache, &a.usage, &self.nothing_in_flight, now, &settings);
        if !plan.evict.is_empty() {
            a.cache.evict_svids(&plan.evict);
            self.recheck_migration(agent);
        }
        let a = &mut self.agents[agent as usize];
        let items: Vec<(EntryId, u64)> = plan
            .on_demand
            .into_iter()
            .chain(plan.bulk)
            .take(batch)
            .filter_map(|id| a.cache.entries.get(&id).map(|e| (id, e.revision)))
            .collect();
        if !items.is_empty() && self.now_ms >= a.hold_until_ms {
            self.start_round(agent, items);
            return;
        }
        let next_ms = if items.is_empty() {
            match plan.next {
                Some(t) => self.ms_of(t).max(self.now_ms + 1000),
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
        for id in &a.used {
            let Some(entry) = a.cache.entries.get(id) else {
                continue;
            };
            let svid = a.cache.svids.get(id).filter(|s| current(Some(s), entry));
            let served = svid.is_some_and(|s| s.not_after > now) && !entry.is_expired_at(now);
            if !served {
                unserved += 1;
            }
        }
        let next_expiry = a
            .cache
            .svids
            .iter()
            .filter(|(id, s)| {
                s.not_after > now
                    && a.cache
                        .entries
                        .get(*id)
                        .is_some_and(|e| current(Some(s), e))
            })
            .map(|(_, s)| s.not_after)
            .min();
        self.unserved = self.unserved - a.unserved + unserved;
        a.unserved = unserved;
        if let Some(t) = next_expiry {
            let at = self.ms_of(t);
            let a = &mut self.agents[agent as usize];
            if a.expiry_at_ms.is_none_or(|e| at < e || e < self.now_ms) {
                a.expiry_at_ms = Some(at);
                self.queue.push(at, Ev::Expiry { agent, at_ms: at });
            }
        }
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

/// An always-empty set for `plan`'s `in_flight` (see [`World::rotate`]).
pub fn no_entries() -> HashSet<EntryId> {
    HashSet::new()
}
