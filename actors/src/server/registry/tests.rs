//! Given/when/then tests of the registry: given these events, when this command, then these
//! events (or these rejections).

use tessera_identity::{
    EntryId, EntryLimits, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain,
};

use super::*;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::events::ServerEvent;

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

pub(super) fn entry(spiffe: &str, parent: &str, selectors: &[&str]) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new("placeholder").unwrap(),
        spiffe_id: id(spiffe),
        parent_id: id(parent),
        selectors: SelectorSet::parse_all(selectors.iter().copied()).unwrap(),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: vec![],
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        created_at: 0,
        revision: 0,
    }
}

fn new(e: RegistrationEntry) -> NewEntry {
    NewEntry { id: None, entry: e }
}

fn ctx(seed: u8) -> Context {
    Context {
        now: 1_700_000_000,
        random: [seed; 16],
    }
}

fn given(events: &[ServerEvent]) -> Registry {
    let mut r = Registry::default();
    r.configure(RegistrySettings {
        trust_domain: td(),
        limits: EntryLimits::default(),
        max_entries: 5,
    });
    for e in events {
        r.apply(e);
    }
    r
}

fn created(
    r: &Registry,
    items: Vec<NewEntry>,
    seed: u8,
) -> (
    Vec<ServerEvent>,
    Vec<Result<RegistrationEntry, EntryRejection>>,
) {
    let d = r
        .decide(RegistryCommand::Create(items), &ctx(seed))
        .unwrap();
    match d.reply {
        RegistryReply::Created(results) => (d.events, results),
        other => panic!("unexpected reply {other:?}"),
    }
}

const AGENT: &str = "spiffe://example.org/spire/agent/join_token/abc";

#[test]
fn create_assigns_id_time_and_revision_and_emits_entry_created() {
    let r = given(&[]);
    let (events, results) = created(
        &r,
        vec![new(entry(
            "spiffe://example.org/web",
            AGENT,
            &["unix:uid:1000"],
        ))],
        1,
    );
    let e = results[0].clone().unwrap();
    assert_eq!(e.created_at, 1_700_000_000);
    assert_eq!(e.revision, 0);
    assert_ne!(e.id.as_str(), "placeholder");
    assert_eq!(events, vec![ServerEvent::EntryCreated(e)]);
}

#[test]
fn duplicate_of_existing_or_earlier_in_batch_is_rejected() {
    let (events, _) = created(
        &given(&[]),
        vec![new(entry(
            "spiffe://example.org/web",
            AGENT,
            &["unix:uid:1000"],
        ))],
        1,
    );
    let r = given(&events);
    let (events2, results) = created(
        &r,
        vec![
            new(entry("spiffe://example.org/web", AGENT, &["unix:uid:1000"])),
            new(entry("spiffe://example.org/db", AGENT, &["unix:uid:1001"])),
            new(entry("spiffe://example.org/db", AGENT, &["unix:uid:1001"])),
        ],
        2,
    );
    assert!(matches!(
        results[0],
        Err(EntryRejection::AlreadyExists { .. })
    ));
    assert!(results[1].is_ok());
    assert!(matches!(
        results[2],
        Err(EntryRejection::AlreadyExists { .. })
    ));
    assert_eq!(events2.len(), 1, "only the accepted item becomes an event");
}

#[test]
fn invalid_entries_are_rejected_with_the_rule() {
    let r = given(&[]);
    let (events, results) = created(
        &r,
        vec![
            new(entry("spiffe://other.org/web", AGENT, &["unix:uid:1"])),
            new(entry("spiffe://example.org/web", AGENT, &[])),
            new(entry(
                "spiffe://example.org/spire/agent/x",
                AGENT,
                &["unix:uid:1"],
            )),
        ],
        1,
    );
    assert!(events.is_empty());
    for r in results {
        assert!(matches!(r, Err(EntryRejection::Invalid(_))), "{r:?}");
    }
}

#[test]
fn caller_chosen_id_must_be_free() {
    let mut item = new(entry("spiffe://example.org/a", AGENT, &["unix:uid:1"]));
    item.id = Some(EntryId::new("my-entry").unwrap());
    let (events, results) = created(&given(&[]), vec![item.clone()], 1);
    assert_eq!(results[0].as_ref().unwrap().id.as_str(), "my-entry");
    item.entry.selectors = SelectorSet::parse_all(["unix:uid:2"]).unwrap();
    let (_, results) = created(&given(&events), vec![item], 2);
    assert!(matches!(results[0], Err(EntryRejection::IdInUse { .. })));
}

