//! Given/when/then tests of the authority aggregate: given these events, when this command,
//! then these events (or this error), and the bundle they imply.

use super::test_support::{ca_at, given, jwt_key_at, td, T0};
use super::*;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::keys::{KeyType, MemoryKeyManager};

fn ctx() -> Context {
    Context {
        now: T0,
        random: [0; 16],
    }
}

fn when(state: &Authority, command: AuthorityCommand) -> Result<Vec<ServerEvent>, AuthorityError> {
    state.decide(command, &ctx()).map(|d| d.events)
}

fn prepared(record: &CaRecord) -> ServerEvent {
    ServerEvent::CaPrepared(record.clone())
}

fn activated(record: &CaRecord) -> ServerEvent {
    ServerEvent::CaActivated {
        authority_id: record.authority_id.clone(),
    }
}

fn anchors(state: &Authority) -> Vec<Vec<u8>> {
    state
        .bundle()
        .unwrap()
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect()
}

#[test]
fn a_prepared_ca_is_recorded_and_its_root_joins_the_bundle() {
    let keys = MemoryKeyManager::new();
    let a = ca_at(&keys, 1, T0, 86_400).record;
    let state = given(&[]);
    assert_eq!(state.bundle().unwrap().sequence_number(), 0);

    let events = when(&state, AuthorityCommand::RecordPreparedCa(a.clone())).unwrap();
    assert_eq!(events, vec![prepared(&a)]);

    let state = given(&events);
    assert_eq!(state.prepared_ca(), Some(&a));
    assert_eq!(state.active_ca(), None);
    assert_eq!(anchors(&state), vec![a.cert_der.clone()]);
    assert_eq!(state.bundle_sequence(), 1);
    assert_eq!(state.bundle().unwrap().trust_domain(), &td());
}

#[test]
fn only_one_ca_can_be_prepared_at_a_time() {
    let keys = MemoryKeyManager::new();
    let (a, b) = (
        ca_at(&keys, 1, T0, 600).record,
        ca_at(&keys, 2, T0, 600).record,
    );
    let state = given(&[prepared(&a)]);
    assert_eq!(
        when(&state, AuthorityCommand::RecordPreparedCa(b.clone())),
        Err(AuthorityError::AlreadyPrepared {
            kind: "X.509 CA",
            prepared: a.authority_id.clone(),
            id: b.authority_id.clone(),
        })
    );
    assert_eq!(
        when(&state, AuthorityCommand::RecordPreparedCa(a.clone())),
        Err(AuthorityError::Duplicate {
            kind: "X.509 CA",
            id: a.authority_id.clone(),
        })
    );
}

#[test]
fn activation_makes_the_prepared_ca_active_and_the_active_one_old() {
    let keys = MemoryKeyManager::new();
    let (a, b) = (
        ca_at(&keys, 1, T0, 600).record,
        ca_at(&keys, 2, T0 + 300, 600).record,
    );
    let state = given(&[prepared(&a)]);
    let events = when(
        &state,
        AuthorityCommand::ActivateCa {
            authority_id: a.authority_id.clone(),
        },
    )
    .unwrap();
    assert_eq!(events, vec![activated(&a)]);

    let state = given(&[prepared(&a), activated(&a), prepared(&b)]);
    let sequence_before = state.bundle_sequence();
    let events = when(
        &state,
        AuthorityCommand::ActivateCa {
            authority_id: b.authority_id.clone(),
        },
    )
    .unwrap();
    let state = given(&[prepared(&a), activated(&a), prepared(&b), events[0].clone()]);
    assert_eq!(state.active_ca(), Some(&b));
    assert_eq!(state.ca(&a.authority_id).unwrap().status, SlotStatus::Old);
    // Both roots stay published; activation does not change the bundle.
    assert_eq!(
        anchors(&state),
        vec![a.cert_der.clone(), b.cert_der.clone()]
    );
    assert_eq!(state.bundle_sequence(), sequence_before);
}

