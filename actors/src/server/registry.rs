//! The Registry aggregate: registration entries and their indexes (by id, parent, SPIFFE ID,
//! selector), with SPIRE's rules. Pure: see `decide.rs` and `apply.rs`; reads in `query.rs`.

mod apply;
mod decide;
mod entry_set;
mod expiry;
#[cfg(test)]
mod prune_tests;
mod query;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_eventlog::typed::{decode_state, encode_state};
use tessera_identity::{
    EntryError, EntryId, EntryLimits, RegistrationEntry, Selector, SelectorSet, SpiffeId,
    TrustDomain,
};

use entry_set::{ById, EntrySet, IdProbe};
pub use query::{EntryFilter, EntryPage, MatchBehavior};

/// The registry's hash maps: keys come from admins, not peers; the hasher is seeded per
/// process.
type Index<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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
    /// Prune entries whose `expires_at` has passed at the context's time, at most
    /// [`PRUNE_BATCH`] per command (the actor runs it on its housekeeping schedule).
    PruneExpired,
}

/// Most entries one prune removes: one append stays well under the log's batch limit; the
/// rest go in the next round, a second later.
pub const PRUNE_BATCH: usize = 1_000;

/// Per-item outcomes of a registry command, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryReply {
    /// Outcomes of `Create`.
    Created(Vec<Result<RegistrationEntry, EntryRejection>>),
    /// Outcomes of `Update`.
    Updated(Vec<Result<RegistrationEntry, EntryRejection>>),
    /// Outcomes of `Delete`.
    Deleted(Vec<Result<EntryId, EntryRejection>>),
    /// The entries `PruneExpired` removed.
    Pruned(Vec<EntryId>),
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

/// Which indexes a [`Registry`] keeps. Each copy of the registry keeps what its owner asks
/// of it: the registry actor answers every query and checks uniqueness ([`Full`]); the sync
/// hub walks parents ([`Parents`]); the journal only stores snapshots ([`Table`]). Queries on
/// a missing index fall back to a scan, so a lighter copy is slower, never wrong.
///
/// [`Full`]: IndexLevel::Full
/// [`Parents`]: IndexLevel::Parents
/// [`Table`]: IndexLevel::Table
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum IndexLevel {
    /// Entries by id only.
    Table,
    /// Also by parent ID.
    Parents,
    /// Also by SPIFFE ID and selector.
    #[default]
    Full,
}

/// Registration entries, indexed. Entries are shared (`Arc`) between the copies the registry
/// actor, the sync hub and the journal hold, so a copy costs its maps, not the entries.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    settings: Option<RegistrySettings>,
    level: IndexLevel,
    entries: BTreeSet<ById>,
    by_parent: Index<SpiffeId, EntrySet>,
    by_spiffe_id: Index<SpiffeId, EntrySet>,
    by_selector: Index<Selector, EntrySet>,
    /// Entries that expire, by (expiry, id): the next to prune is the first.
    by_expiry: BTreeSet<(i64, EntryId)>,
}

/// What a snapshot stores: the entries in id order, in separately encoded chunks so that
/// start-up decodes them on every core; indexes are rebuilt on load.
#[derive(Serialize, Deserialize)]
struct RegistryImage<'a> {
    #[serde(borrow)]
    chunks: Vec<Chunk<'a>>,
}

/// Entries per snapshot chunk (a few in unit tests, so that they cross chunk boundaries).
const CHUNK_ENTRIES: usize = if cfg!(test) { 3 } else { 16_384 };

/// One chunk: the bincode of a list of entries, carried as raw bytes; borrowed from the
/// snapshot when the decoder allows (bincode from a slice does), so the data is not copied.
struct Chunk<'a>(std::borrow::Cow<'a, [u8]>);

impl Serialize for Chunk<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Chunk<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Chunk<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a chunk of encoded entries")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(Chunk(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(Chunk(std::borrow::Cow::Owned(v.to_vec())))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(Chunk(std::borrow::Cow::Owned(v)))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

