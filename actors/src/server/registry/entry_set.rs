//! [`EntrySet`]: the entries under one index key, held by pointer and in id order. Most keys
//! (a SPIFFE ID) name one entry, so the common case holds it inline instead of a tree.
//!
//! Indexes hold the entries themselves rather than their ids: a lookup needs no second search
//! by id, and building an index touches only the entry it reads (an id's clone would also
//! touch the id's shared text, elsewhere in memory — at a million entries, a cache miss each).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use tessera_identity::{EntryId, RegistrationEntry};

/// An entry ordered by its id, the id's first bytes kept inline so that comparisons rarely
/// follow the pointer.
#[derive(Clone, Debug)]
pub(crate) struct ById {
    prefix: u64,
    pub(crate) entry: Arc<RegistrationEntry>,
}

impl ById {
    pub(crate) fn new(entry: &Arc<RegistrationEntry>) -> Self {
        Self::from_shared(entry.clone())
    }

    pub(crate) fn from_shared(entry: Arc<RegistrationEntry>) -> Self {
        ById {
            prefix: entry.id.order_prefix(),
            entry,
        }
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ById {}

impl Ord for ById {
    // As `EntryId` orders (see `EntryId::order_prefix`): prefix, then the whole id.
    fn cmp(&self, other: &Self) -> Ordering {
        (self as &dyn IdKey).cmp(other as &dyn IdKey)
    }
}

/// An id with its order prefix: what sets of [`ById`] are searched by, so that a search
/// compares the inline prefixes and follows a pointer to the id's text only on a tie (a search
/// by the bare [`EntryId`] would follow two pointers at every step down the tree).
pub(crate) trait IdKey {
    fn prefix(&self) -> u64;
    fn id(&self) -> &EntryId;
}

impl IdKey for ById {
    fn prefix(&self) -> u64 {
        self.prefix
    }
    fn id(&self) -> &EntryId {
        &self.entry.id
    }
}

/// An id to search a set of [`ById`] for: `set.get(IdProbe::new(id).key())`.
pub(crate) struct IdProbe<'a> {
    prefix: u64,
    id: &'a EntryId,
}

impl<'a> IdProbe<'a> {
    pub(crate) fn new(id: &'a EntryId) -> Self {
        IdProbe {
            prefix: id.order_prefix(),
            id,
        }
    }

    pub(crate) fn key(&self) -> &(dyn IdKey + 'a) {
        self
    }
}

impl IdKey for IdProbe<'_> {
    fn prefix(&self) -> u64 {
        self.prefix
    }
    fn id(&self) -> &EntryId {
        self.id
    }
}

impl PartialEq for dyn IdKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for dyn IdKey + '_ {}

impl PartialOrd for dyn IdKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn IdKey + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix()
            .cmp(&other.prefix())
            .then_with(|| self.id().cmp(other.id()))
    }
}

// Consistent with `Ord`: both order by prefix, then id.
impl<'a> Borrow<dyn IdKey + 'a> for ById {
    fn borrow(&self) -> &(dyn IdKey + 'a) {
        self
    }
}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The entries under one index key, in id order.
///
/// Sixteen bytes, and a set of many is shared between copies of an index until one of them
/// changes it (the registry actor's and the sync hub's parent indexes start as one).
#[derive(Clone, Debug)]
pub(crate) enum EntrySet {
    /// Exactly one entry.
    One(Arc<RegistrationEntry>),
    /// Two or more entries.
    Many(Arc<BTreeSet<ById>>),
}

impl EntrySet {
    /// Gathered entries (in id order, no id twice) as a set; `None` if there are none.
    pub(crate) fn from_sorted(mut entries: Vec<ById>) -> Option<Self> {
        if entries.len() <= 1 {
            return entries.pop().map(|only| EntrySet::One(only.entry));
        }
        // Sorted input: `collect` checks the order in one pass and builds the tree in bulk.
        Some(EntrySet::Many(Arc::new(entries.into_iter().collect())))
    }

