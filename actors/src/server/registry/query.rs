//! Reading the registry: SPIRE's `ListEntries` filters and pagination, and counts.

use std::collections::BTreeSet;

use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

use super::{EntrySet, IndexLevel, Registry};

/// How a set in a filter is compared with an entry's set (SPIRE's `MatchBehavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatchBehavior {
    /// The entry's set equals the filter's.
    #[default]
    Exact,
    /// The entry's set is a subset of the filter's.
    Subset,
    /// The entry's set is a superset of the filter's.
    Superset,
    /// The sets share at least one element.
    Any,
}

/// Filters of `ListEntries`/`CountEntries`; every given one must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Entries with this SPIFFE ID.
    pub by_spiffe_id: Option<SpiffeId>,
    /// Entries with this parent ID.
    pub by_parent_id: Option<SpiffeId>,
    /// Entries whose selectors match.
    pub by_selectors: Option<(SelectorSet, MatchBehavior)>,
    /// Entries whose `federates_with` match.
    pub by_federates_with: Option<(Vec<TrustDomain>, MatchBehavior)>,
    /// Entries with this hint.
    pub by_hint: Option<String>,
    /// Entries with this `downstream` flag.
    pub by_downstream: Option<bool>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPage {
    /// The entries, in id order.
    pub entries: Vec<RegistrationEntry>,
    /// The token for the next page; `None` when this is the last.
    pub next_page_token: Option<EntryId>,
}

fn set_matches<T: Ord + Clone>(entry: &[T], filter: &[T], how: MatchBehavior) -> bool {
    let e: BTreeSet<&T> = entry.iter().collect();
    let f: BTreeSet<&T> = filter.iter().collect();
    match how {
        MatchBehavior::Exact => e == f,
        MatchBehavior::Subset => e.is_subset(&f),
        MatchBehavior::Superset => e.is_superset(&f),
        MatchBehavior::Any => !e.is_disjoint(&f),
    }
}

impl EntryFilter {
    /// Whether `e` passes every filter.
    pub fn matches(&self, e: &RegistrationEntry) -> bool {
        self.by_spiffe_id
            .as_ref()
            .is_none_or(|id| &e.spiffe_id == id)
            && self
                .by_parent_id
                .as_ref()
                .is_none_or(|id| &e.parent_id == id)
            && self
                .by_selectors
                .as_ref()
                .is_none_or(|(s, how)| set_matches(e.selectors.as_slice(), s.as_slice(), *how))
            && self
                .by_federates_with
                .as_ref()
                .is_none_or(|(tds, how)| set_matches(&e.federates_with, tds, *how))
            && self.by_hint.as_ref().is_none_or(|h| &e.hint == h)
            && self.by_downstream.is_none_or(|d| e.downstream == d)
    }
}

impl Registry {
    /// Candidates for `filter` from the narrowest index it allows, in id order.
    fn candidates<'a>(
        &'a self,
        filter: &EntryFilter,
    ) -> Box<dyn Iterator<Item = &'a RegistrationEntry> + 'a> {
        let from_index =
            |set: Option<&'a EntrySet>| -> Box<dyn Iterator<Item = &'a RegistrationEntry> + 'a> {
                Box::new(self.lookup(set))
            };
        if self.level < IndexLevel::Full {
            return Box::new(self.iter());
        }
        if let Some(id) = &filter.by_spiffe_id {
            return from_index(self.by_spiffe_id.get(id));
        }
        if let Some(id) = &filter.by_parent_id {
            return from_index(self.by_parent.get(id));
        }
        if let Some((selectors, MatchBehavior::Exact | MatchBehavior::Superset)) =
            &filter.by_selectors
        {
            // Every match holds the filter's first selector.
            if let Some(first) = selectors.iter().next() {
                return from_index(self.by_selector.get(first));
            }
        }
        Box::new(self.iter())
    }

    /// A page of entries passing `filter`, after `page_token`, at most `page_size` (0: all).
    pub fn list(
        &self,
        filter: &EntryFilter,
        page_size: usize,
        page_token: Option<&EntryId>,
    ) -> EntryPage {
        let mut entries = Vec::new();
        let mut next_page_token = None;
        for e in self.candidates(filter) {
            if page_token.is_some_and(|t| &e.id <= t) || !filter.matches(e) {
                continue;
            }
            if page_size > 0 && entries.len() == page_size {
                next_page_token = entries.last().map(|l: &RegistrationEntry| l.id.clone());
                break;
            }
            entries.push(e.clone());
        }
        EntryPage {
            entries,
            next_page_token,
        }
    }

    /// How many entries pass `filter`.
    pub fn count(&self, filter: &EntryFilter) -> usize {
        self.candidates(filter)
            .filter(|e| filter.matches(e))
            .count()
    }
}