impl Serialize for Registry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entries: Vec<&Arc<RegistrationEntry>> = self.entries.iter().map(|e| &e.entry).collect();
        let chunks = entries
            .chunks(CHUNK_ENTRIES)
            .map(|part| encode_state(&part).map(|bytes| Chunk(bytes.into())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::ser::Error::custom)?;
        RegistryImage { chunks }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Registry {
    /// A [`IndexLevel::Table`] registry; [`Registry::indexed`] adds indexes.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Image;
        impl<'de> serde::de::Visitor<'de> for Image {
            type Value = Registry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a registry image")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Registry, A::Error> {
                let entries = seq
                    .next_element_seed(DecodeChunks)?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                Ok(Registry::from_entries(entries))
            }
        }
        // The shape of `RegistryImage`, its chunks decoded as they arrive.
        deserializer.deserialize_struct("RegistryImage", &["chunks"], Image)
    }
}

/// Decodes an image's chunks as the deserializer hands them out: from a stream, each chunk is
/// read while earlier ones are decoded on the other cores, and freed once decoded.
struct DecodeChunks;

impl<'de> serde::de::DeserializeSeed<'de> for DecodeChunks {
    type Value = Vec<Arc<RegistrationEntry>>;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DecodeChunks {
    type Value = Vec<Arc<RegistrationEntry>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("chunks of encoded entries")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        decode_chunks(|| seq.next_element::<Chunk<'de>>()).map_err(|e| match e {
            ChunkError::Read(e) => e,
            ChunkError::Decode(message) => serde::de::Error::custom(message),
        })
    }
}

enum ChunkError<E> {
    /// The deserializer failed handing out a chunk.
    Read(E),
    /// A chunk did not decode.
    Decode(String),
}