#[test]
fn registry_limit_is_enforced() {
    let items: Vec<_> = (0..7)
        .map(|i| {
            new(entry(
                &format!("spiffe://example.org/w{i}"),
                AGENT,
                &["unix:uid:1"],
            ))
        })
        .collect();
    let (events, results) = created(&given(&[]), items, 1);
    assert_eq!(events.len(), 5);
    assert!(matches!(
        results[5],
        Err(EntryRejection::RegistryFull { limit: 5 })
    ));
}

#[test]
fn update_bumps_revision_keeps_created_at_and_checks_uniqueness() {
    let (events, results) = created(
        &given(&[]),
        vec![
            new(entry("spiffe://example.org/a", AGENT, &["unix:uid:1"])),
            new(entry("spiffe://example.org/b", AGENT, &["unix:uid:2"])),
        ],
        1,
    );
    let r = given(&events);
    let a = results[0].clone().unwrap();
    let b = results[1].clone().unwrap();
    let mut a2 = a.clone();
    a2.hint = "frontend".into();
    a2.created_at = 5;
    let mut b2 = b.clone();
    b2.selectors = a.selectors.clone();
    b2.spiffe_id = a.spiffe_id.clone();
    let d = r
        .decide(RegistryCommand::Update(vec![a2, b2]), &ctx(2))
        .unwrap();
    let RegistryReply::Updated(results) = d.reply else {
        panic!()
    };
    let a2 = results[0].clone().unwrap();
    assert_eq!(
        (a2.revision, a2.created_at, a2.hint.as_str()),
        (1, a.created_at, "frontend")
    );
    assert!(matches!(
        results[1],
        Err(EntryRejection::AlreadyExists { .. })
    ));
    assert_eq!(d.events, vec![ServerEvent::EntryUpdated(a2)]);
}

#[test]
fn delete_removes_from_every_index() {
    let (events, results) = created(
        &given(&[]),
        vec![new(entry("spiffe://example.org/a", AGENT, &["unix:uid:1"]))],
        1,
    );
    let mut r = given(&events);
    let a = results[0].clone().unwrap();
    let d = r
        .decide(
            RegistryCommand::Delete(vec![a.id.clone(), a.id.clone()]),
            &ctx(2),
        )
        .unwrap();
    let RegistryReply::Deleted(results) = d.reply else {
        panic!()
    };
    assert!(results[0].is_ok());
    assert!(
        matches!(results[1], Err(EntryRejection::NotFound { .. })),
        "no double delete"
    );
    for e in &d.events {
        r.apply(e);
    }
    assert!(r.is_empty());
    assert_eq!(r.children_of(&id(AGENT)).count(), 0);
    let f = EntryFilter {
        by_selectors: Some((a.selectors.clone(), MatchBehavior::Exact)),
        ..EntryFilter::default()
    };
    assert_eq!(r.count(&f), 0);
    // The same entry can be created again.
    let (_, results) = created(
        &r,
        vec![new(entry("spiffe://example.org/a", AGENT, &["unix:uid:1"]))],
        3,
    );
    assert!(results[0].is_ok());
}

