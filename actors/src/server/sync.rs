//! Which entries each agent may see, kept incrementally (DESIGN.md §4).
//!
//! An agent is authorised for the entries whose parent is its own SPIFFE ID, for the entries
//! under each node alias it matches (an alias is an entry parented to
//! `spiffe://<td>/spire/server` whose selectors are a subset of the agent's node selectors),
//! and, recursively, for the entries under any SPIFFE ID it is authorised for.
//!
//! [`SyncIndex`] folds the registry and node events and, for each event, says which agents'
//! views changed and how: a change to one entry touches only the agents it concerns.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use tessera_identity::{EntryId, RegistrationEntry, SpiffeId, SERVER_PATH};

use crate::server::aggregate::Aggregate;
use crate::server::events::ServerEvent;
use crate::server::nodes::Nodes;
use crate::server::registry::Registry;

/// A change to one agent's view.
// Short-lived, moved into a stream message at once: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewChange {
    /// The entry is new to the agent, or changed.
    Upsert(RegistrationEntry),
    /// The entry left the agent's view.
    Remove(EntryId),
}

/// One agent's authorised entries, and the SPIFFE IDs under which it may see children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct View {
    entries: BTreeSet<EntryId>,
    reach: BTreeSet<SpiffeId>,
}

/// Registry + nodes + every agent's view.
#[derive(Debug, Default)]
pub struct SyncIndex {
    registry: Registry,
    nodes: Nodes,
    views: HashMap<SpiffeId, View>,
    /// SPIFFE ID → agents that reach it (whose view includes its children).
    reached_by: HashMap<SpiffeId, BTreeSet<SpiffeId>>,
}

impl SyncIndex {
    /// An index over already folded state (start-up).
    pub fn new(registry: Registry, nodes: Nodes) -> Self {
        let mut index = SyncIndex {
            registry,
            nodes,
            views: HashMap::new(),
            reached_by: HashMap::new(),
        };
        let agents: Vec<SpiffeId> = index.nodes.iter().map(|a| a.agent.id.clone()).collect();
        for agent in agents {
            let view = index.compute(&agent);
            index.install(agent, view);
        }
        index
    }