/// Decodes the chunks `next` hands out (in order, until `None`) on one thread per core while
/// this thread fetches the next ones; the entries in chunk order.
fn decode_chunks<'de, E>(
    mut next: impl FnMut() -> Result<Option<Chunk<'de>>, E>,
) -> Result<Vec<Arc<RegistrationEntry>>, ChunkError<E>> {
    type Decoded = (usize, Result<Vec<Arc<RegistrationEntry>>, String>);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let (send, receive) = std::sync::mpsc::sync_channel::<(usize, Chunk<'de>)>(workers);
    let receive = std::sync::Mutex::new(receive);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let work = || -> Vec<Decoded> {
        let mut done = Vec::new();
        loop {
            let job = receive
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .recv();
            let Ok((index, chunk)) = job else {
                return done;
            };
            // After a failure the rest is only drained, so the reader never waits on a full
            // channel.
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            // A decoder that panicked counts as a failed chunk: a worker that died would leave
            // the reader blocked on a full channel.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decode_state(0, &chunk.0).map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("decoding a snapshot chunk panicked".into()));
            if decoded.is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            done.push((index, decoded));
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
        let mut read_error = None;
        let mut count = 0;
        loop {
            match next() {
                Ok(Some(chunk)) => {
                    if send.send((count, chunk)).is_err() {
                        break;
                    }
                    count += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        drop(send);
        let mut parts: Vec<Decoded> = Vec::with_capacity(count);
        for handle in handles {
            parts.extend(
                handle.join().map_err(|_| {
                    ChunkError::Decode("a snapshot decoding thread panicked".into())
                })?,
            );
        }
        if let Some(e) = read_error {
            return Err(ChunkError::Read(e));
        }
        parts.sort_unstable_by_key(|(index, _)| *index);
        let mut entries = Vec::new();
        for (_, part) in parts {
            let part = part.map_err(ChunkError::Decode)?;
            if entries.is_empty() {
                entries.reserve(part.len() * count);
            }
            entries.extend(part);
        }
        Ok(entries)
    })
}

impl Registry {
    /// An empty registry keeping the indexes of `level`.
    pub fn with_level(level: IndexLevel) -> Self {
        Registry {
            level,
            ..Registry::default()
        }
    }

    /// A [`IndexLevel::Table`] registry of `entries` (any order; a later duplicate id wins).
    pub fn from_entries(entries: impl IntoIterator<Item = Arc<RegistrationEntry>>) -> Self {
        Registry {
            level: IndexLevel::Table,
            // Snapshots store entries in id order: `collect` then builds the tree in one pass.
            entries: entries.into_iter().map(ById::from_shared).collect(),
            ..Registry::default()
        }
    }

    /// A copy keeping the indexes of `level` (sharing the entries).
    pub fn indexed(&self, level: IndexLevel) -> Registry {
        let mut r = self.table_copy(level);
        if level >= IndexLevel::Parents {
            r.by_parent = self.parent_index();
        }
        if level >= IndexLevel::Full {
            r.by_spiffe_id = self.spiffe_id_index();
            r.by_selector = self.selector_index();
            r.by_expiry = self.expiry_index();
        }
        r
    }

    /// A [`IndexLevel::Full`] copy and a [`IndexLevel::Parents`] copy (what the registry
    /// actor and the sync hub start from), built on two threads; the two parent indexes
    /// start as one (their sets are shared until changed).
    ///
    /// # Errors
    /// When an indexing thread panicked.
    pub fn indexed_full_and_parents(&self) -> Result<(Registry, Registry), String> {
        // Measured at a million entries: the SPIFFE-ID index (a key per entry) costs about
        // as much as the parent index and the selector index together.
        std::thread::scope(|s| {
            let spiffe_ids =
                s.spawn(move || (self.spiffe_id_index(), self.table_copy(IndexLevel::Parents)));
            let mut full = self.table_copy(IndexLevel::Full);
            full.by_parent = self.parent_index();
            full.by_selector = self.selector_index();
            let (by_spiffe_id, mut parents) = spiffe_ids
                .join()
                .map_err(|_| "indexing the registry panicked".to_string())?;
            full.by_spiffe_id = by_spiffe_id;
            full.by_expiry = self.expiry_index();
            parents.by_parent = full.by_parent.clone();
            Ok((full, parents))
        })
    }

    /// A copy with the same entries (shared) and settings, no index built yet.
    fn table_copy(&self, level: IndexLevel) -> Registry {
        Registry {
            settings: self.settings.clone(),
            level,
            entries: self.entries.clone(),
            ..Registry::default()
        }
    }

    // Parents and selectors are shared by many entries: entries come in id order, so each
    // key's ids are gathered already sorted and its set is built in one pass rather than by a
    // search per insert. SPIFFE IDs mostly name one entry: inserted as they come.

    fn parent_index(&self) -> Index<SpiffeId, EntrySet> {
        let mut by_parent: Index<SpiffeId, Vec<ById>> = Index::default();
        for e in &self.entries {
            gather(&mut by_parent, &e.entry.parent_id, e);
        }
        settle(by_parent)
    }

    fn selector_index(&self) -> Index<Selector, EntrySet> {
        let mut by_selector: Index<Selector, Vec<ById>> = Index::default();
        for e in &self.entries {
            for s in e.entry.selectors.iter() {
                gather(&mut by_selector, s, e);
            }
        }
        settle(by_selector)
    }

    fn spiffe_id_index(&self) -> Index<SpiffeId, EntrySet> {
        let mut by_spiffe_id = Index::default();
        by_spiffe_id.reserve(self.entries.len());
        for e in &self.entries {
            add(&mut by_spiffe_id, &e.entry.spiffe_id, &e.entry);
        }
        by_spiffe_id
    }

    /// The indexes kept.
    pub fn level(&self) -> IndexLevel {
        self.level
    }

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
        self.entries
            .get(IdProbe::new(id).key())
            .map(|e| e.entry.as_ref())
    }

    /// Whether an entry has this id.
    pub fn contains(&self, id: &EntryId) -> bool {
        self.entries.contains(IdProbe::new(id).key())
    }

    /// The shared entry with this id.
    pub fn get_shared(&self, id: &EntryId) -> Option<&Arc<RegistrationEntry>> {
        self.entries.get(IdProbe::new(id).key()).map(|e| &e.entry)
    }

    /// Every entry, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &RegistrationEntry> {
        self.entries.iter().map(|e| e.entry.as_ref())
    }

    /// Entries whose parent is `parent`, in id order.
    pub fn children_of<'a>(
        &'a self,
        parent: &'a SpiffeId,
    ) -> Box<dyn Iterator<Item = &'a RegistrationEntry> + 'a> {
        if self.level < IndexLevel::Parents {
            return Box::new(self.iter().filter(move |e| &e.parent_id == parent));
        }
        Box::new(self.lookup(self.by_parent.get(parent)))
    }

    /// Entries issuing this SPIFFE ID, in id order.
    pub fn with_spiffe_id<'a>(
        &'a self,
        id: &'a SpiffeId,
    ) -> Box<dyn Iterator<Item = &'a RegistrationEntry> + 'a> {
        if self.level < IndexLevel::Full {
            return Box::new(self.iter().filter(move |e| &e.spiffe_id == id));
        }
        Box::new(self.lookup(self.by_spiffe_id.get(id)))
    }

    /// An entry with the uniqueness key `key` (SPIFFE ID, parent, selectors) other than those
    /// `skip` names. Found among the entries issuing the same SPIFFE ID (usually one).
    fn with_key<'a>(
        &'a self,
        key: &'a EntryKey,
        skip: impl Fn(&EntryId) -> bool,
    ) -> Option<&'a EntryId> {
        let (spiffe_id, parent_id, selectors) = key;
        self.with_spiffe_id(spiffe_id)
            .find(|e| &e.parent_id == parent_id && &e.selectors == selectors && !skip(&e.id))
            .map(|e| &e.id)
    }

    fn lookup<'a>(
        &'a self,
        set: Option<&'a EntrySet>,
    ) -> impl Iterator<Item = &'a RegistrationEntry> + 'a {
        set.into_iter().flat_map(EntrySet::iter)
    }

    fn insert(&mut self, e: Arc<RegistrationEntry>) {
        // One search of the table; an entry replaced leaves the indexes before its successor
        // joins them (they may share keys).
        if let Some(old) = self.entries.replace(ById::new(&e)) {
            self.unindex(&old.entry);
        }
        self.index(&e);
    }

    fn index(&mut self, e: &Arc<RegistrationEntry>) {
        if self.level < IndexLevel::Parents {
            return;
        }
        add(&mut self.by_parent, &e.parent_id, e);
        if self.level < IndexLevel::Full {
            return;
        }
        add(&mut self.by_spiffe_id, &e.spiffe_id, e);
        for s in e.selectors.iter() {
            add(&mut self.by_selector, s, e);
        }
        if let Some(at) = e.expires_at {
            self.by_expiry.insert((at, e.id.clone()));
        }
    }

    fn remove(&mut self, id: &EntryId) -> Option<Arc<RegistrationEntry>> {
        let e = self.entries.take(IdProbe::new(id).key())?.entry;
        self.unindex(&e);
        Some(e)
    }

    fn unindex(&mut self, e: &RegistrationEntry) {
        if self.level >= IndexLevel::Parents {
            unindex(&mut self.by_parent, &e.parent_id, &e.id);
        }
        if self.level >= IndexLevel::Full {
            unindex(&mut self.by_spiffe_id, &e.spiffe_id, &e.id);
            for s in e.selectors.iter() {
                unindex(&mut self.by_selector, s, &e.id);
            }
            if let Some(at) = e.expires_at {
                self.by_expiry.remove(&(at, e.id.clone()));
            }
        }
    }
}