    /// Adds `entry`, replacing one with the same id.
    pub(crate) fn insert(&mut self, entry: &Arc<RegistrationEntry>) {
        match self {
            EntrySet::One(only) if only.id == entry.id => *only = entry.clone(),
            EntrySet::One(only) => {
                let first = ById::new(only);
                *self = EntrySet::Many(Arc::new(BTreeSet::from([first, ById::new(entry)])));
            }
            EntrySet::Many(set) => {
                Arc::make_mut(set).replace(ById::new(entry));
            }
        }
    }

    /// Removes the entry with id `id`; returns whether the set is now empty.
    pub(crate) fn remove(&mut self, id: &EntryId) -> bool {
        match self {
            EntrySet::One(only) => &only.id == id,
            EntrySet::Many(set) => {
                let probe = IdProbe::new(id);
                if !set.contains(probe.key()) {
                    return false;
                }
                if set.len() == 2 {
                    if let Some(last) = set.iter().find(|e| e.entry.id != *id) {
                        *self = EntrySet::One(last.entry.clone());
                    }
                } else {
                    Arc::make_mut(set).remove(probe.key());
                }
                false
            }
        }
    }

    /// The entries, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RegistrationEntry> {
        let (one, many) = match self {
            EntrySet::One(entry) => (Some(entry.as_ref()), None),
            EntrySet::Many(set) => (None, Some(set.iter().map(|e| e.entry.as_ref()))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, hint: &str) -> Arc<RegistrationEntry> {
        let mut e = crate::server::registry::tests::entry(
            "spiffe://example.org/w",
            "spiffe://example.org/spire/agent/a",
            &["unix:uid:1"],
        );
        e.id = EntryId::new(id).unwrap();
        e.hint = hint.into();
        Arc::new(e)
    }

    fn ids(set: &EntrySet) -> Vec<(&str, &str)> {
        set.iter()
            .map(|e| (e.id.as_str(), e.hint.as_str()))
            .collect()
    }

    #[test]
    fn grows_replaces_and_shrinks_in_id_order() {
        let mut set = EntrySet::One(entry("b", "1"));
        set.insert(&entry("b", "2"));
        assert!(matches!(set, EntrySet::One(_)));
        assert_eq!(ids(&set), [("b", "2")], "same id: replaced");
        // Ids sharing their first eight bytes order by the rest.
        for (id, hint) in [
            ("c", "1"),
            ("a", "1"),
            ("abcdefgh-2", "1"),
            ("abcdefgh-1", "1"),
        ] {
            set.insert(&entry(id, hint));
        }
        set.insert(&entry("c", "2"));
        assert_eq!(
            ids(&set),
            [
                ("a", "1"),
                ("abcdefgh-1", "1"),
                ("abcdefgh-2", "1"),
                ("b", "2"),
                ("c", "2")
            ]
        );
        for id in ["a", "c", "abcdefgh-1", "abcdefgh-2"] {
            assert!(!set.remove(&EntryId::new(id).unwrap()));
        }
        assert!(matches!(&set, EntrySet::One(only) if only.id.as_str() == "b"));
        assert!(
            !set.remove(&EntryId::new("x").unwrap()),
            "removing an absent id leaves it"
        );
        assert!(
            set.remove(&EntryId::new("b").unwrap()),
            "the last id empties the set"
        );
    }

    #[test]
    fn sorted_gathers_become_sets() {
        assert!(EntrySet::from_sorted(vec![]).is_none());
        let one = EntrySet::from_sorted(vec![ById::new(&entry("a", ""))]).unwrap();
        assert!(matches!(one, EntrySet::One(_)));
        let many =
            EntrySet::from_sorted(["a", "b", "c"].map(|i| ById::new(&entry(i, ""))).to_vec())
                .unwrap();
        assert_eq!(ids(&many), [("a", ""), ("b", ""), ("c", "")]);
    }
}
