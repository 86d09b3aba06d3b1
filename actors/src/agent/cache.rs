//! The agent's cache: a fold of the sync stream plus the SVIDs signed for its entries. Pure;
//! persisted by the agent process so a restarted agent serves at once.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_identity::{Bundle, EntryId, RegistrationEntry, SelectorSet, TrustDomain};

use crate::agent::server_client::SyncMessage;
use crate::agent::taint::BundleIndex;
use crate::agent::view::{HeldX509Svid, Identity, IdentitySnapshot};

/// A stored SVID with its key (the cache file is 0600, under the agent's data dir).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSvid {
    /// Chain, leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// PKCS#8 DER key.
    pub key_pkcs8: Vec<u8>,
    /// Start of the useful lifetime, Unix seconds: the later of notBefore and receipt.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
    /// The entry revision it was signed for: a changed entry needs a new SVID.
    pub entry_revision: u64,
}

/// The cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// The last cursor the stream confirmed (snapshot end or checkpoint).
    pub cursor: u64,
    /// Authorised entries by id.
    pub entries: BTreeMap<EntryId, RegistrationEntry>,
    /// Bundles by trust domain (the agent's own and federated ones).
    pub bundles: BTreeMap<TrustDomain, Bundle>,
    /// SVIDs by entry id.
    pub svids: BTreeMap<EntryId, StoredSvid>,
    /// Bumped on every change that workloads can see.
    pub generation: u64,
    /// Entries whose SVID must be re-signed at once (forced rotation): it chains to a tainted
    /// authority of its trust domain's bundle, or to none the bundle holds (revoked before it
    /// was re-signed). Derived from `svids` and `bundles` on every bundle change, and for
    /// each SVID stored while its bundle has taints (one signed by a tainted CA stays in: the
    /// core backs off before asking again, see `RETRY_FAILED_AFTER`). Not stored: stored
    /// bundles carry no taint marks either; the server sends the marked bundle again on every
    /// resume and snapshot, and its arrival fills this again.
    #[serde(skip)]
    resign: BTreeSet<EntryId>,
}