fn add<K: std::hash::Hash + Eq + Clone>(
    index: &mut Index<K, EntrySet>,
    key: &K,
    entry: &Arc<RegistrationEntry>,
) {
    match index.get_mut(key) {
        Some(set) => set.insert(entry),
        None => {
            index.insert(key.clone(), EntrySet::One(entry.clone()));
        }
    }
}

fn gather<K: std::hash::Hash + Eq + Clone>(index: &mut Index<K, Vec<ById>>, key: &K, entry: &ById) {
    match index.get_mut(key) {
        Some(entries) => entries.push(entry.clone()),
        None => {
            index.insert(key.clone(), vec![entry.clone()]);
        }
    }
}

/// Turns gathered (sorted) entries into sets.
fn settle<K: std::hash::Hash + Eq>(gathered: Index<K, Vec<ById>>) -> Index<K, EntrySet> {
    let mut index = Index::default();
    index.reserve(gathered.len());
    for (key, entries) in gathered {
        if let Some(set) = EntrySet::from_sorted(entries) {
            index.insert(key, set);
        }
    }
    index
}

fn unindex<K: std::hash::Hash + Eq>(index: &mut Index<K, EntrySet>, key: &K, id: &EntryId) {
    if index.get_mut(key).is_some_and(|set| set.remove(id)) {
        index.remove(key);
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

    fn housekeeping(&self, now: i64) -> Option<RegistryCommand> {
        self.next_expiry()
            .is_some_and(|at| at <= now)
            .then_some(RegistryCommand::PruneExpired)
    }

    fn next_due(&self) -> Option<i64> {
        self.next_expiry()
    }
}
