//! Given/when/then tests of the SVID cache policy.

use tessera_identity::{RegistrationEntry, SelectorSet, SpiffeId};

use super::*;
use crate::agent::cache::StoredSvid;
use crate::agent::server_client::SyncMessage;

const AGENT: &str = "spiffe://example.org/spire/agent/join_token/t";

fn id(n: u32) -> EntryId {
    EntryId::new(&format!("e{n:03}")).unwrap()
}

fn entry(n: u32, revision: u64) -> RegistrationEntry {
    RegistrationEntry {
        id: id(n),
        spiffe_id: SpiffeId::new(&format!("spiffe://example.org/w{n}")).unwrap(),
        parent_id: SpiffeId::new(AGENT).unwrap(),
        selectors: SelectorSet::parse_all([format!("unix:uid:{n}").as_str()]).unwrap(),
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

/// Valid from 0 to 3,600: renewal falls between 1,440 and 2,160.
fn svid(revision: u64) -> StoredSvid {
    StoredSvid {
        cert_chain: vec![vec![1]],
        key_pkcs8: vec![2],
        not_before: 0,
        not_after: 3_600,
        entry_revision: revision,
    }
}

/// A view of `n` entries, SVIDs for `signed`.
fn cache(n: u32, signed: impl IntoIterator<Item = u32>) -> Cache {
    let mut c = Cache::default();
    c.apply(SyncMessage::Snapshot {
        seq: 1,
        entries: (0..n).map(|i| entry(i, 0)).collect(),
        bundles: vec![],
    });
    for i in signed {
        c.store_svid(id(i), svid(0));
    }
    c
}

fn size(max: usize) -> RotationSettings {
    RotationSettings {
        x509_svid_cache_max_size: max,
        ..RotationSettings::default()
    }
}

fn ids(v: impl IntoIterator<Item = u32>) -> Vec<EntryId> {
    v.into_iter().map(id).collect()
}

fn none() -> HashSet<EntryId> {
    HashSet::new()
}

#[test]
fn given_an_empty_cache_then_only_the_cache_size_is_signed_eagerly_in_id_order() {
    let c = cache(50, []);
    let p = plan(&c, &Usage::default(), &none(), 10, &size(5));
    assert_eq!(p.bulk, ids(0..5));
    assert!(p.on_demand.is_empty() && p.evict.is_empty());
    assert_eq!(p.next, None);
}

#[test]
fn given_a_view_smaller_than_the_cache_then_everything_is_signed() {
    let c = cache(3, []);
    let p = plan(
        &c,
        &Usage::default(),
        &none(),
        10,
        &RotationSettings::default(),
    );
    assert_eq!(p.bulk, ids(0..3));
}

#[test]
fn given_size_zero_then_nothing_is_signed_until_a_workload_holds_an_entry() {
    let c = cache(10, []);
    let mut usage = Usage::default();
    assert_eq!(plan(&c, &usage, &none(), 10, &size(0)), Plan::default());
    usage.hold(&id(7), 10);
    let p = plan(&c, &usage, &none(), 10, &size(0));
    assert_eq!(p.on_demand, ids([7]));
    assert!(p.bulk.is_empty());
}

#[test]
fn given_a_full_cache_when_a_workload_holds_an_uncached_entry_then_it_is_signed_on_demand() {
    let c = cache(50, 0..5);
    let mut usage = Usage::default();
    usage.hold(&id(40), 10);
    let p = plan(&c, &usage, &none(), 10, &size(5));
    assert_eq!(p.on_demand, ids([40]));
    assert!(
        p.bulk.is_empty(),
        "no room left for eager signing: {:?}",
        p.bulk
    );
    assert!(p.evict.is_empty(), "nothing to evict before it is signed");
    assert!(p.next.is_some_and(|n| (1_440..=2_160).contains(&n)));
}

#[test]
fn given_a_cache_over_its_size_then_the_least_recently_used_unheld_svids_are_evicted() {
    // Seven SVIDs, size 5: two must go.
    let c = cache(50, 0..7);
    let mut usage = Usage::default();
    // 0 and 1 were never used (oldest); 2 used at 5; 3..7 used later.
    usage.touch(&id(2), 5);
    for i in 3..7 {
        usage.touch(&id(i), 20 + i64::from(i));
    }
    // 0 is held by an open stream: never evicted, although never "used" since.
    usage.hold(&id(0), 1);
    let p = plan(&c, &usage, &none(), 30, &size(5));
    assert_eq!(p.evict, ids([1, 2]));
    assert!(p.bulk.is_empty() && p.on_demand.is_empty());
}

#[test]
fn given_more_held_entries_than_the_size_then_none_is_evicted_the_limit_is_soft() {
    let c = cache(50, 0..8);
    let mut usage = Usage::default();
    for i in 0..8 {
        usage.hold(&id(i), 1);
    }
    let p = plan(&c, &usage, &none(), 10, &size(5));
    assert!(p.evict.is_empty());
    assert!(p.bulk.is_empty(), "no eager signing over the size");
}

#[test]
fn given_a_released_entry_then_it_becomes_evictable_by_its_last_use() {
    let c = cache(50, 0..6);
    let mut usage = Usage::default();
    for i in 0..6 {
        usage.hold(&id(i), 10 + i64::from(i));
    }
    let p = plan(&c, &usage, &none(), 100, &size(5));
    assert!(p.evict.is_empty(), "all six held: {:?}", p.evict);
    usage.release(&id(5), 100);
    let p = plan(&c, &usage, &none(), 100, &size(5));
    assert_eq!(p.evict, ids([5]), "the only one no stream holds");
    for i in 0..5 {
        usage.release(&id(i), 50);
    }
    let p = plan(&c, &usage, &none(), 100, &size(5));
    assert_eq!(
        p.evict,
        ids([0]),
        "ties at 50 broken by id; 5 was used last"
    );
}

#[test]
fn given_svids_in_flight_then_they_are_neither_planned_nor_evicted_and_count_against_the_room() {
    let c = cache(50, 0..6);
    let in_flight: HashSet<EntryId> = [id(0), id(10), id(11)].into_iter().collect();
    let p = plan(&c, &Usage::default(), &in_flight, 10, &size(5));
    assert!(!p.evict.contains(&id(0)));
    assert_eq!(p.evict.len(), 1);
    // Renewing SVID 0 and signing 10 and 11 are on their way: no eager signing on top.
    assert!(p.bulk.is_empty());
    let p = plan(&c, &Usage::default(), &in_flight, 10, &size(10));
    assert_eq!(p.bulk, ids([6, 7]), "10 - 6 kept - 2 pending = 2");
}

#[test]
fn given_due_and_stale_svids_then_held_ones_that_cannot_be_served_go_on_demand() {
    let mut c = cache(10, 0..4);
    // Entry 1 changed: its SVID (revision 0) no longer serves it.
    c.apply(SyncMessage::Upsert {
        seq: 2,
        entry: entry(1, 1),
    });
    c.apply(SyncMessage::Upsert {
        seq: 3,
        entry: entry(2, 1),
    });
    let mut usage = Usage::default();
    usage.hold(&id(1), 1);
    // At 2,200 every SVID is past renewal; at 3,600 they have expired.
    let p = plan(&c, &usage, &none(), 2_200, &size(4));
    assert_eq!(p.on_demand, ids([1]), "held and stale: urgent");
    assert_eq!(p.bulk, ids([0, 2, 3]), "renewals and the unheld stale one");
    assert_eq!(p.next, None);
    let p = plan(&c, &usage, &none(), 3_600, &size(4));
    assert_eq!(p.on_demand, ids([1]));
    usage.hold(&id(3), 3_600);
    let p = plan(&c, &usage, &none(), 3_600, &size(4));
    assert_eq!(p.on_demand, ids([1, 3]), "held and expired: urgent");
}

#[test]
fn given_fresh_svids_then_nothing_is_due_and_next_is_the_earliest_renewal() {
    let c = cache(4, 0..4);
    let p = plan(&c, &Usage::default(), &none(), 100, &size(4));
    assert!(p.bulk.is_empty() && p.on_demand.is_empty() && p.evict.is_empty());
    let earliest = (0..4)
        .map(|i| renew_at(&svid(0), &size(4), id(i).as_str().as_bytes()))
        .min();
    assert_eq!(p.next, earliest);
}

#[test]
fn given_vanished_entries_then_usage_forgets_them_unless_held() {
    let c = cache(3, []);
    let mut usage = Usage::default();
    usage.touch(&id(1), 1);
    usage.touch(&id(9), 1);
    usage.hold(&id(8), 1);
    usage.forget_vanished(&c);
    assert_eq!(usage.last_used(&id(1)), Some(1));
    assert_eq!(usage.last_used(&id(9)), None);
    assert!(usage.is_held(&id(8)));
    // A held entry no longer in view is not signed.
    assert!(plan(&c, &usage, &none(), 1, &size(0)).on_demand.is_empty());
}

#[test]
fn given_a_large_view_and_a_full_cache_then_untouched_entries_are_not_planned() {
    let c = cache(20_000, 0..100);
    let mut usage = Usage::default();
    usage.hold(&id(150), 1);
    let p = plan(&c, &usage, &none(), 10, &size(100));
    assert_eq!(p.on_demand, ids([150]));
    assert!(p.bulk.is_empty() && p.evict.is_empty());
}

#[test]
fn given_more_due_than_a_batch_then_bulk_holds_one_batch_renewals_first() {
    let c = cache(50, 0..10);
    let settings = RotationSettings {
        batch: 4,
        ..size(30)
    };
    // At 2,200 the ten SVIDs are due; twenty more entries would fit in the cache.
    let p = plan(&c, &Usage::default(), &none(), 2_200, &settings);
    assert_eq!(p.bulk, ids(0..4));
    let p = plan(&c, &Usage::default(), &none(), 100, &settings);
    assert_eq!(p.bulk, ids(10..14), "nothing due: the fill, a batch of it");
}

#[test]
fn given_a_tainted_ca_then_its_svids_are_due_now_a_batch_per_round_held_or_not() {
    use crate::agent::taint::test_pki::{bundle, TestCa};
    let (old, new) = (TestCa::root("old"), TestCa::root("new"));
    let mut c = cache(6, []);
    for i in 0..6 {
        let ca = if i < 5 { &old } else { &new };
        let chain = ca.chain(&format!("spiffe://example.org/w{i}"), &[]);
        c.store_svid(
            id(i),
            StoredSvid {
                cert_chain: chain,
                ..svid(0)
            },
        );
    }
    let settings = RotationSettings {
        batch: 2,
        ..size(10)
    };
    // Fresh SVIDs at 100: nothing due.
    assert!(plan(&c, &Usage::default(), &none(), 100, &settings)
        .bulk
        .is_empty());

    c.apply(SyncMessage::BundleUpdated {
        seq: 2,
        bundle: bundle(&[&old, &new], &[&old]),
    });
    let mut usage = Usage::default();
    usage.hold(&id(3), 100);
    let p = plan(&c, &usage, &none(), 100, &settings);
    assert_eq!(p.bulk, ids(0..2), "a batch, in id order");
    assert!(p.on_demand.is_empty(), "still servable: no on-demand round");
    // The next round (0 and 1 in flight) takes the next batch, the held one among them.
    let in_flight: HashSet<EntryId> = ids(0..2).into_iter().collect();
    let p = plan(&c, &usage, &in_flight, 100, &settings);
    assert_eq!(p.bulk, ids(2..4));
    // Never the one of the new CA; its renewal stays at half-life.
    let in_flight: HashSet<EntryId> = ids(0..5).into_iter().collect();
    let p = plan(&c, &usage, &in_flight, 100, &settings);
    assert!(p.bulk.is_empty());
    assert!(p.next.is_some_and(|n| (1_440..=2_160).contains(&n)));
}