impl Cache {
    /// Folds one sync message; returns whether anything workloads see changed.
    pub fn apply(&mut self, message: SyncMessage) -> bool {
        let changed = match message {
            SyncMessage::Snapshot {
                seq,
                entries,
                bundles,
            } => {
                let entries: BTreeMap<_, _> =
                    entries.into_iter().map(|e| (e.id.clone(), e)).collect();
                let bundles: BTreeMap<_, _> = bundles
                    .into_iter()
                    .map(|b| (b.trust_domain().clone(), b))
                    .collect();
                self.cursor = seq;
                self.svids.retain(|id, _| entries.contains_key(id));
                let bundles_changed = bundles != self.bundles;
                let changed = bundles_changed || entries != self.entries;
                self.entries = entries;
                self.bundles = bundles;
                if bundles_changed {
                    self.refresh_resign();
                } else {
                    let svids = &self.svids;
                    self.resign.retain(|id| svids.contains_key(id));
                }
                changed
            }
            SyncMessage::Resumed { .. } => false,
            SyncMessage::Upsert { entry, .. } => {
                let old = self.entries.insert(entry.id.clone(), entry.clone());
                old.as_ref() != Some(&entry)
            }
            SyncMessage::Remove { id, .. } => {
                self.svids.remove(&id);
                self.resign.remove(&id);
                self.entries.remove(&id).is_some()
            }
            SyncMessage::BundleUpdated { bundle, .. } => {
                let td = bundle.trust_domain().clone();
                let old = self.bundles.insert(td.clone(), bundle.clone());
                let changed = old.as_ref() != Some(&bundle);
                if changed {
                    self.refresh_resign_for(&td);
                }
                changed
            }
            SyncMessage::BundleRemoved { trust_domain, .. } => {
                let removed = self.bundles.remove(&trust_domain).is_some();
                if removed {
                    self.refresh_resign_for(&trust_domain);
                }
                removed
            }
            SyncMessage::Checkpoint { seq } => {
                self.cursor = self.cursor.max(seq);
                false
            }
        };
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Stores a freshly signed SVID; it leaves the forced-rotation set unless its bundle has
    /// taints and it chains to a tainted authority too (see [`Cache::needs_resign`]).
    pub fn store_svid(&mut self, id: EntryId, svid: StoredSvid) {
        if let Some(entry) = self.entries.get(&id) {
            let tainted = self
                .bundles
                .get(entry.spiffe_id.trust_domain())
                .filter(|b| b.has_taints())
                .is_some_and(|b| BundleIndex::new(b).judge(&svid.cert_chain).needs_resign());
            if tainted {
                self.resign.insert(id.clone());
            } else {
                self.resign.remove(&id);
            }
            self.svids.insert(id, svid);
            self.generation += 1;
        }
    }

    /// Drops the SVIDs of `ids` (evicted from the SVID cache); returns whether any was held.
    pub fn evict_svids(&mut self, ids: &[EntryId]) -> bool {
        let before = self.svids.len();
        for id in ids {
            self.svids.remove(id);
            self.resign.remove(id);
        }
        let changed = self.svids.len() != before;
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Whether the SVID of `id` must be re-signed at once (see the `resign` field: it chains
    /// to a tainted authority, or to none of its bundle's).
    pub fn needs_resign(&self, id: &EntryId) -> bool {
        self.resign.contains(id)
    }

    /// How many SVIDs must be re-signed at once.
    pub fn resign_pending(&self) -> usize {
        self.resign.len()
    }

    /// Judges every held SVID against its trust domain's bundle again (after the cache was
    /// loaded or built by hand; [`Cache::apply`] does it on every bundle change).
    pub fn refresh_resign(&mut self) {
        self.resign.clear();
        let tds: BTreeSet<TrustDomain> = self
            .svids
            .keys()
            .filter_map(|id| self.entries.get(id))
            .map(|e| e.spiffe_id.trust_domain().clone())
            .collect();
        for td in &tds {
            self.refresh_resign_for(td);
        }
    }

    /// Judges the held SVIDs of `td`'s entries against `td`'s bundle again.
    fn refresh_resign_for(&mut self, td: &TrustDomain) {
        let entries = &self.entries;
        let of_td = |id: &EntryId| {
            entries
                .get(id)
                .is_some_and(|e| e.spiffe_id.trust_domain() == td)
        };
        self.resign.retain(|id| !of_td(id));
        let Some(bundle) = self.bundles.get(td) else {
            return;
        };
        let index = BundleIndex::new(bundle);
        for (id, svid) in &self.svids {
            if of_td(id) && index.judge(&svid.cert_chain).needs_resign() {
                self.resign.insert(id.clone());
            }
        }
    }

    /// The workload entries a workload with `selectors` matches at `now` (selectors all among
    /// the workload's, not expired), SVID or not, in id order.
    pub fn matching(&self, selectors: &SelectorSet, now: i64) -> Vec<EntryId> {
        self.workload_entries()
            .filter(|e| e.selectors.is_subset_of(selectors) && !e.is_expired_at(now))
            .map(|e| e.id.clone())
            .collect()
    }

    /// Entries that are workload entries (not node aliases).
    pub fn workload_entries(&self) -> impl Iterator<Item = &RegistrationEntry> {
        self.entries.values().filter(|e| !e.is_node_alias())
    }

    /// What workloads are served, for `trust_domain` (the agent's own): the workload entries
    /// that hold an SVID signed for their current revision. Entries without one are left out
    /// (with an SVID cache smaller than the view, most are), so a snapshot costs what the
    /// cache holds, not what the view holds.
    pub fn snapshot(&self, trust_domain: &TrustDomain) -> IdentitySnapshot {
        let identities = self
            .svids
            .iter()
            .filter_map(|(id, s)| {
                let e = self.entries.get(id)?;
                (!e.is_node_alias() && s.entry_revision == e.revision).then(|| Identity {
                    entry: e.clone(),
                    svid: Some(HeldX509Svid {
                        cert_chain: s.cert_chain.clone(),
                        key_pkcs8: Arc::new(zeroize::Zeroizing::new(s.key_pkcs8.clone())),
                        not_before: s.not_before,
                        not_after: s.not_after,
                    }),
                })
            })
            .collect();
        IdentitySnapshot {
            generation: self.generation,
            identities,
            bundle: self.bundles.get(trust_domain).cloned(),
            federated: self
                .bundles
                .iter()
                .filter(|(td, _)| *td != trust_domain)
                .map(|(td, b)| (td.clone(), b.clone()))
                .collect(),
        }
    }
}
