//! The Registry aggregate: registration entries and their indexes (by id, parent, SPIFFE ID,
//! selector), with SPIRE's rules. Pure: see `decide.rs` and `apply.rs`; reads in `query.rs`.

mod apply;
mod decide;
mod query;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use tessera_identity::{
    EntryError, EntryId, EntryLimits, RegistrationEntry, Selector, SelectorSet, SpiffeId,
    TrustDomain,
};

pub use query::{EntryFilter, EntryPage, MatchBehavior};

/// Registry settings from the server's config (not part of the folded state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySettings {
    /// The server's trust domain.
    pub trust_domain: TrustDomain,
    /// Bounds on entry fields.
    pub limits: EntryLimits,
    /// Most entries the registry holds; creation beyond it is refused.
    pub max_entries: usize,
}

/// A new entry to create. `id: None` lets the registry pick one (SPIRE's default); a given id
/// (`--entryID`) must be unused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// A caller-chosen id, if any.
    pub id: Option<EntryId>,
    /// The entry; its `id`, `created_at` and `revision` are set by the registry.
    pub entry: RegistrationEntry,
}

/// Commands of the registry. Batches answer item by item, like SPIRE's batch RPCs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryCommand {
    /// Create entries.
    Create(Vec<NewEntry>),
    /// Replace entries (same id; `created_at` kept, `revision` bumped).
    Update(Vec<RegistrationEntry>),
    /// Delete entries.
    Delete(Vec<EntryId>),
}

/// Per-item outcomes of a registry command, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryReply {
    /// Outcomes of `Create`.
    Created(Vec<Result<RegistrationEntry, EntryRejection>>),
    /// Outcomes of `Update`.
    Updated(Vec<Result<RegistrationEntry, EntryRejection>>),
    /// Outcomes of `Delete`.
    Deleted(Vec<Result<EntryId, EntryRejection>>),
}

/// Why one entry of a batch was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryRejection {
    /// The entry breaks a rule of SPIRE's entry validation.
    #[error(transparent)]
    Invalid(#[from] EntryError),
    /// An entry with the same SPIFFE ID, parent ID and selectors exists (SPIRE's rule).
    #[error(
        "an entry with the same SPIFFE ID, parent ID and selectors already exists: {existing}"
    )]
    AlreadyExists {
        /// The existing entry.
        existing: EntryId,
    },
    /// The id given for a new entry is taken.
    #[error("entry id {id} is already in use; omit --entryID to have one generated")]
    IdInUse {
        /// The id.
        id: EntryId,
    },
    /// No entry has this id.
    #[error("no entry with id {id}")]
    NotFound {
        /// The id.
        id: EntryId,
    },
    /// The registry holds its maximum number of entries.
    #[error("the registry holds its limit of {limit} entries (server config `max_entries`)")]
    RegistryFull {
        /// The limit.
        limit: usize,
    },
}

/// Rejections of a whole registry command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry was used before its settings were given (a wiring bug).
    #[error("registry is not configured")]
    NotConfigured,
}

/// Identity of an entry for SPIRE's uniqueness rule.
type EntryKey = (SpiffeId, SpiffeId, SelectorSet);

fn key_of(e: &RegistrationEntry) -> EntryKey {
    (
        e.spiffe_id.clone(),
        e.parent_id.clone(),
        e.selectors.clone(),
    )
}

/// Registration entries, indexed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "RegistryImage", into = "RegistryImage")]
pub struct Registry {
    settings: Option<RegistrySettings>,
    entries: BTreeMap<EntryId, RegistrationEntry>,
    by_parent: HashMap<SpiffeId, BTreeSet<EntryId>>,
    by_spiffe_id: HashMap<SpiffeId, BTreeSet<EntryId>>,
    by_selector: HashMap<Selector, BTreeSet<EntryId>>,
    by_key: HashMap<EntryKey, EntryId>,
}

/// What a snapshot stores: the entries; indexes are rebuilt on load.
#[derive(Serialize, Deserialize)]
struct RegistryImage {
    entries: Vec<RegistrationEntry>,
}

impl From<Registry> for RegistryImage {
    fn from(r: Registry) -> Self {
        RegistryImage {
            entries: r.entries.into_values().collect(),
        }
    }
}

impl From<RegistryImage> for Registry {
    fn from(image: RegistryImage) -> Self {
        let mut r = Registry::default();
        for e in image.entries {
            r.insert(e);
        }
        r
    }
}

impl Registry {
    /// Gives the registry its settings (after construction or snapshot load).
    pub fn configure(&mut self, settings: RegistrySettings) {
        self.settings = Some(settings);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry with this id.
    pub fn get(&self, id: &EntryId) -> Option<&RegistrationEntry> {
        self.entries.get(id)
    }

    /// Every entry, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &RegistrationEntry> {
        self.entries.values()
    }

    /// Entries whose parent is `parent`.
    pub fn children_of(&self, parent: &SpiffeId) -> impl Iterator<Item = &RegistrationEntry> {
        self.by_parent
            .get(parent)
            .into_iter()
            .flatten()
            .filter_map(|id| self.entries.get(id))
    }

    /// Entries issuing this SPIFFE ID.
    pub fn with_spiffe_id(&self, id: &SpiffeId) -> impl Iterator<Item = &RegistrationEntry> {
        self.by_spiffe_id
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.entries.get(id))
    }

    fn insert(&mut self, e: RegistrationEntry) {
        if let Some(old) = self.entries.get(&e.id).cloned() {
            self.remove(&old.id);
        }
        let id = e.id.clone();
        self.by_parent
            .entry(e.parent_id.clone())
            .or_default()
            .insert(id.clone());
        self.by_spiffe_id
            .entry(e.spiffe_id.clone())
            .or_default()
            .insert(id.clone());
        for s in e.selectors.iter() {
            self.by_selector
                .entry(s.clone())
                .or_default()
                .insert(id.clone());
        }
        self.by_key.insert(key_of(&e), id.clone());
        self.entries.insert(id, e);
    }

    fn remove(&mut self, id: &EntryId) -> Option<RegistrationEntry> {
        let e = self.entries.remove(id)?;
        unindex(&mut self.by_parent, &e.parent_id, id);
        unindex(&mut self.by_spiffe_id, &e.spiffe_id, id);
        for s in e.selectors.iter() {
            unindex(&mut self.by_selector, s, id);
        }
        if self.by_key.get(&key_of(&e)) == Some(id) {
            self.by_key.remove(&key_of(&e));
        }
        Some(e)
    }
}

fn unindex<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, BTreeSet<EntryId>>,
    key: &K,
    id: &EntryId,
) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

impl crate::server::aggregate::Aggregate for Registry {
    type Command = RegistryCommand;
    type Reply = RegistryReply;
    type Error = RegistryError;
    const NAME: &'static str = "registry";

    fn decide(
        &self,
        command: RegistryCommand,
        ctx: &crate::server::aggregate::Context,
    ) -> Result<crate::server::aggregate::Decision<RegistryReply>, RegistryError> {
        self.decide_command(command, ctx)
    }

    fn apply(&mut self, event: &crate::server::events::ServerEvent) {
        self.apply_event(event);
    }
}
