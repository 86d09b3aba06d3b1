//! The checkers (names fixed by `metrics.rs`), each run where its invariant can change, never
//! as a fleet scan per event:
//! - `no_expired_svid_served`: what the real `IdentitySnapshot::for_workload` serves is
//!   unexpired — at each SVID's expiry instant (when one expires rather than being renewed),
//!   at each agent's audit and at the end;
//! - `svid_chains_to_held_bundle`: every SVID the agent serves has its issuer's trust anchor
//!   in the agent's bundle — on SVID arrival, on every bundle change, at audits. After a
//!   forced rotation's revoke this is the revoke rule: once an agent has applied the bundle
//!   without the revoked CA, it serves no unexpired SVID of that CA (the detail names the
//!   revoke: the CA was revoked before this agent re-signed);
//! - `ca_in_bundle_before_use`: an SVID reaches an agent only once its CA is in that agent's
//!   bundle — on SVID arrival;
//! - `no_missed_or_repeated_update`: each agent's applied seqs strictly increase (every
//!   update), and a quiet stream's cache holds exactly the server's `entries_for(agent)` and
//!   bundle (at audits and at the end);
//! - `signing_queue_bounded`: a server's queue depth never exceeds `max_queued` (every
//!   admission).

use std::collections::BTreeSet;

use tessera_actors::agent::cache::StoredSvid;
use tessera_identity::{EntryId, SelectorSet};

use super::{Ev, World};

/// `no_expired_svid_served`.
pub const NO_EXPIRED: &str = "no_expired_svid_served";
/// `svid_chains_to_held_bundle`.
pub const CHAINS: &str = "svid_chains_to_held_bundle";
/// `ca_in_bundle_before_use`.
pub const CA_BEFORE_USE: &str = "ca_in_bundle_before_use";
/// `no_missed_or_repeated_update`.
pub const NO_MISSED_OR_REPEATED: &str = "no_missed_or_repeated_update";
/// `signing_queue_bounded`.
pub const QUEUE_BOUNDED: &str = "signing_queue_bounded";
/// Every checker.
pub const NAMES: &[&str] = &[
    NO_EXPIRED,
    CHAINS,
    CA_BEFORE_USE,
    NO_MISSED_OR_REPEATED,
    QUEUE_BOUNDED,
];

