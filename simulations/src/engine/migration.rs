//! How the fleet moves off a CA, measured per change ([`RotationRecord`]): from a scheduled
//! activation (SVIDs of the old CA are replaced as they fall due) or from a forced rotation's
//! taint (they are re-signed at once), until no agent holds an SVID of the old CA.
//!
//! Incremental, like the checkers: the fleet is scanned once when a measurement starts; after
//! that only the agents still holding SVIDs of the old CA are looked at, and only when their
//! SVIDs change (a round's answer, an eviction, a view change) or their bundle does.

use tessera_actors::agent::cache::StoredSvid;

use super::{Map, World};
use crate::metrics::{RotationKind, RotationRecord};

/// An agent still holding SVIDs of the old CA.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pending {
    /// When the last of its old-CA SVIDs was replaced, virtual ms.
    last_replaced_ms: Option<u64>,
    /// Forced: whether it applied the bundle carrying the taint mark.
    taint_seen: bool,
}

/// One measurement in progress.
pub struct Tracker {
    /// Its record in [`crate::metrics::RunMetrics::rotations`].
    record: usize,
    /// The old CA (index among the CAs seen).
    ca: u32,
    /// Forced: the old CA's certificate, as the bundle's taint mark names it.
    tainted_der: Option<Vec<u8>>,
    /// Start of the measurement (activation or taint), virtual ms.
    started_ms: u64,
    /// Agents still holding SVIDs of `ca`.
    pending: Map<u32, Pending>,
}

impl World<'_> {
    /// Adds a record for a CA change of `server` (its steps are filled as they happen).
    pub(super) fn new_rotation_record(&mut self, kind: RotationKind, server: u32) -> usize {
        self.metrics.rotations.push(RotationRecord {
            kind,
            server,
            ..RotationRecord::default()
        });
        self.metrics.rotations.len() - 1
    }

    /// Starts measuring the fleet's move off CA `ca` for record `record`, now: every live
    /// agent holding an SVID of it is pending. `tainted_der`: forced, the taint mark to see.
    pub(super) fn start_migration(&mut self, record: usize, ca: u32, tainted_der: Option<Vec<u8>>) {
        let mut tracker = Tracker {
            record,
            ca,
            tainted_der,
            started_ms: self.now_ms,
            pending: Map::default(),
        };
        let (mut agents, mut svids) = (0, 0);
        for agent in 0..self.agents.len() as u32 {
            if !self.agents[agent as usize].alive {
                continue;
            }
            let held = self.held_of(agent, ca).0;
            if held > 0 {
                agents += 1;
                svids += held;
                tracker.pending.insert(agent, Pending::default());
            }
        }
        let r = &mut self.metrics.rotations[record];
        r.old_ca = self.cas[ca as usize].name.clone();
        r.affected_agents = agents;
        r.affected_svids = svids;
        if !tracker.pending.is_empty() {
            self.migrations.push(tracker);
        }
    }

    /// SVIDs of `ca` the agent holds: all of them, and the unexpired ones.
    fn held_of(&self, agent: u32, ca: u32) -> (u64, u64) {
        let now = self.now_s();
        let mut all = 0;
        let mut unexpired = 0;
        for svid in self.agents[agent as usize].cache.svids.values() {
            if self.issuer_of(svid) == Some(ca) {
                all += 1;
                if svid.not_after > now {
                    unexpired += 1;
                }
            }
        }
        (all, unexpired)
    }

    /// Whether a measurement is in progress (the hooks below cost nothing otherwise).
    pub(super) fn migrating(&self) -> bool {
        !self.migrations.is_empty()
    }

    /// An SVID is about to be stored for an entry whose previous SVID was signed by `old_ca`:
    /// counts a replacement of an old-CA SVID, or makes the agent pending if the new one is
    /// of an old CA (signed before the change, arriving after it).
    pub(super) fn note_store(&mut self, agent: u32, old_ca: Option<u32>, new: &StoredSvid) {
        let new_ca = self.issuer_of(new);
        let now_ms = self.now_ms;
        for t in &mut self.migrations {
            if new_ca == Some(t.ca) {
                if let std::collections::hash_map::Entry::Vacant(e) = t.pending.entry(agent) {
                    e.insert(Pending::default());
                    self.metrics.rotations[t.record].affected_agents += 1;
                }
            } else if old_ca == Some(t.ca) {
                if let Some(p) = t.pending.get_mut(&agent) {
                    p.last_replaced_ms = Some(now_ms);
                    self.metrics.rotations[t.record].replaced_svids += 1;
                }
            }
        }
    }

    /// The agent's SVIDs changed: if it holds none of an old CA any more, it is done.
    pub(super) fn recheck_migration(&mut self, agent: u32) {
        if !self.migrating() {
            return;
        }
        let mut finished = Vec::new();
        for i in 0..self.migrations.len() {
            let t = &self.migrations[i];
            if !t.pending.contains_key(&agent) || self.held_of(agent, t.ca).0 > 0 {
                continue;
            }
            let now_ms = self.now_ms;
            let t = &mut self.migrations[i];
            if let Some(p) = t.pending.remove(&agent) {
                let at = p.last_replaced_ms.unwrap_or(now_ms);
                let took = at.saturating_sub(t.started_ms);
                self.metrics.rotations[t.record].agent_done_ms.push(took);
            }
            if t.pending.is_empty() {
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            self.migrations.remove(i);
        }
    }

    /// The agent's bundle changed: a forced measurement notes when the taint mark arrived.
    pub(super) fn migration_bundle_changed(&mut self, agent: u32) {
        if !self.migrating() {
            return;
        }
        let now_ms = self.now_ms;
        let bundle = self.agents[agent as usize].cache.bundles.get(&self.td);
        for t in &mut self.migrations {
            let Some(der) = &t.tainted_der else {
                continue;
            };
            let Some(p) = t.pending.get_mut(&agent) else {
                continue;
            };
            if !p.taint_seen && bundle.is_some_and(|b| b.is_x509_authority_tainted(der)) {
                p.taint_seen = true;
                self.metrics.rotations[t.record]
                    .taint_received_ms
                    .push(now_ms.saturating_sub(t.started_ms));
            }
        }
    }

    /// At the end of the run: what is still held of each old CA.
    pub(super) fn finish_migrations(&mut self) {
        let trackers = std::mem::take(&mut self.migrations);
        for t in &trackers {
            let (mut agents, mut svids) = (0, 0);
            for &agent in t.pending.keys() {
                if !self.agents[agent as usize].alive {
                    continue;
                }
                let (all, unexpired) = self.held_of(agent, t.ca);
                if all > 0 {
                    agents += 1;
                    svids += unexpired;
                }
            }
            let r = &mut self.metrics.rotations[t.record];
            r.agents_remaining = agents;
            r.svids_remaining = svids;
        }
    }
}
