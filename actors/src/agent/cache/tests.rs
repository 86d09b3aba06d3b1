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
