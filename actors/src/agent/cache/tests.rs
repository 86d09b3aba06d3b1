//! Given/when/then tests of the agent cache.

use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

use super::*;

fn entry(id: &str, parent: &str, revision: u64) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new(id).unwrap(),
        spiffe_id: SpiffeId::new(&format!("spiffe://example.org/{id}")).unwrap(),
        parent_id: SpiffeId::new(parent).unwrap(),
        selectors: SelectorSet::parse_all(["unix:uid:1000"]).unwrap(),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: vec![],
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        created_at: 0,
        revision,
    }
}

const AGENT: &str = "spiffe://example.org/spire/agent/join_token/t";

fn svid(revision: u64) -> StoredSvid {
    StoredSvid {
        cert_chain: vec![vec![1]],
        key_pkcs8: vec![2],
        not_before: 0,
        not_after: 3_600,
        entry_revision: revision,
    }
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

#[test]
fn snapshot_replaces_the_view_and_drops_svids_of_vanished_entries() {
    let mut c = Cache::default();
    assert!(c.apply(SyncMessage::Snapshot {
        seq: 5,
        entries: vec![entry("a", AGENT, 0), entry("b", AGENT, 0)],
        bundles: vec![]
    }));
    c.store_svid(EntryId::new("a").unwrap(), svid(0));
    c.store_svid(EntryId::new("b").unwrap(), svid(0));
    assert!(c.apply(SyncMessage::Snapshot {
        seq: 9,
        entries: vec![entry("b", AGENT, 0)],
        bundles: vec![]
    }));
    assert_eq!(c.cursor, 9);
    assert_eq!(
        c.svids.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
    // The same snapshot again changes nothing workloads see.
    let g = c.generation;
    assert!(!c.apply(SyncMessage::Snapshot {
        seq: 10,
        entries: vec![entry("b", AGENT, 0)],
        bundles: vec![]
    }));
    assert_eq!(c.generation, g);
}

#[test]
fn changes_and_checkpoints_fold_in_order() {
    let mut c = Cache::default();
    c.apply(SyncMessage::Snapshot {
        seq: 1,
        entries: vec![],
        bundles: vec![],
    });
    assert!(c.apply(SyncMessage::Upsert {
        seq: 2,
        entry: entry("a", AGENT, 0)
    }));
    assert!(
        !c.apply(SyncMessage::Upsert {
            seq: 2,
            entry: entry("a", AGENT, 0)
        }),
        "idempotent"
    );
    assert_eq!(c.cursor, 1, "changes do not move the cursor");
    assert!(!c.apply(SyncMessage::Checkpoint { seq: 2 }));
    assert_eq!(c.cursor, 2);
    c.store_svid(EntryId::new("a").unwrap(), svid(0));
    assert!(c.apply(SyncMessage::Remove {
        seq: 3,
        id: EntryId::new("a").unwrap()
    }));
    assert!(c.svids.is_empty());
    assert!(!c.apply(SyncMessage::Remove {
        seq: 3,
        id: EntryId::new("a").unwrap()
    }));
}

#[test]
fn served_snapshot_hides_node_aliases_and_svids_of_older_revisions() {
    let mut c = Cache::default();
    let alias = entry("alias", "spiffe://example.org/spire/server", 0);
    c.apply(SyncMessage::Snapshot {
        seq: 1,
        entries: vec![entry("a", AGENT, 1), alias],
        bundles: vec![],
    });
    c.store_svid(EntryId::new("a").unwrap(), svid(0));
    c.store_svid(EntryId::new("alias").unwrap(), svid(0));
    let s = c.snapshot(&td());
    assert!(
        s.identities.is_empty(),
        "node aliases are not served to workloads, and an SVID signed for revision 0 does not \
         serve revision 1: {:?}",
        s.identities
    );
    let (due, _) =
        crate::agent::rotation::due(&c, 0, &crate::agent::rotation::RotationSettings::default());
    assert_eq!(due, vec![EntryId::new("a").unwrap()]);
    c.store_svid(EntryId::new("a").unwrap(), svid(1));
    let s = c.snapshot(&td());
    assert_eq!(s.identities.len(), 1);
    assert_eq!(s.identities[0].entry.id.as_str(), "a");
    assert!(s.identities[0].svid.is_some());
    let (due, next) =
        crate::agent::rotation::due(&c, 10, &crate::agent::rotation::RotationSettings::default());
    assert!(due.is_empty());
    assert!(next.is_some_and(|n| (1_440..=2_160).contains(&n)));
}

#[test]
fn evicting_svids_takes_them_out_of_the_served_snapshot_and_entries_stay_matchable() {
    let mut c = Cache::default();
    c.apply(SyncMessage::Snapshot {
        seq: 1,
        entries: vec![entry("a", AGENT, 0), entry("b", AGENT, 0)],
        bundles: vec![],
    });
    c.store_svid(EntryId::new("a").unwrap(), svid(0));
    c.store_svid(EntryId::new("b").unwrap(), svid(0));
    let generation = c.generation;
    assert!(c.evict_svids(&[EntryId::new("a").unwrap()]));
    assert!(c.generation > generation, "workloads see the change");
    let s = c.snapshot(&td());
    assert_eq!(
        s.identities
            .iter()
            .map(|i| i.entry.id.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
    assert!(
        !c.evict_svids(&[EntryId::new("a").unwrap()]),
        "already gone"
    );
    let uid = SelectorSet::parse_all(["unix:uid:1000", "unix:gid:0"]).unwrap();
    assert_eq!(
        c.matching(&uid, 0).len(),
        2,
        "matching ignores whether an SVID is held"
    );
    let other = SelectorSet::parse_all(["unix:uid:1"]).unwrap();
    assert!(c.matching(&other, 0).is_empty());
}

// === forced rotation ===

fn chain_svid(chain: Vec<Vec<u8>>) -> StoredSvid {
    StoredSvid {
        cert_chain: chain,
        ..svid(0)
    }
}

fn eid(id: &str) -> EntryId {
    EntryId::new(id).unwrap()
}

/// A cache with entries a, b, c; a and b signed by `old`, c by `new`; the bundle holds both.
fn signed_by_two_cas(
    old: &crate::agent::taint::test_pki::TestCa,
    new: &crate::agent::taint::test_pki::TestCa,
) -> Cache {
    use crate::agent::taint::test_pki::bundle;
    let mut c = Cache::default();
    c.apply(SyncMessage::Snapshot {
        seq: 1,
        entries: vec![
            entry("a", AGENT, 0),
            entry("b", AGENT, 0),
            entry("c", AGENT, 0),
        ],
        bundles: vec![bundle(&[old, new], &[])],
    });
    for (id, ca) in [("a", old), ("b", old), ("c", new)] {
        let spiffe = format!("spiffe://example.org/{id}");
        c.store_svid(eid(id), chain_svid(ca.chain(&spiffe, &[])));
    }
    c
}

#[test]
fn given_svids_of_a_ca_when_it_is_tainted_then_they_and_only_they_must_be_resigned() {
    use crate::agent::taint::test_pki::{bundle, TestCa};
    let (old, new) = (TestCa::root("old"), TestCa::root("new"));
    let mut c = signed_by_two_cas(&old, &new);
    assert_eq!(c.resign_pending(), 0, "nothing tainted yet");

    let g = c.generation;
    assert!(c.apply(SyncMessage::BundleUpdated {
        seq: 2,
        bundle: bundle(&[&old, &new], &[&old]),
    }));
    assert!(
        c.generation > g,
        "a taint is a change workloads' bundles see"
    );
    assert!(c.needs_resign(&eid("a")) && c.needs_resign(&eid("b")));
    assert!(!c.needs_resign(&eid("c")));
    let (due, _) =
        crate::agent::rotation::due(&c, 10, &crate::agent::rotation::RotationSettings::default());
    assert_eq!(due, vec![eid("a"), eid("b")], "due now, not at half-life");

    // Re-signed by the new CA: it leaves the set.
    c.store_svid(
        eid("a"),
        chain_svid(new.chain("spiffe://example.org/a", &[])),
    );
    assert!(!c.needs_resign(&eid("a")));
    // Signed by the tainted CA again: it stays (the core backs off).
    c.store_svid(
        eid("b"),
        chain_svid(old.chain("spiffe://example.org/b", &[])),
    );
    assert!(c.needs_resign(&eid("b")));
    // Evicted or removed: it leaves the set.
    assert!(c.evict_svids(&[eid("b")]));
    assert_eq!(c.resign_pending(), 0);
}

#[test]
fn given_a_revoked_ca_then_svids_still_signed_by_it_must_be_resigned() {
    use crate::agent::taint::test_pki::{bundle, TestCa};
    let (old, new) = (TestCa::root("old"), TestCa::root("new"));
    let mut c = signed_by_two_cas(&old, &new);
    assert!(c.apply(SyncMessage::BundleUpdated {
        seq: 2,
        bundle: bundle(&[&new], &[]),
    }));
    assert_eq!(
        (c.needs_resign(&eid("a")), c.needs_resign(&eid("c"))),
        (true, false)
    );
    assert!(c.apply(SyncMessage::Remove {
        seq: 3,
        id: eid("a")
    }));
    assert_eq!(c.resign_pending(), 1, "b only");
}

#[test]
fn the_resign_set_is_not_stored_and_is_rebuilt_from_a_marked_bundle() {
    use crate::agent::taint::test_pki::{bundle, TestCa};
    let (old, new) = (TestCa::root("old"), TestCa::root("new"));
    let mut c = signed_by_two_cas(&old, &new);
    let marked = bundle(&[&old, &new], &[&old]);
    c.apply(SyncMessage::BundleUpdated {
        seq: 2,
        bundle: marked.clone(),
    });
    assert_eq!(c.resign_pending(), 2);

    // Written and read back (as the agent's cache file): bundles lose their marks, and the
    // set is empty and stays so on a refresh.
    let bytes = tessera_eventlog::typed::encode_state(&c).unwrap();
    let mut back: Cache = tessera_eventlog::typed::decode_state(0, &bytes).unwrap();
    back.refresh_resign();
    assert_eq!(back.resign_pending(), 0);
    // The server's resume sends the marked bundle again: a change, and the set is back.
    assert!(back.apply(SyncMessage::BundleUpdated {
        seq: 2,
        bundle: marked.clone(),
    }));
    assert_eq!(back.resign_pending(), 2);
    // The same bundle again changes nothing; a snapshot with it keeps the set.
    assert!(!back.apply(SyncMessage::BundleUpdated {
        seq: 3,
        bundle: marked.clone(),
    }));
    let entries = back.entries.values().cloned().collect();
    back.apply(SyncMessage::Snapshot {
        seq: 4,
        entries,
        bundles: vec![marked],
    });
    assert_eq!(back.resign_pending(), 2);
    // The bundle removed: nothing to judge against, nothing marked.
    assert!(back.apply(SyncMessage::BundleRemoved {
        seq: 5,
        trust_domain: td(),
    }));
    assert_eq!(back.resign_pending(), 0);
}
