//! [`IdSet`]: the entry ids under one index key. Most keys (a SPIFFE ID, a uniqueness key)
//! name one entry, so the common case holds it inline instead of allocating a tree.

use std::collections::BTreeSet;

use tessera_identity::EntryId;

/// A set of entry ids, in id order.
#[derive(Clone, Debug)]
pub(crate) enum IdSet {
    /// Exactly one id.
    One(EntryId),
    /// Two or more ids.
    Many(BTreeSet<EntryId>),
}

impl IdSet {
    /// Adds `id`.
    pub(crate) fn insert(&mut self, id: EntryId) {
        match self {
            IdSet::One(only) if *only == id => {}
            IdSet::One(only) => {
                let first = only.clone();
                *self = IdSet::Many(BTreeSet::from([first, id]));
            }
            IdSet::Many(set) => {
                set.insert(id);
            }
        }
    }

    /// Removes `id`; returns whether the set is now empty.
    pub(crate) fn remove(&mut self, id: &EntryId) -> bool {
        match self {
            IdSet::One(only) => only == id,
            IdSet::Many(set) => {
                set.remove(id);
                if set.len() == 1 {
                    if let Some(last) = set.pop_first() {
                        *self = IdSet::One(last);
                    }
                }
                false
            }
        }
    }

    /// The ids, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &EntryId> {
        let (one, many) = match self {
            IdSet::One(id) => (Some(id), None),
            IdSet::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EntryId {
        EntryId::new(s).unwrap()
    }

    #[test]
    fn grows_and_shrinks_in_order() {
        let mut set = IdSet::One(id("b"));
        set.insert(id("b"));
        assert!(matches!(set, IdSet::One(_)));
        set.insert(id("c"));
        set.insert(id("a"));
        let got: Vec<_> = set.iter().map(EntryId::as_str).collect();
        assert_eq!(got, ["a", "b", "c"]);
        assert!(!set.remove(&id("a")));
        assert!(!set.remove(&id("c")));
        assert!(matches!(&set, IdSet::One(only) if only.as_str() == "b"));
        assert!(!set.remove(&id("x")), "removing an absent id leaves it");
        assert!(set.remove(&id("b")), "the last id empties the set");
    }
}
