//! The simulated log every server folds: a seq counter, the real `SyncIndex` (registry,
//! nodes, per-agent views), and the recent per-agent view changes that let a reconnecting
//! agent resume (SyncHub's rule, mirrored: a cursor inside the window resumes, any other
//! gets a snapshot).
//!
//! The window is kept per agent (each agent's recent changes, plus the seqs that changed
//! the bundle) so a resumption costs the agent's own missed changes, not a scan of the whole
//! window; the accounting (at most `resume_window` changes, a record with none counting one)
//! is SyncHub's.

use std::collections::{BTreeMap, VecDeque};

use tessera_actors::server::events::ServerEvent;
use tessera_actors::server::nodes::Nodes;
use tessera_actors::server::registry::{Registry, RegistrySettings};
use tessera_actors::server::sync::{SyncIndex, ViewChange};
use tessera_identity::{EntryLimits, SpiffeId, TrustDomain};

/// One committed record's effect on views.
pub struct Committed {
    /// Its seq.
    pub seq: u64,
    /// Per affected agent, its view changes.
    pub changes: BTreeMap<SpiffeId, Vec<ViewChange>>,
    /// Whether the bundle's content changed.
    pub bundle_changed: bool,
}

/// A retained record: who it changed, for trimming.
struct Retained {
    seq: u64,
    agents: Vec<u32>,
    count: usize,
    bundle_changed: bool,
}

/// The log and what is folded from it.
pub struct SimLog {
    /// Last seq appended.
    pub seq: u64,
    /// Registry + nodes + views (real).
    pub index: SyncIndex,
    window: usize,
    retained: VecDeque<Retained>,
    retained_changes: usize,
    /// Records at or below this seq are no longer retained.
    pub floor: u64,
    per_agent: Vec<VecDeque<(u64, Vec<ViewChange>)>>,
    bundle_seqs: VecDeque<u64>,
}

impl SimLog {
    /// An empty log for `td`.
    pub fn new(td: &TrustDomain, resume_window: u64) -> Self {
        let mut registry = Registry::default();
        registry.configure(RegistrySettings {
            trust_domain: td.clone(),
            limits: EntryLimits::default(),
            max_entries: usize::MAX,
        });
        Self {
            seq: 0,
            index: SyncIndex::new(registry, Nodes::default()),
            window: usize::try_from(resume_window).unwrap_or(usize::MAX),
            retained: VecDeque::new(),
            retained_changes: 0,
            floor: 0,
            per_agent: Vec::new(),
            bundle_seqs: VecDeque::new(),
        }
    }

    /// Appends and folds one event.
    pub fn append(&mut self, event: &ServerEvent) -> Committed {
        self.seq += 1;
        Committed {
            seq: self.seq,
            changes: self.index.apply(event),
            bundle_changed: event.touches_bundle(),
        }
    }

    /// Keeps a record's per-agent changes (by agent index) for resumption, trimming the
    /// oldest beyond the window.
    pub fn retain(&mut self, seq: u64, changes: Vec<(u32, Vec<ViewChange>)>, bundle_changed: bool) {
        let count: usize = changes.iter().map(|(_, c)| c.len()).sum();
        if count == 0 && !bundle_changed {
            return;
        }
        let mut agents = Vec::with_capacity(changes.len());
        for (agent, c) in changes {
            let i = agent as usize;
            if self.per_agent.len() <= i {
                self.per_agent.resize_with(i + 1, VecDeque::new);
            }
            self.per_agent[i].push_back((seq, c));
            agents.push(agent);
        }
        if bundle_changed {
            self.bundle_seqs.push_back(seq);
        }
        self.retained_changes += count.max(1);
        self.retained.push_back(Retained {
            seq,
            agents,
            count,
            bundle_changed,
        });
        while self.retained_changes > self.window {
            let Some(oldest) = self.retained.pop_front() else {
                break;
            };
            for a in oldest.agents {
                if let Some(q) = self.per_agent.get_mut(a as usize) {
                    q.pop_front();
                }
            }
            if oldest.bundle_changed {
                self.bundle_seqs.pop_front();
            }
            self.retained_changes -= oldest.count.max(1);
            self.floor = oldest.seq;
        }
    }

    /// The agent's updates after `cursor` (seq, its changes, whether the bundle changed),
    /// in seq order, if a server whose own history starts at `server_floor` still has them;
    /// `None`: a snapshot is needed.
    #[allow(clippy::type_complexity)]
    pub fn missed(
        &self,
        agent: u32,
        cursor: u64,
        server_floor: u64,
    ) -> Option<Vec<(u64, Vec<ViewChange>, bool)>> {
        let floor = self.floor.max(server_floor);
        if cursor == 0 || cursor < floor || cursor > self.seq {
            return None;
        }
        let mut out: Vec<(u64, Vec<ViewChange>, bool)> = Vec::new();
        let own = self.per_agent.get(agent as usize);
        let mut own = own
            .into_iter()
            .flatten()
            .filter(|(s, _)| *s > cursor)
            .peekable();
        let mut bundles = self.bundle_seqs.iter().filter(|s| **s > cursor).peekable();
        loop {
            let take_own = match (own.peek(), bundles.peek()) {
                (None, None) => break,
                (Some((s, _)), Some(b)) => *s <= **b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_own {
                if let Some((s, c)) = own.next() {
                    let bundle = bundles.peek().is_some_and(|b| **b == *s);
                    if bundle {
                        bundles.next();
                    }
                    out.push((*s, c.clone(), bundle));
                }
            } else if let Some(b) = bundles.next() {
                out.push((*b, Vec::new(), true));
            }
        }
        Some(out)
    }
}
