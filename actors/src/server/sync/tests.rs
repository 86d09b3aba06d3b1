//! The incremental views must always equal views computed from scratch, and a change must
//! reach exactly the agents it concerns.

use tessera_identity::{EntryId, SelectorSet};

use super::*;
use crate::server::events::AttestedAgent;

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn entry(eid: &str, spiffe: &str, parent: &str, selectors: &[&str]) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new(eid).unwrap(),
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

fn attested(agent: &str, selectors: &[&str]) -> ServerEvent {
    ServerEvent::AgentAttested(AttestedAgent {
        id: id(agent),
        attestation_type: "x509pop".into(),
        selectors: SelectorSet::parse_all(selectors.iter().copied()).unwrap(),
        svid_serial: "1".into(),
        svid_expires_at: 0,
        attested_at: 0,
        can_reattest: true,
    })
}

const A1: &str = "spiffe://example.org/spire/agent/x509pop/a1";
const A2: &str = "spiffe://example.org/spire/agent/x509pop/a2";
const SERVER: &str = "spiffe://example.org/spire/server";

fn ids(entries: &[RegistrationEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// Applies `events` and checks, after each, that every view equals a fresh computation.
fn run(events: &[ServerEvent]) -> (SyncIndex, Vec<BTreeMap<SpiffeId, Vec<ViewChange>>>) {
    let mut index = SyncIndex::default();
    let mut all = Vec::new();
    for e in events {
        all.push(index.apply(e));
        let fresh = SyncIndex::new(index.registry.clone(), index.nodes.clone());
        for agent in [A1, A2] {
            assert_eq!(
                ids(&index.entries_for(&id(agent))),
                ids(&fresh.entries_for(&id(agent))),
                "incremental view of {agent} diverged after {e:?}"
            );
        }
    }
    (index, all)
}

#[test]
fn direct_alias_and_descendant_entries_are_authorised() {
    let (index, _) = run(&[
        attested(A1, &["x509pop:subject:cn:web-1", "x509pop:ca:abc"]),
        attested(A2, &["x509pop:subject:cn:db-1", "x509pop:ca:abc"]),
        ServerEvent::EntryCreated(entry(
            "direct",
            "spiffe://example.org/w/direct",
            A1,
            &["unix:uid:1"],
        )),
        ServerEvent::EntryCreated(entry(
            "alias",
            "spiffe://example.org/node/web",
            SERVER,
            &["x509pop:subject:cn:web-1"],
        )),
        ServerEvent::EntryCreated(entry(
            "via-alias",
            "spiffe://example.org/w/web",
            "spiffe://example.org/node/web",
            &["unix:uid:2"],
        )),
        ServerEvent::EntryCreated(entry(
            "nested",
            "spiffe://example.org/w/web/child",
            "spiffe://example.org/w/web",
            &["k8s:ns:x"],
        )),
        ServerEvent::EntryCreated(entry(
            "all-nodes",
            "spiffe://example.org/node/all",
            SERVER,
            &["x509pop:ca:abc"],
        )),
        ServerEvent::EntryCreated(entry(
            "everywhere",
            "spiffe://example.org/w/agentd",
            "spiffe://example.org/node/all",
            &["unix:uid:0"],
        )),
    ]);
    assert_eq!(
        ids(&index.entries_for(&id(A1))),
        vec!["direct", "everywhere", "nested", "via-alias"]
    );
    assert_eq!(ids(&index.entries_for(&id(A2))), vec!["everywhere"]);
    assert!(index.is_authorised(&id(A1), &EntryId::new("nested").unwrap()));
    assert!(!index.is_authorised(&id(A2), &EntryId::new("nested").unwrap()));
}

#[test]
fn a_change_reaches_only_the_agents_it_concerns() {
    let (_, changes) = run(&[
        attested(A1, &["x509pop:subject:cn:web-1"]),
        attested(A2, &["x509pop:subject:cn:db-1"]),
        ServerEvent::EntryCreated(entry("e1", "spiffe://example.org/w/1", A1, &["unix:uid:1"])),
        ServerEvent::EntryDeleted {
            id: EntryId::new("e1").unwrap(),
        },
    ]);
    let created = &changes[2];
    assert_eq!(created.keys().collect::<Vec<_>>(), vec![&id(A1)]);
    assert!(matches!(created[&id(A1)][..], [ViewChange::Upsert(_)]));
    let deleted = &changes[3];
    assert_eq!(
        deleted[&id(A1)],
        vec![ViewChange::Remove(EntryId::new("e1").unwrap())]
    );
    assert!(!deleted.contains_key(&id(A2)));
}

#[test]
fn alias_selector_change_moves_a_subtree_between_agents() {
    let mut alias = entry(
        "alias",
        "spiffe://example.org/node/x",
        SERVER,
        &["x509pop:subject:cn:web-1"],
    );
    let (index, changes) = run(&[
        attested(A1, &["x509pop:subject:cn:web-1"]),
        attested(A2, &["x509pop:subject:cn:db-1"]),
        ServerEvent::EntryCreated(alias.clone()),
        ServerEvent::EntryCreated(entry(
            "w",
            "spiffe://example.org/w",
            "spiffe://example.org/node/x",
            &["unix:uid:1"],
        )),
        {
            alias.selectors = SelectorSet::parse_all(["x509pop:subject:cn:db-1"]).unwrap();
            alias.revision = 1;
            ServerEvent::EntryUpdated(alias.clone())
        },
    ]);
    assert_eq!(ids(&index.entries_for(&id(A1))), Vec::<&str>::new());
    assert_eq!(ids(&index.entries_for(&id(A2))), vec!["w"]);
    let moved = &changes[4];
    assert_eq!(
        moved[&id(A1)],
        vec![ViewChange::Remove(EntryId::new("w").unwrap())]
    );
    assert!(matches!(moved[&id(A2)][..], [ViewChange::Upsert(_)]));
}

#[test]
fn evicted_and_banned_agents_lose_everything() {
    let (index, changes) = run(&[
        attested(A1, &["x509pop:subject:cn:web-1"]),
        ServerEvent::EntryCreated(entry("e1", "spiffe://example.org/w/1", A1, &["unix:uid:1"])),
        ServerEvent::AgentBanned { agent_id: id(A1) },
    ]);
    assert!(index.entries_for(&id(A1)).is_empty());
    assert_eq!(
        changes[2][&id(A1)],
        vec![ViewChange::Remove(EntryId::new("e1").unwrap())]
    );
    let (index, _) = run(&[
        attested(A1, &["x509pop:subject:cn:web-1"]),
        ServerEvent::EntryCreated(entry("e1", "spiffe://example.org/w/1", A1, &["unix:uid:1"])),
        ServerEvent::AgentEvicted { agent_id: id(A1) },
        attested(A1, &["x509pop:subject:cn:web-1"]),
    ]);
    assert_eq!(
        ids(&index.entries_for(&id(A1))),
        vec!["e1"],
        "re-attesting restores the view"
    );
}

#[test]
fn cycles_in_parent_links_terminate() {
    let (index, _) = run(&[
        attested(A1, &["x509pop:subject:cn:web-1"]),
        ServerEvent::EntryCreated(entry("a", "spiffe://example.org/a", A1, &["unix:uid:1"])),
        ServerEvent::EntryCreated(entry(
            "b",
            "spiffe://example.org/b",
            "spiffe://example.org/a",
            &["unix:uid:1"],
        )),
        ServerEvent::EntryCreated(entry(
            "c",
            "spiffe://example.org/a",
            "spiffe://example.org/b",
            &["unix:uid:2"],
        )),
    ]);
    assert_eq!(ids(&index.entries_for(&id(A1))), vec!["a", "b", "c"]);
}

#[test]
fn random_histories_keep_incremental_views_equal_to_fresh_ones() {
    // A deterministic pseudo-random walk over a small space of IDs, so that parents, nesting,
    // aliases, duplicates of SPIFFE IDs, updates and deletions all collide often.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let paths = ["/a", "/b", "/c", "/d", "/node/x", "/node/y"];
    let parents = [
        A1,
        A2,
        "spiffe://example.org/a",
        "spiffe://example.org/b",
        "spiffe://example.org/node/x",
        SERVER,
    ];
    let node_selectors = ["x509pop:subject:cn:web-1", "x509pop:subject:cn:db-1"];
    let mut events = vec![
        attested(A1, &[node_selectors[0]]),
        attested(A2, &[node_selectors[1]]),
    ];
    let mut live: Vec<RegistrationEntry> = Vec::new();
    for i in 0..400u64 {
        let roll = next(10);
        if roll < 5 || live.is_empty() {
            let parent = parents[next(parents.len() as u64) as usize];
            let selector = if parent == SERVER {
                node_selectors[next(2) as usize]
            } else {
                "unix:uid:1"
            };
            let e = entry(
                &format!("e{i}"),
                &format!(
                    "spiffe://example.org{}",
                    paths[next(paths.len() as u64) as usize]
                ),
                parent,
                &[selector],
            );
            live.push(e.clone());
            events.push(ServerEvent::EntryCreated(e));
        } else if roll < 8 {
            let idx = next(live.len() as u64) as usize;
            let gone = live.swap_remove(idx);
            events.push(ServerEvent::EntryDeleted { id: gone.id });
        } else {
            let idx = next(live.len() as u64) as usize;
            let mut e = live[idx].clone();
            e.parent_id = SpiffeId::new(parents[next(parents.len() as u64) as usize]).unwrap();
            if e.parent_id.to_string() == SERVER {
                e.selectors = SelectorSet::parse_all([node_selectors[next(2) as usize]]).unwrap();
            }
            e.revision += 1;
            live[idx] = e.clone();
            events.push(ServerEvent::EntryUpdated(e));
        }
    }
    // `run` compares every agent's incremental view with a fresh one after each event.
    run(&events);
}

#[test]
fn a_deleted_leaf_stops_reaching_its_spiffe_id() {
    let (index, _) = run(&[
        attested(A1, &["x509pop:subject:cn:web-1"]),
        ServerEvent::EntryCreated(entry("a", "spiffe://example.org/a", A1, &["unix:uid:1"])),
        ServerEvent::EntryDeleted {
            id: EntryId::new("a").unwrap(),
        },
        ServerEvent::EntryCreated(entry(
            "under-a",
            "spiffe://example.org/w",
            "spiffe://example.org/a",
            &["unix:uid:2"],
        )),
    ]);
    assert!(
        index.entries_for(&id(A1)).is_empty(),
        "nothing reaches /a any more"
    );
}

#[test]
fn a_pruned_entry_leaves_the_views_like_a_deleted_one_and_a_stale_prune_changes_nothing() {
    let mut expiring = entry("exp", "spiffe://example.org/w/exp", A1, &["unix:uid:1"]);
    expiring.expires_at = Some(100);
    let mut extended = expiring.clone();
    extended.expires_at = Some(500);
    extended.revision = 1;
    let alias = entry(
        "alias",
        "spiffe://example.org/nodes/ca",
        SERVER,
        &["x509pop:ca:abc"],
    );
    let mut under_alias = entry(
        "under",
        "spiffe://example.org/w/under",
        "spiffe://example.org/nodes/ca",
        &["unix:uid:2"],
    );
    under_alias.expires_at = Some(100);
    let (index, changes) = run(&[
        attested(A1, &["x509pop:ca:abc"]),
        attested(A2, &["x509pop:ca:abc"]),
        ServerEvent::EntryCreated(expiring.clone()),
        ServerEvent::EntryCreated(alias),
        ServerEvent::EntryCreated(under_alias),
        // Extended before a prune decided on the old expiry reached the log: it stays.
        ServerEvent::EntryUpdated(extended),
        ServerEvent::EntryExpired {
            id: expiring.id.clone(),
            expires_at: 100,
        },
        ServerEvent::EntryExpired {
            id: EntryId::new("under").unwrap(),
            expires_at: 100,
        },
        // A second prune of the same entry (another server's) is a no-op.
        ServerEvent::EntryExpired {
            id: EntryId::new("under").unwrap(),
            expires_at: 100,
        },
    ]);
    assert!(changes[6].is_empty(), "{:?}", changes[6]);
    let removed = ViewChange::Remove(EntryId::new("under").unwrap());
    assert_eq!(changes[7].get(&id(A1)), Some(&vec![removed.clone()]));
    assert_eq!(changes[7].get(&id(A2)), Some(&vec![removed]));
    assert!(changes[8].is_empty());
    assert_eq!(ids(&index.entries_for(&id(A1))), vec!["exp"]);
    assert!(index.entries_for(&id(A2)).is_empty());
}