impl World<'_> {
    /// Whether the agent's bundle holds a trust anchor of CA `ca` (as of its last bundle
    /// change: see [`World::refresh_held`]).
    fn holds(&self, agent: u32, ca: u32) -> bool {
        self.agents[agent as usize].held.contains(&ca)
    }

    /// Recomputes which CAs the agent's bundle holds a trust anchor of.
    pub(super) fn refresh_held(&mut self, agent: u32) {
        let held: Vec<u32> = match self.agents[agent as usize].cache.bundles.get(&self.td) {
            None => Vec::new(),
            Some(bundle) => (0..self.cas.len() as u32)
                .filter(|ca| {
                    self.cas[*ca as usize].anchors.iter().any(|d| {
                        bundle
                            .x509_authorities()
                            .iter()
                            .any(|a| a.der() == d.as_slice())
                    })
                })
                .collect(),
        };
        self.agents[agent as usize].held = held;
    }

    /// An SVID reached the agent: its CA must already be in the agent's bundle.
    pub(super) fn check_arrival(&mut self, agent: u32, entry: &EntryId, svid: &StoredSvid) {
        let issuer = self.issuer_of(svid);
        self.count_check(CA_BEFORE_USE);
        self.count_check(CHAINS);
        let held = issuer.is_some_and(|ca| self.holds(agent, ca));
        if !held {
            let name = issuer
                .and_then(|ca| self.cas.get(ca as usize))
                .map_or_else(|| "an unknown CA".to_owned(), |c| c.name.clone());
            self.violate(
                CA_BEFORE_USE,
                agent,
                Some(entry),
                format!(
                    "an SVID signed by CA {name} arrived before that CA was in the agent's bundle"
                ),
            );
        }
    }

    /// The agent's bundle changed: every SVID it serves must still chain to it.
    pub(super) fn bundle_changed(&mut self, agent: u32) {
        self.refresh_held(agent);
        self.count_check(CHAINS);
        let now = self.now_s();
        let a = &self.agents[agent as usize];
        let mut broken = None;
        for (id, svid) in &a.cache.svids {
            let serves = a
                .cache
                .entries
                .get(id)
                .is_some_and(|e| super::agent::current(Some(svid), e) && !e.is_expired_at(now));
            if serves && svid.not_after > now {
                let issuer = self.issuer_of(svid);
                if !issuer.is_some_and(|ca| self.holds(agent, ca)) {
                    broken = Some(id.clone());
                    break;
                }
            }
        }
        if let Some(id) = broken {
            let detail = self.unchained_detail(agent, &id);
            self.violate(CHAINS, agent, Some(&id), detail);
        }
    }

    /// What a `svid_chains_to_held_bundle` violation says: a revoked CA is named as such.
    fn unchained_detail(&self, agent: u32, id: &EntryId) -> String {
        let a = &self.agents[agent as usize];
        let issuer = a.cache.svids.get(id).and_then(|s| self.issuer_of(s));
        match issuer.and_then(|ca| self.cas.get(ca as usize)) {
            Some(ca) => match ca.revoked_ms {
                Some(at) => format!(
                    "the agent serves an SVID of CA {}, revoked at {}: the revoke reached the \
                     agent before it re-signed that SVID (revoke later, once no agent holds \
                     SVIDs of the tainted CA)",
                    ca.name,
                    crate::report::format_virtual_time(at)
                ),
                None => format!(
                    "the agent serves an SVID of CA {} whose CA is not in its bundle",
                    ca.name
                ),
            },
            None => "the agent serves an SVID whose CA is not in its bundle".into(),
        }
    }

    /// What the real `for_workload` serves to the node's workloads (every entry's selectors)
    /// is unexpired and chains to the agent's bundle.
    pub(super) fn check_served(&mut self, agent: u32) {
        self.count_check(NO_EXPIRED);
        let now = self.now_s();
        let a = &self.agents[agent as usize];
        let mut selectors = SelectorSet::new();
        for e in a.cache.workload_entries() {
            for s in e.selectors.iter() {
                selectors.insert(s.clone());
            }
        }
        let snapshot = a.cache.snapshot(&self.td);
        let mut expired = None;
        let mut unchained = None;
        for identity in snapshot.for_workload(&selectors, now) {
            let Some(svid) = &identity.svid else {
                continue;
            };
            if svid.not_after <= now {
                expired = Some((identity.entry.id.clone(), svid.not_after));
                break;
            }
            let stored = a.cache.svids.get(&identity.entry.id);
            let issuer = stored.and_then(|s| self.issuer_of(s));
            if unchained.is_none() && !issuer.is_some_and(|ca| self.holds(agent, ca)) {
                unchained = Some(identity.entry.id.clone());
            }
        }
        if let Some((id, not_after)) = expired {
            self.violate(
                NO_EXPIRED,
                agent,
                Some(&id),
                format!("served an SVID that expired at {not_after}"),
            );
            return;
        }
        self.count_check(CHAINS);
        if let Some(id) = unchained {
            let detail = self.unchained_detail(agent, &id);
            self.violate(CHAINS, agent, Some(&id), detail);
        }
    }

    /// A quiet stream (open, nothing in flight): the cache holds exactly the server's view
    /// of the agent and the current bundle.
    fn check_consistent(&mut self, agent: u32) {
        let a = &self.agents[agent as usize];
        let quiet = a.conn.is_some_and(|c| c.established) && a.in_flight_msgs == 0;
        if !quiet {
            return;
        }
        self.count_check(NO_MISSED_OR_REPEATED);
        let a = &self.agents[agent as usize];
        let same = self
            .log
            .index
            .entry_ids_for(&a.id)
            .eq(a.cache.entries.keys());
        if !same {
            let server: BTreeSet<EntryId> = self.log.index.entry_ids_for(&a.id).cloned().collect();
            let held: BTreeSet<EntryId> = a.cache.entries.keys().cloned().collect();
            let missing = server.difference(&held).next().cloned();
            let extra = held.difference(&server).next().cloned();
            let entry = missing.clone().or(extra.clone());
            self.violate(
                NO_MISSED_OR_REPEATED,
                agent,
                entry.as_ref(),
                format!(
                    "quiet stream, but the cache holds {} entries and the server's view {} \
                     (missing {missing:?}, extra {extra:?})",
                    held.len(),
                    server.len()
                ),
            );
            return;
        }
        let bundle_ok = match (&self.bundle, a.cache.bundles.get(&self.td)) {
            (Some(b), Some(h)) => **b == *h,
            (None, None) => true,
            _ => false,
        };
        if !bundle_ok {
            self.violate(
                NO_MISSED_OR_REPEATED,
                agent,
                None,
                "quiet stream, but the agent's bundle is not the server's".into(),
            );
        }
    }

    /// An agent's periodic audit.
    pub(super) fn audit(&mut self, agent: u32) {
        let every = u64::try_from(self.sc.checks.audit_interval.as_millis()).unwrap_or(900_000);
        self.queue.push(self.now_ms + every, Ev::Audit(agent));
        if !self.agents[agent as usize].alive {
            return;
        }
        self.check_served(agent);
        if self.metrics.violation.is_none() {
            self.check_consistent(agent);
        }
    }

    /// At the end of the run: every agent once.
    pub(super) fn final_checks(&mut self) {
        for agent in 0..self.agents.len() as u32 {
            if !self.agents[agent as usize].alive {
                continue;
            }
            self.check_served(agent);
            if self.metrics.violation.is_none() {
                self.check_consistent(agent);
            }
            if self.metrics.violation.is_some() {
                return;
            }
        }
    }

    /// A server's queue depth after an admission.
    pub(super) fn check_queue(&mut self, server: u32, agent: u32) {
        self.count_check(QUEUE_BOUNDED);
        let depth = self.servers[server as usize].depth;
        if depth > self.sc.server.max_queued {
            self.violate(
                QUEUE_BOUNDED,
                agent,
                None,
                format!(
                    "server {server}'s signing queue holds {depth} items, over max_queued {}",
                    self.sc.server.max_queued
                ),
            );
        }
    }
}
