//! Given/when/then tests of the authority with several servers on one log: each owns its CAs
//! and JWT keys, activation supersedes only the same server's, the bundle is the union, and
//! slots recorded before several servers are adopted or left to expire.

use super::test_support::{ca_at, given, jwt_key_at, T0};
use super::*;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::keys::{KeyType, MemoryKeyManager};

fn as_server(events: &[ServerEvent], id: &str, adopt_unowned: bool) -> Authority {
    let mut state = given(events);
    state.set_owner(Owner {
        server_id: id.into(),
        adopt_unowned,
    });
    state
}

fn ctx() -> Context {
    Context {
        now: T0,
        random: [0; 16],
    }
}

fn prepared_by(server: &str, record: &CaRecord) -> ServerEvent {
    ServerEvent::ServerCaPrepared {
        server_id: server.into(),
        record: record.clone(),
    }
}

fn activated_by(server: &str, record: &CaRecord) -> ServerEvent {
    ServerEvent::ServerCaActivated {
        server_id: server.into(),
        authority_id: record.authority_id.clone(),
    }
}

fn retire(record: &CaRecord) -> AuthorityCommand {
    AuthorityCommand::RetireCa {
        authority_id: record.authority_id.clone(),
    }
}

#[test]
fn a_server_with_an_owner_names_itself_in_what_it_emits() {
    let keys = MemoryKeyManager::new();
    let a = ca_at(&keys, 1, T0, 86_400).record;
    let state = as_server(&[], "s1", false);
    let events = state
        .decide(AuthorityCommand::RecordPreparedCa(a.clone()), &ctx())
        .unwrap()
        .events;
    assert_eq!(events, vec![prepared_by("s1", &a)]);
    let state = as_server(&events, "s1", false);
    let activate = AuthorityCommand::ActivateCa {
        authority_id: a.authority_id.clone(),
    };
    let events = state.decide(activate, &ctx()).unwrap().events;
    assert_eq!(events, vec![activated_by("s1", &a)]);
}

#[test]
fn each_server_prepares_and_activates_its_own_and_the_bundle_is_the_union() {
    let keys = MemoryKeyManager::new();
    let (a, b) = (
        ca_at(&keys, 1, T0, 86_400).record,
        ca_at(&keys, 2, T0, 86_400).record,
    );
    let log = [
        prepared_by("s1", &a),
        activated_by("s1", &a),
        prepared_by("s2", &b),
        activated_by("s2", &b),
    ];
    let s1 = as_server(&log, "s1", false);
    let s2 = as_server(&log, "s2", false);
    // S2's activation did not supersede S1's: both are active, each for its server.
    assert_eq!(s1.active_ca(), Some(&a));
    assert_eq!(s2.active_ca(), Some(&b));
    assert!(s1.cas().iter().all(|s| s.status == SlotStatus::Active));
    assert_eq!(s1.bundle().unwrap().x509_authorities().len(), 2);
    assert_eq!(s1.bundle(), s2.bundle());
    // S2 may prepare its next CA; S1 does not take it for its own.
    let next = ca_at(&keys, 3, T0, 86_400).record;
    assert!(s2
        .decide(AuthorityCommand::RecordPreparedCa(next.clone()), &ctx())
        .is_ok());
    let with_next = [log.as_slice(), &[prepared_by("s2", &next)]].concat();
    assert_eq!(as_server(&with_next, "s1", false).prepared_ca(), None);
    assert_eq!(
        as_server(&with_next, "s2", false).prepared_ca(),
        Some(&next)
    );
    // Rotation plans on a server's own slots only.
    assert_eq!(s1.scoped().cas().len(), 1);
    assert_eq!(s1.scoped().active_ca(), Some(&a));
}

#[test]
fn another_servers_ca_is_retired_once_expired_and_an_own_active_one_never() {
    let keys = MemoryKeyManager::new();
    let (a, b) = (
        ca_at(&keys, 1, T0, 3_600).record,
        ca_at(&keys, 2, T0, 86_400).record,
    );
    let log = [
        prepared_by("gone", &a),
        activated_by("gone", &a),
        prepared_by("s2", &b),
        activated_by("s2", &b),
    ];
    let s2 = as_server(&log, "s2", false);
    assert_eq!(s2.foreign_expired(T0 + 60), (vec![], vec![]));
    let (cas, kids) = s2.foreign_expired(a.not_after + 1);
    assert_eq!(cas, vec![a.authority_id.clone()]);
    assert!(kids.is_empty());
    let events = s2.decide(retire(&a), &ctx()).unwrap().events;
    assert_eq!(
        events,
        vec![ServerEvent::ServerCaRetired {
            server_id: "s2".into(),
            authority_id: a.authority_id.clone(),
        }]
    );
    let after = as_server(&[log.as_slice(), &events].concat(), "s2", false);
    assert_eq!(after.bundle().unwrap().x509_authorities().len(), 1);
    assert!(matches!(
        after.decide(retire(&b), &ctx()),
        Err(AuthorityError::RetireActive { .. })
    ));
}

#[test]
fn untagged_slots_are_adopted_by_a_lone_server_and_superseded_by_any_activation() {
    let keys = MemoryKeyManager::new();
    let (old, new) = (
        ca_at(&keys, 1, T0, 86_400).record,
        ca_at(&keys, 2, T0, 86_400).record,
    );
    let legacy = [
        ServerEvent::CaPrepared(old.clone()),
        ServerEvent::CaActivated {
            authority_id: old.authority_id.clone(),
        },
    ];
    // A single server upgraded in place adopts its untagged CA and rotates it as before.
    assert_eq!(as_server(&legacy, "s1", true).active_ca(), Some(&old));
    // On a shared log nobody owns it; it stays in the bundle until it expires.
    let shared = as_server(&legacy, "s1", false);
    assert_eq!(shared.active_ca(), None);
    assert_eq!(shared.bundle().unwrap().x509_authorities().len(), 1);
    // A server's activation supersedes it: the adopting server never has two active CAs.
    let log = [
        legacy.as_slice(),
        &[prepared_by("s1", &new), activated_by("s1", &new)],
    ]
    .concat();
    let lone = as_server(&log, "s1", true);
    assert_eq!(lone.active_ca(), Some(&new));
    assert_eq!(lone.ca(&old.authority_id).unwrap().status, SlotStatus::Old);
    assert_eq!(lone.bundle().unwrap().x509_authorities().len(), 2);
}

#[test]
fn jwt_keys_follow_the_same_ownership() {
    let keys = MemoryKeyManager::new();
    let (k1, k2) = (
        jwt_key_at(&keys, KeyType::EcP256, T0, 86_400).record,
        jwt_key_at(&keys, KeyType::EcP256, T0, 86_400).record,
    );
    let by = |server: &str, record: &JwtKeyRecord| {
        [
            ServerEvent::ServerJwtKeyPrepared {
                server_id: server.into(),
                record: record.clone(),
            },
            ServerEvent::ServerJwtKeyActivated {
                server_id: server.into(),
                kid: record.kid.clone(),
            },
        ]
    };
    let log = [by("s1", &k1), by("s2", &k2)].concat();
    let s1 = as_server(&log, "s1", false);
    let s2 = as_server(&log, "s2", false);
    assert_eq!(s1.active_jwt_key(), Some(&k1));
    assert_eq!(s2.active_jwt_key(), Some(&k2));
    assert_eq!(s1.bundle().unwrap().jwt_authorities().len(), 2);
}