#[test]
fn activating_twice_changes_nothing_and_unknown_or_old_ones_are_refused() {
    let keys = MemoryKeyManager::new();
    let (a, b) = (
        ca_at(&keys, 1, T0, 600).record,
        ca_at(&keys, 2, T0, 600).record,
    );
    let state = given(&[prepared(&a), activated(&a), prepared(&b), activated(&b)]);
    let again = state
        .decide(
            AuthorityCommand::ActivateCa {
                authority_id: b.authority_id.clone(),
            },
            &ctx(),
        )
        .unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.reply, AuthorityReply::Unchanged);
    assert_eq!(
        when(
            &state,
            AuthorityCommand::ActivateCa {
                authority_id: a.authority_id.clone()
            }
        ),
        Err(AuthorityError::NotPrepared {
            kind: "X.509 CA",
            id: a.authority_id.clone(),
            status: "old",
        })
    );
    assert!(matches!(
        when(
            &state,
            AuthorityCommand::ActivateCa {
                authority_id: "nope".into()
            }
        ),
        Err(AuthorityError::Unknown { .. })
    ));
}

#[test]
fn retiring_drops_the_root_from_the_bundle_but_never_the_active_ca() {
    let keys = MemoryKeyManager::new();
    let (a, b) = (
        ca_at(&keys, 1, T0, 600).record,
        ca_at(&keys, 2, T0, 600).record,
    );
    let history = [prepared(&a), activated(&a), prepared(&b), activated(&b)];
    let state = given(&history);
    assert_eq!(
        when(
            &state,
            AuthorityCommand::RetireCa {
                authority_id: b.authority_id.clone()
            }
        ),
        Err(AuthorityError::RetireActive {
            kind: "X.509 CA",
            id: b.authority_id.clone(),
        })
    );
    let events = when(
        &state,
        AuthorityCommand::RetireCa {
            authority_id: a.authority_id.clone(),
        },
    )
    .unwrap();
    assert_eq!(
        events,
        vec![ServerEvent::CaRetired {
            authority_id: a.authority_id.clone()
        }]
    );
    let mut all = history.to_vec();
    all.extend(events);
    let retired = given(&all);
    assert_eq!(anchors(&retired), vec![b.cert_der.clone()]);
    assert_eq!(retired.bundle_sequence(), state.bundle_sequence() + 1);
    assert!(retired.ca(&a.authority_id).is_none());
}

