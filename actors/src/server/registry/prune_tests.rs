//! Expired entries: found through the expiry index, pruned by events in bounded batches, the
//! fold idempotent and blind to prunes that no longer apply.

use tessera_identity::{EntryId, EntryLimits, TrustDomain};

use super::tests::entry;
use super::*;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::events::ServerEvent;

const AGENT: &str = "spiffe://example.org/spire/agent/x509pop/n1";

fn at(now: i64) -> Context {
    Context {
        now,
        random: [0; 16],
    }
}

fn expiring(n: usize, expires_at: Option<i64>) -> RegistrationEntry {
    let mut e = entry(
        &format!("spiffe://example.org/w/{n}"),
        AGENT,
        &["unix:uid:1"],
    );
    e.id = EntryId::new(&format!("e{n:05}")).unwrap();
    e.expires_at = expires_at;
    e
}

fn registry(level: IndexLevel, entries: &[RegistrationEntry]) -> Registry {
    let mut r = Registry::with_level(level);
    r.configure(RegistrySettings {
        trust_domain: TrustDomain::new("example.org").unwrap(),
        limits: EntryLimits::default(),
        max_entries: 1_000_000,
    });
    for e in entries {
        r.apply(&ServerEvent::EntryCreated(e.clone()));
    }
    r
}

fn pruned(events: &[ServerEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|e| match e {
            ServerEvent::EntryExpired { id, .. } => id.as_str(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn prune_emits_an_event_per_expired_entry_and_the_fold_removes_them() {
    let entries = [
        expiring(1, Some(200)),
        expiring(2, Some(100)),
        expiring(3, None),
        expiring(4, Some(150)),
    ];
    for level in [IndexLevel::Table, IndexLevel::Full] {
        let mut r = registry(level, &entries);
        assert_eq!(r.next_due(), Some(100));
        assert!(r.housekeeping(99).is_none(), "nothing is due before 100");
        assert_eq!(r.housekeeping(150), Some(RegistryCommand::PruneExpired));
        let d = r.decide(RegistryCommand::PruneExpired, &at(150)).unwrap();
        assert_eq!(pruned(&d.events), vec!["e00002", "e00004"], "{level:?}");
        assert_eq!(
            d.events[0],
            ServerEvent::EntryExpired {
                id: EntryId::new("e00002").unwrap(),
                expires_at: 100
            }
        );
        for e in &d.events {
            r.apply(e);
        }
        assert_eq!(r.len(), 2);
        assert_eq!(r.next_due(), Some(200));
        // Folding the same prune again (another server's, or a replay) changes nothing.
        let before = r.iter().cloned().collect::<Vec<_>>();
        for e in &d.events {
            r.apply(e);
        }
        assert_eq!(r.iter().cloned().collect::<Vec<_>>(), before);
        assert!(r.housekeeping(150).is_none());
    }
}

#[test]
fn a_prune_of_an_entry_extended_since_leaves_it() {
    let mut r = registry(IndexLevel::Full, &[expiring(1, Some(100))]);
    let mut extended = expiring(1, Some(1_000));
    extended.revision = 1;
    r.apply(&ServerEvent::EntryUpdated(extended));
    assert_eq!(r.next_due(), Some(1_000), "the index follows the update");
    r.apply(&ServerEvent::EntryExpired {
        id: EntryId::new("e00001").unwrap(),
        expires_at: 100,
    });
    assert_eq!(r.len(), 1);
}

#[test]
fn prunes_are_bounded_batches() {
    let entries: Vec<_> = (0..PRUNE_BATCH + 5)
        .map(|n| expiring(n, Some(100)))
        .collect();
    let mut r = registry(IndexLevel::Full, &entries);
    let first = r.decide(RegistryCommand::PruneExpired, &at(100)).unwrap();
    assert_eq!(first.events.len(), PRUNE_BATCH);
    for e in &first.events {
        r.apply(e);
    }
    let second = r.decide(RegistryCommand::PruneExpired, &at(100)).unwrap();
    assert_eq!(second.events.len(), 5);
    assert_eq!(
        second.reply,
        RegistryReply::Pruned(
            pruned(&second.events)
                .into_iter()
                .map(|s| EntryId::new(s).unwrap())
                .collect()
        )
    );
}