    /// The registry as folded here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The nodes as folded here.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// The agent's authorised entries, in id order (empty for an unknown or banned agent).
    pub fn entries_for(&self, agent: &SpiffeId) -> Vec<RegistrationEntry> {
        self.views
            .get(agent)
            .map(|v| {
                v.entries
                    .iter()
                    .filter_map(|id| self.registry.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ids of the agent's authorised entries, in id order, without cloning the entries
    /// (the simulator compares a million caches against their views).
    pub fn entry_ids_for<'a>(&'a self, agent: &SpiffeId) -> impl Iterator<Item = &'a EntryId> + 'a {
        self.views
            .get(agent)
            .into_iter()
            .flat_map(|v| v.entries.iter())
    }

    /// Whether `agent` may have SVIDs signed for `entry`.
    pub fn is_authorised(&self, agent: &SpiffeId, entry: &EntryId) -> bool {
        self.views
            .get(agent)
            .is_some_and(|v| v.entries.contains(entry))
    }

    /// Folds one committed event and returns each affected agent's view changes.
    pub fn apply(&mut self, event: &ServerEvent) -> BTreeMap<SpiffeId, Vec<ViewChange>> {
        // The common cases, in time independent of the size of the agents' views.
        match event {
            ServerEvent::EntryCreated(e) if !e.is_node_alias() => return self.created(e),
            ServerEvent::EntryDeleted { id } => {
                if let Some(old) = self
                    .registry
                    .get(id)
                    .filter(|o| !o.is_node_alias())
                    .cloned()
                {
                    if let Some(out) = self.deleted_leaf(&old, event) {
                        return out;
                    }
                }
            }
            // A pruned entry leaves the views as a deleted one does; a prune that no longer
            // applies (the entry is gone, or was extended) changes nothing.
            ServerEvent::EntryExpired { id, expires_at } => {
                let Some(old) = self.registry.pruned_by(id, *expires_at).cloned() else {
                    return BTreeMap::new();
                };
                if !old.is_node_alias() {
                    if let Some(out) = self.deleted_leaf(&old, event) {
                        return out;
                    }
                }
            }
            _ => {}
        }
        self.recompute_affected(event)
    }

    /// A new workload (or nested) entry: it joins the view of every agent that reaches its
    /// parent, and whatever hangs under its SPIFFE ID joins with it.
    fn created(&mut self, e: &RegistrationEntry) -> BTreeMap<SpiffeId, Vec<ViewChange>> {
        let agents: Vec<SpiffeId> = self
            .reached_by
            .get(&e.parent_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        self.registry.apply(&ServerEvent::EntryCreated(e.clone()));
        let mut out = BTreeMap::new();
        for agent in agents {
            let mut changes = Vec::new();
            let mut queue = VecDeque::new();
            if let Some(view) = self.views.get_mut(&agent) {
                if view.entries.insert(e.id.clone()) {
                    changes.push(ViewChange::Upsert(e.clone()));
                }
                if !view.reach.contains(&e.spiffe_id) {
                    queue.push_back(e.spiffe_id.clone());
                }
            }
            // Extend the reach from the new entry's SPIFFE ID (usually nothing hangs there).
            while let Some(parent) = queue.pop_front() {
                let Some(view) = self.views.get_mut(&agent) else {
                    break;
                };
                if !view.reach.insert(parent.clone()) {
                    continue;
                }
                self.reached_by
                    .entry(parent.clone())
                    .or_default()
                    .insert(agent.clone());
                for child in self.registry.children_of(&parent) {
                    if view.entries.insert(child.id.clone()) {
                        changes.push(ViewChange::Upsert(child.clone()));
                    }
                    if !view.reach.contains(&child.spiffe_id) {
                        queue.push_back(child.spiffe_id.clone());
                    }
                }
            }
            if !changes.is_empty() {
                out.insert(agent, changes);
            }
        }
        out
    }

    /// A deleted entry that nothing hangs under and whose SPIFFE ID the agents still reach
    /// otherwise (or do not need to): it just leaves the views. `None` when the shortcut does
    /// not apply and views must be recomputed.
    fn deleted_leaf(
        &mut self,
        old: &RegistrationEntry,
        event: &ServerEvent,
    ) -> Option<BTreeMap<SpiffeId, Vec<ViewChange>>> {
        let issued_by_alias = self
            .registry
            .with_spiffe_id(&old.spiffe_id)
            .any(|o| o.is_node_alias());
        if issued_by_alias || self.registry.children_of(&old.spiffe_id).next().is_some() {
            return None;
        }
        let agents: Vec<SpiffeId> = self
            .reached_by
            .get(&old.parent_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        self.registry.apply(event);
        let mut out = BTreeMap::new();
        for agent in agents {
            let Some(view) = self.views.get_mut(&agent) else {
                continue;
            };
            if !view.entries.remove(&old.id) {
                continue;
            }
            // Drop the SPIFFE ID from the reach unless it is still issued within the view or is
            // a root of the view (the agent itself).
            let still_issued = self
                .registry
                .with_spiffe_id(&old.spiffe_id)
                .any(|o| view.entries.contains(&o.id));
            if !still_issued && old.spiffe_id != agent && view.reach.remove(&old.spiffe_id) {
                if let Some(set) = self.reached_by.get_mut(&old.spiffe_id) {
                    set.remove(&agent);
                    if set.is_empty() {
                        self.reached_by.remove(&old.spiffe_id);
                    }
                }
            }
            out.insert(agent, vec![ViewChange::Remove(old.id.clone())]);
        }
        Some(out)
    }

    /// Any other change: recompute the views of the agents it may concern.
    fn recompute_affected(&mut self, event: &ServerEvent) -> BTreeMap<SpiffeId, Vec<ViewChange>> {
        let affected = self.affected_by(event);
        self.registry.apply(event);
        self.nodes.apply(event);
        let mut out = BTreeMap::new();
        for agent in affected {
            let before = self.views.get(&agent).cloned().unwrap_or_default();
            let after = if self.nodes.selectors_of(&agent).is_some() {
                self.compute(&agent)
            } else {
                View::default()
            };
            let mut changes: Vec<ViewChange> = before
                .entries
                .difference(&after.entries)
                .map(|id| ViewChange::Remove(id.clone()))
                .collect();
            for id in &after.entries {
                let changed_entry = match event {
                    ServerEvent::EntryUpdated(e) => &e.id == id,
                    _ => false,
                };
                if !before.entries.contains(id) || changed_entry {
                    if let Some(e) = self.registry.get(id) {
                        changes.push(ViewChange::Upsert(e.clone()));
                    }
                }
            }
            self.uninstall(&agent);
            if self.nodes.selectors_of(&agent).is_some() {
                self.install(agent.clone(), after);
            }
            if !changes.is_empty() {
                out.insert(agent, changes);
            }
        }
        out
    }

    /// Agents whose view `event` may change, computed before it is applied (and, for
    /// additions, from what the event says).
    fn affected_by(&self, event: &ServerEvent) -> BTreeSet<SpiffeId> {
        let mut agents = BTreeSet::new();
        let by_entry = |e: &RegistrationEntry, agents: &mut BTreeSet<SpiffeId>| {
            if let Some(reachers) = self.reached_by.get(&e.parent_id) {
                agents.extend(reachers.iter().cloned());
            }
            if e.is_node_alias() {
                for a in self.nodes.iter() {
                    if e.selectors.is_subset_of(&a.agent.selectors) {
                        agents.insert(a.agent.id.clone());
                    }
                }
            }
            // An entry's own SPIFFE ID may be (or stop being) reachable through it.
            if let Some(reachers) = self.reached_by.get(&e.spiffe_id) {
                agents.extend(reachers.iter().cloned());
            }
        };
        match event {
            ServerEvent::EntryCreated(e) => by_entry(e, &mut agents),
            ServerEvent::EntryUpdated(e) => {
                by_entry(e, &mut agents);
                if let Some(old) = self.registry.get(&e.id) {
                    by_entry(old, &mut agents);
                }
            }
            ServerEvent::EntryDeleted { id } | ServerEvent::EntryExpired { id, .. } => {
                if let Some(old) = self.registry.get(id) {
                    by_entry(old, &mut agents);
                }
            }
            ServerEvent::AgentAttested(a) => {
                agents.insert(a.id.clone());
            }
            ServerEvent::AgentEvicted { agent_id } | ServerEvent::AgentBanned { agent_id } => {
                agents.insert(agent_id.clone());
            }
            _ => {}
        }
        agents
    }

    /// The agent's view from scratch: breadth-first over parent → children.
    fn compute(&self, agent: &SpiffeId) -> View {
        let mut view = View::default();
        let Some(node_selectors) = self.nodes.selectors_of(agent) else {
            return view;
        };
        let mut queue: VecDeque<SpiffeId> = VecDeque::new();
        queue.push_back(agent.clone());
        let Ok(server_id) = SpiffeId::from_path(agent.trust_domain(), SERVER_PATH) else {
            return view;
        };
        for alias in self.registry.children_of(&server_id) {
            if alias.selectors.is_subset_of(node_selectors) {
                queue.push_back(alias.spiffe_id.clone());
            }
        }
        while let Some(parent) = queue.pop_front() {
            if !view.reach.insert(parent.clone()) {
                continue;
            }
            for child in self.registry.children_of(&parent) {
                view.entries.insert(child.id.clone());
                if !view.reach.contains(&child.spiffe_id) {
                    queue.push_back(child.spiffe_id.clone());
                }
            }
        }
        view
    }

    fn install(&mut self, agent: SpiffeId, view: View) {
        for id in &view.reach {
            self.reached_by
                .entry(id.clone())
                .or_default()
                .insert(agent.clone());
        }
        self.views.insert(agent, view);
    }

    fn uninstall(&mut self, agent: &SpiffeId) {
        if let Some(view) = self.views.remove(agent) {
            for id in &view.reach {
                if let Some(set) = self.reached_by.get_mut(id) {
                    set.remove(agent);
                    if set.is_empty() {
                        self.reached_by.remove(id);
                    }
                }
            }
        }
    }
}