#[test]
fn filters_and_pagination_follow_spire() {
    let (events, _) = created(
        &given(&[]),
        vec![
            new(entry("spiffe://example.org/a", AGENT, &["unix:uid:1"])),
            new(entry(
                "spiffe://example.org/b",
                AGENT,
                &["unix:uid:1", "unix:gid:1"],
            )),
            new(entry(
                "spiffe://example.org/c",
                "spiffe://example.org/spire/server",
                &["x509pop:subject:cn:n"],
            )),
        ],
        1,
    );
    let r = given(&events);
    let sel = |s: &[&str], how| EntryFilter {
        by_selectors: Some((SelectorSet::parse_all(s.iter().copied()).unwrap(), how)),
        ..EntryFilter::default()
    };
    assert_eq!(r.count(&sel(&["unix:uid:1"], MatchBehavior::Exact)), 1);
    assert_eq!(r.count(&sel(&["unix:uid:1"], MatchBehavior::Superset)), 2);
    assert_eq!(
        r.count(&sel(
            &["unix:uid:1", "unix:gid:1", "unix:gid:2"],
            MatchBehavior::Subset
        )),
        2
    );
    assert_eq!(
        r.count(&sel(
            &["unix:gid:1", "x509pop:subject:cn:n"],
            MatchBehavior::Any
        )),
        2
    );
    let by_parent = EntryFilter {
        by_parent_id: Some(id(AGENT)),
        ..EntryFilter::default()
    };
    assert_eq!(r.count(&by_parent), 2);

    let all = EntryFilter::default();
    let p1 = r.list(&all, 2, None);
    assert_eq!(p1.entries.len(), 2);
    let token = p1.next_page_token.clone().expect("a second page");
    let p2 = r.list(&all, 2, Some(&token));
    assert_eq!(p2.entries.len(), 1);
    assert_eq!(p2.next_page_token, None);
    let mut ids: Vec<_> = p1
        .entries
        .iter()
        .chain(&p2.entries)
        .map(|e| e.id.clone())
        .collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "pages never repeat an entry");
}

#[test]
fn snapshot_image_round_trips_with_indexes() {
    let (events, _) = created(
        &given(&[]),
        vec![
            new(entry("spiffe://example.org/a", AGENT, &["unix:uid:1"])),
            new(entry("spiffe://example.org/b", AGENT, &["unix:uid:2"])),
        ],
        1,
    );
    let r = given(&events);
    let bytes = tessera_eventlog::typed::encode_state(&r).unwrap();
    let back: Registry = tessera_eventlog::typed::decode_state(1, &bytes).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back.children_of(&id(AGENT)).count(), 2);
    assert_eq!(
        back.count(&EntryFilter {
            by_spiffe_id: Some(id("spiffe://example.org/b")),
            ..Default::default()
        }),
        1
    );
}

#[test]
fn every_index_level_answers_like_the_full_index() {
    // Given a registry with shared parents, selectors and a repeated SPIFFE ID, built
    // incrementally (with a delete and an update on the way) ...
    let mut events = Vec::new();
    for i in 0..40u8 {
        let parent = format!("spiffe://example.org/spire/agent/n{}", i % 3);
        let selector = format!("unix:uid:{}", i % 4);
        let mut e = entry(
            &format!("spiffe://example.org/w{}", i % 30),
            &parent,
            &[&selector],
        );
        e.id = EntryId::new(&format!("e{i:02}")).unwrap();
        events.push(ServerEvent::EntryCreated(e));
    }
    events.push(ServerEvent::EntryDeleted {
        id: EntryId::new("e07").unwrap(),
    });
    let mut moved = entry("spiffe://example.org/moved", AGENT, &["unix:uid:9"]);
    moved.id = EntryId::new("e11").unwrap();
    events.push(ServerEvent::EntryUpdated(moved));
    let mut incremental = Registry::default();
    let mut table = Registry::with_level(IndexLevel::Table);
    for e in &events {
        incremental.apply(e);
        table.apply(e);
    }
    // ... when copies are indexed at every level from the unindexed fold ...
    let copies = [
        table.indexed(IndexLevel::Table),
        table.indexed(IndexLevel::Parents),
        table.indexed(IndexLevel::Full),
    ];
    // ... then every copy answers every lookup as the incrementally indexed registry does.
    let ids = |it: Box<dyn Iterator<Item = &RegistrationEntry> + '_>| -> Vec<String> {
        it.map(|e| e.id.to_string()).collect()
    };
    let parents = [
        "spiffe://example.org/spire/agent/n0",
        "spiffe://example.org/spire/agent/n2",
        AGENT,
        "spiffe://example.org/none",
    ];
    let spiffe_ids = [
        "spiffe://example.org/w1",
        "spiffe://example.org/w7",
        "spiffe://example.org/moved",
    ];
    for copy in &copies {
        assert_eq!(copy.len(), incremental.len(), "{:?}", copy.level());
        for p in parents {
            assert_eq!(
                ids(copy.children_of(&id(p))),
                ids(incremental.children_of(&id(p))),
                "children of {p} at {:?}",
                copy.level()
            );
        }
        for s in spiffe_ids {
            assert_eq!(
                ids(copy.with_spiffe_id(&id(s))),
                ids(incremental.with_spiffe_id(&id(s))),
                "entries of {s} at {:?}",
                copy.level()
            );
        }
        let filter = EntryFilter {
            by_selectors: Some((
                SelectorSet::parse_all(["unix:uid:1"]).unwrap(),
                MatchBehavior::Exact,
            )),
            ..Default::default()
        };
        assert_eq!(
            copy.list(&filter, 0, None),
            incremental.list(&filter, 0, None)
        );
    }
    assert_eq!(
        ids(incremental.with_spiffe_id(&id("spiffe://example.org/w1"))),
        ["e01", "e31"]
    );
    assert_eq!(ids(incremental.children_of(&id(AGENT))), ["e11"]);
}