#[test]
fn records_that_cannot_be_trusted_are_refused() {
    let keys = MemoryKeyManager::new();
    let good = ca_at(&keys, 1, T0, 600).record;
    let cases: Vec<(CaRecord, &str)> = vec![
        (
            CaRecord {
                trust_anchors: vec![],
                ..good.clone()
            },
            "no trust anchor",
        ),
        (
            CaRecord {
                cert_der: vec![1, 2, 3],
                ..good.clone()
            },
            "does not parse",
        ),
        (
            CaRecord {
                not_after: good.not_before,
                ..good.clone()
            },
            "validity is empty",
        ),
        (
            CaRecord {
                authority_id: String::new(),
                ..good.clone()
            },
            "authority ID is empty",
        ),
        (
            CaRecord {
                key_ref: "a\nb".into(),
                ..good.clone()
            },
            "control characters",
        ),
        (
            CaRecord {
                trust_anchors: vec![vec![0]],
                ..good.clone()
            },
            "trust anchor 0",
        ),
    ];
    for (record, expected) in cases {
        match when(&given(&[]), AuthorityCommand::RecordPreparedCa(record)) {
            Err(e @ AuthorityError::InvalidRecord { .. }) => {
                assert!(e.to_string().contains(expected), "{e} lacks {expected:?}");
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
}

#[test]
fn upstream_signed_cas_share_one_anchor_and_the_sequence_moves_only_on_change() {
    let keys = MemoryKeyManager::new();
    let (mut a, mut b) = (
        ca_at(&keys, 1, T0, 600).record,
        ca_at(&keys, 2, T0, 600).record,
    );
    // As if one upstream root signed both.
    let root = ca_at(&keys, 3, T0, 600).record.cert_der;
    a.trust_anchors = vec![root.clone()];
    b.trust_anchors = vec![root.clone()];
    let state = given(&[prepared(&a), activated(&a), prepared(&b)]);
    assert_eq!(anchors(&state), vec![root.clone()]);
    assert_eq!(state.bundle_sequence(), 1);
    let state = given(&[
        prepared(&a),
        activated(&a),
        prepared(&b),
        activated(&b),
        ServerEvent::CaRetired {
            authority_id: a.authority_id.clone(),
        },
    ]);
    assert_eq!(anchors(&state), vec![root]);
    assert_eq!(state.bundle_sequence(), 1);
}

#[test]
fn jwt_keys_live_the_same_life_and_carry_their_expiry_into_the_bundle() {
    let keys = MemoryKeyManager::new();
    let k1 = jwt_key_at(&keys, KeyType::EcP256, T0, 600).record;
    let k2 = jwt_key_at(&keys, KeyType::EcP384, T0 + 300, 600).record;
    let events = when(
        &given(&[]),
        AuthorityCommand::RecordPreparedJwtKey(k1.clone()),
    )
    .unwrap();
    assert_eq!(events, vec![ServerEvent::JwtKeyPrepared(k1.clone())]);
    let history = vec![
        ServerEvent::JwtKeyPrepared(k1.clone()),
        ServerEvent::JwtKeyActivated {
            kid: k1.kid.clone(),
        },
        ServerEvent::JwtKeyPrepared(k2.clone()),
        ServerEvent::JwtKeyActivated {
            kid: k2.kid.clone(),
        },
    ];
    let state = given(&history);
    assert_eq!(state.active_jwt_key(), Some(&k2));
    let bundle = state.bundle().unwrap();
    assert_eq!(bundle.jwt_authorities().len(), 2);
    let published = bundle.jwt_authority(&k1.kid).unwrap();
    assert_eq!(published.expires_at, Some(k1.not_after));
    assert_eq!(published.public_key.to_spki_der(), k1.public_key_der);
    assert_eq!(state.bundle_sequence(), 2);

    assert!(matches!(
        when(
            &state,
            AuthorityCommand::RetireJwtKey {
                kid: k2.kid.clone()
            }
        ),
        Err(AuthorityError::RetireActive { .. })
    ));
    let retire = when(
        &state,
        AuthorityCommand::RetireJwtKey {
            kid: k1.kid.clone(),
        },
    )
    .unwrap();
    let mut all = history;
    all.extend(retire);
    let state = given(&all);
    assert!(state.bundle().unwrap().jwt_authority(&k1.kid).is_none());
    assert_eq!(state.bundle_sequence(), 3);
}

#[test]
fn bad_jwt_records_are_refused() {
    let keys = MemoryKeyManager::new();
    let good = jwt_key_at(&keys, KeyType::EcP256, T0, 600).record;
    for record in [
        JwtKeyRecord {
            kid: String::new(),
            ..good.clone()
        },
        JwtKeyRecord {
            kid: "k".repeat(300),
            ..good.clone()
        },
        JwtKeyRecord {
            public_key_der: vec![1, 2],
            ..good.clone()
        },
        JwtKeyRecord {
            not_before: good.not_after,
            ..good.clone()
        },
    ] {
        assert!(matches!(
            when(&given(&[]), AuthorityCommand::RecordPreparedJwtKey(record)),
            Err(AuthorityError::InvalidRecord {
                kind: "JWT key",
                ..
            })
        ));
    }
}

#[test]
fn a_snapshot_round_trips_and_rebuilds_the_same_bundle() {
    let keys = MemoryKeyManager::new();
    let a = ca_at(&keys, 1, T0, 600).record;
    let k = jwt_key_at(&keys, KeyType::EcP256, T0, 600).record;
    let state = given(&[
        prepared(&a),
        activated(&a),
        ServerEvent::JwtKeyPrepared(k.clone()),
        ServerEvent::JwtKeyActivated { kid: k.kid },
    ]);
    let image = serde_json::to_vec(&state).unwrap();
    let mut loaded: Authority = serde_json::from_slice(&image).unwrap();
    assert!(loaded.bundle().is_none(), "not configured yet");
    loaded.configure(td());
    assert_eq!(loaded, state);
    assert_eq!(loaded.bundle(), state.bundle());
}

#[test]
fn other_aggregates_events_are_ignored() {
    let state = given(&[ServerEvent::AgentBanned {
        agent_id: tessera_identity::SpiffeId::new("spiffe://example.org/spire/agent/x").unwrap(),
    }]);
    assert_eq!(state, Authority::default());
    assert_eq!(state.bundle_sequence(), 0);
}