#[test]
fn uniqueness_is_checked_at_every_index_level() {
    let first = entry("spiffe://example.org/a", AGENT, &["unix:uid:1"]);
    let (events, _) = created(&given(&[]), vec![new(first.clone())], 1);
    for level in [IndexLevel::Table, IndexLevel::Parents, IndexLevel::Full] {
        let r = given(&events).indexed(level);
        let (dup_events, reply) = created(&r, vec![new(first.clone())], 2);
        assert!(dup_events.is_empty(), "{level:?}");
        assert!(
            matches!(&reply[..], [Err(EntryRejection::AlreadyExists { .. })]),
            "{level:?}: {reply:?}"
        );
    }
}

#[test]
fn snapshot_chunks_decode_in_order_across_boundaries() {
    let mut r = Registry::default();
    for i in 0..10u8 {
        let mut e = entry(
            &format!("spiffe://example.org/w{i}"),
            AGENT,
            &[&format!("unix:uid:{i}")],
        );
        e.id = EntryId::new(&format!("e{i}")).unwrap();
        r.apply(&ServerEvent::EntryCreated(e));
    }
    let bytes = tessera_eventlog::typed::encode_state(&r).unwrap();
    let back: Registry = tessera_eventlog::typed::decode_state(1, &bytes).unwrap();
    assert_eq!(back.level(), IndexLevel::Table);
    let before: Vec<&RegistrationEntry> = r.iter().collect();
    let after: Vec<&RegistrationEntry> = back.iter().collect();
    assert_eq!(before, after);
    // A damaged chunk is an error, not a partial registry.
    let mut damaged = bytes.clone();
    let at = damaged.len() / 2;
    damaged.truncate(at);
    assert!(tessera_eventlog::typed::decode_state::<Registry>(1, &damaged).is_err());

    // Streamed (the chunks arrive as owned buffers, decoded as they come): the same registry.
    let stream = tessera_eventlog::SnapshotStream::from(tessera_eventlog::Snapshot {
        seq: 1,
        hash: tessera_eventlog::Digest32([0; 32]),
        data: bytes,
    });
    let streamed: Registry = tessera_eventlog::typed::decode_state_stream(stream).unwrap();
    assert_eq!(streamed.iter().collect::<Vec<_>>(), before);
}

#[test]
fn a_chunk_that_does_not_decode_fails_the_whole_image_without_hanging() {
    let good = super::Chunk(
        tessera_eventlog::typed::encode_state(&vec![Arc::new(entry(
            "spiffe://example.org/w",
            AGENT,
            &["unix:uid:1"],
        ))])
        .unwrap()
        .into(),
    );
    let bad = || super::Chunk(vec![0xff; 5].into());
    // More chunks after the bad one than the decoders and their queue hold: they are drained.
    for at in [0, 3, 39] {
        let chunks = (0..40)
            .map(|i| {
                if i == at {
                    bad()
                } else {
                    super::Chunk(good.0.clone())
                }
            })
            .collect();
        let bytes =
            tessera_eventlog::typed::encode_state(&super::RegistryImage { chunks }).unwrap();
        let err = tessera_eventlog::typed::decode_state::<Registry>(1, &bytes).unwrap_err();
        assert!(err.to_string().contains("snapshot"), "{err}");
        let stream = tessera_eventlog::SnapshotStream::from(tessera_eventlog::Snapshot {
            seq: 1,
            hash: tessera_eventlog::Digest32([0; 32]),
            data: bytes,
        });
        assert!(tessera_eventlog::typed::decode_state_stream::<Registry>(stream).is_err());
    }
}
