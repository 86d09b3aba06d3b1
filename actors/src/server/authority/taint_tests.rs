//! Given/when/then tests of forced rotation in the authority aggregate: tainting an old CA or
//! JWT key marks it in the bundle, revoking a tainted one removes it; every other case is
//! refused with a message that names the fix.

use super::test_support::{ca_at, given, jwt_key_at, td, write_upstream, UpstreamCa, T0};
use super::*;
use crate::random::SeededRandom;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::authority::ca::{build_ca, CaSettings};
use crate::server::keys::{KeyType, MemoryKeyManager};

fn when(state: &Authority, command: AuthorityCommand) -> Result<Vec<ServerEvent>, AuthorityError> {
    let ctx = Context {
        now: T0,
        random: [0; 16],
    };
    state.decide(command, &ctx).map(|d| d.events)
}

/// Given CA `a` prepared and activated, then `b` prepared and activated: `a` old, `b` active,
/// and `c` prepared.
fn rotated() -> (Vec<ServerEvent>, CaRecord, CaRecord, CaRecord) {
    let keys = MemoryKeyManager::new();
    let a = ca_at(&keys, 1, T0, 600).record;
    let b = ca_at(&keys, 2, T0 + 100, 600).record;
    let c = ca_at(&keys, 3, T0 + 200, 600).record;
    let id = |r: &CaRecord| r.authority_id.clone();
    let events = vec![
        ServerEvent::CaPrepared(a.clone()),
        ServerEvent::CaActivated {
            authority_id: id(&a),
        },
        ServerEvent::CaPrepared(b.clone()),
        ServerEvent::CaActivated {
            authority_id: id(&b),
        },
        ServerEvent::CaPrepared(c.clone()),
    ];
    (events, a, b, c)
}

fn taint_ca(r: &CaRecord) -> AuthorityCommand {
    AuthorityCommand::TaintCa {
        authority_id: r.authority_id.clone(),
    }
}

fn revoke_ca(r: &CaRecord) -> AuthorityCommand {
    AuthorityCommand::RevokeCa {
        authority_id: r.authority_id.clone(),
    }
}

#[test]
fn tainting_the_old_ca_marks_it_in_the_bundle_and_moves_the_sequence() {
    let (mut log, a, b, _) = rotated();
    let state = given(&log);
    let before = state.bundle_sequence();

    let events = when(&state, taint_ca(&a)).unwrap();
    assert_eq!(
        events,
        vec![ServerEvent::X509AuthorityTainted {
            server_id: None,
            authority_id: a.authority_id.clone(),
        }]
    );
    log.extend(events);
    let state = given(&log);
    let slot = state.ca(&a.authority_id).unwrap();
    assert!(slot.tainted);
    assert_eq!(slot.status, SlotStatus::Old);
    let bundle = state.bundle().unwrap();
    assert!(bundle.is_x509_authority_tainted(&a.cert_der));
    assert!(!bundle.is_x509_authority_tainted(&b.cert_der));
    assert_eq!(bundle.x509_authorities().len(), 3, "still published");
    assert_eq!(state.bundle_sequence(), before + 1);
    // The active CA still signs.
    assert_eq!(state.active_ca(), Some(&b));
}

#[test]
fn the_active_or_prepared_ca_cannot_be_tainted_nor_an_unknown_one() {
    let (log, _, b, c) = rotated();
    let state = given(&log);
    let e = when(&state, taint_ca(&b)).unwrap_err();
    assert_eq!(
        e,
        AuthorityError::TaintNotOld {
            kind: "X.509 CA",
            id: b.authority_id.clone(),
            status: "active",
        }
    );
    assert!(
        e.to_string()
            .contains("only the old authority can be tainted; activate the prepared one first"),
        "{e}"
    );
    assert!(matches!(
        when(&state, taint_ca(&c)),
        Err(AuthorityError::TaintNotOld {
            status: "prepared",
            ..
        })
    ));
    assert!(matches!(
        when(
            &state,
            AuthorityCommand::TaintCa {
                authority_id: "00ff".into()
            }
        ),
        Err(AuthorityError::Unknown { .. })
    ));
}

#[test]
fn a_ca_is_revoked_only_once_tainted_and_then_leaves_state_and_bundle() {
    let (mut log, a, b, _) = rotated();
    let state = given(&log);
    assert_eq!(
        when(&state, revoke_ca(&a)),
        Err(AuthorityError::NotTainted {
            kind: "X.509 CA",
            id: a.authority_id.clone(),
        })
    );
    assert!(matches!(
        when(&state, revoke_ca(&b)),
        Err(AuthorityError::NotTainted { .. })
    ));

    log.extend(when(&state, taint_ca(&a)).unwrap());
    let state = given(&log);
    assert!(matches!(
        when(&state, taint_ca(&a)),
        Err(AuthorityError::AlreadyTainted { .. })
    ));
    let before = state.bundle_sequence();
    let events = when(&state, revoke_ca(&a)).unwrap();
    assert_eq!(
        events,
        vec![ServerEvent::X509AuthorityRevoked {
            server_id: None,
            authority_id: a.authority_id.clone(),
        }]
    );
    log.extend(events);
    let state = given(&log);
    assert!(state.ca(&a.authority_id).is_none());
    let bundle = state.bundle().unwrap();
    assert!(!bundle
        .x509_authorities()
        .iter()
        .any(|x| x.der() == a.cert_der));
    assert!(!bundle.has_taints(), "the mark went with the authority");
    assert_eq!(state.bundle_sequence(), before + 1);
    assert_eq!(state.active_ca(), Some(&b));
    // Gone: a second revocation does not know it.
    assert!(matches!(
        when(&state, revoke_ca(&a)),
        Err(AuthorityError::Unknown { .. })
    ));
}

#[test]
fn a_tainted_ca_is_never_activated_again() {
    let (mut log, a, _, _) = rotated();
    log.extend(when(&given(&log), taint_ca(&a)).unwrap());
    let state = given(&log);
    assert!(matches!(
        when(
            &state,
            AuthorityCommand::ActivateCa {
                authority_id: a.authority_id.clone()
            }
        ),
        Err(AuthorityError::NotPrepared { status: "old", .. })
    ));
}

#[test]
fn another_servers_ca_is_not_this_servers_to_taint() {
    let keys = MemoryKeyManager::new();
    let (a, b) = (
        ca_at(&keys, 1, T0, 600).record,
        ca_at(&keys, 2, T0, 600).record,
    );
    let on = |server: &str, r: &CaRecord| {
        vec![
            ServerEvent::ServerCaPrepared {
                server_id: server.into(),
                record: r.clone(),
            },
            ServerEvent::ServerCaActivated {
                server_id: server.into(),
                authority_id: r.authority_id.clone(),
            },
        ]
    };
    let mut log = on("other", &a);
    log.extend(on("other", &b));
    let mut state = given(&log);
    state.set_owner(Owner {
        server_id: "me".into(),
        adopt_unowned: false,
    });
    assert_eq!(
        when(&state, taint_ca(&a)),
        Err(AuthorityError::NotOwn {
            kind: "X.509 CA",
            id: a.authority_id.clone(),
            server: "other".into(),
        })
    );
}

#[test]
fn an_upstream_signed_ca_is_refused_with_the_upstream_to_taint_instead() {
    let dir = tempfile::tempdir().unwrap();
    let root = UpstreamCa::root(T0 - 100, T0 + 3600, &rcgen::PKCS_ECDSA_P256_SHA256);
    let upstream = write_upstream(dir.path(), &[&root], &root.key, None);
    let keys = MemoryKeyManager::new();
    let settings = CaSettings {
        upstream: Some(upstream),
        ttl: std::time::Duration::from_secs(600),
        ..CaSettings::default()
    };
    let build = |seed| {
        build_ca(&td(), &settings, &keys, &SeededRandom::new(seed), T0)
            .unwrap()
            .record
    };
    let (a, b) = (build(1), build(2));
    let log = vec![
        ServerEvent::CaPrepared(a.clone()),
        ServerEvent::CaActivated {
            authority_id: a.authority_id.clone(),
        },
        ServerEvent::CaPrepared(b.clone()),
        ServerEvent::CaActivated {
            authority_id: b.authority_id.clone(),
        },
    ];
    let state = given(&log);
    let root_skid = super::x509::subject_key_id(&root.der).unwrap();
    match when(&state, taint_ca(&a)) {
        Err(AuthorityError::UpstreamSigned { id, upstream }) => {
            assert_eq!(id, a.authority_id);
            assert_eq!(upstream, root_skid);
        }
        other => panic!("expected UpstreamSigned, got {other:?}"),
    }
}

#[test]
fn jwt_keys_are_tainted_when_old_and_revoked_when_tainted() {
    let keys = MemoryKeyManager::new();
    let j1 = jwt_key_at(&keys, KeyType::EcP256, T0, 600).record;
    let j2 = jwt_key_at(&keys, KeyType::EcP256, T0 + 10, 600).record;
    let mut log = vec![
        ServerEvent::JwtKeyPrepared(j1.clone()),
        ServerEvent::JwtKeyActivated {
            kid: j1.kid.clone(),
        },
        ServerEvent::JwtKeyPrepared(j2.clone()),
    ];
    let state = given(&log);
    let taint = |k: &JwtKeyRecord| AuthorityCommand::TaintJwtKey { kid: k.kid.clone() };
    let revoke = |k: &JwtKeyRecord| AuthorityCommand::RevokeJwtKey { kid: k.kid.clone() };
    assert!(matches!(
        when(&state, taint(&j1)),
        Err(AuthorityError::TaintNotOld {
            status: "active",
            ..
        })
    ));
    assert!(matches!(
        when(&state, taint(&j2)),
        Err(AuthorityError::TaintNotOld {
            status: "prepared",
            ..
        })
    ));

    log.push(ServerEvent::JwtKeyActivated {
        kid: j2.kid.clone(),
    });
    let state = given(&log);
    assert!(matches!(
        when(&state, revoke(&j1)),
        Err(AuthorityError::NotTainted { .. })
    ));
    let events = when(&state, taint(&j1)).unwrap();
    assert_eq!(
        events,
        vec![ServerEvent::JwtAuthorityTainted {
            server_id: None,
            kid: j1.kid.clone(),
        }]
    );
    log.extend(events);
    let state = given(&log);
    let bundle = state.bundle().unwrap();
    assert!(bundle.is_jwt_authority_tainted(&j1.kid));
    assert!(!bundle.is_jwt_authority_tainted(&j2.kid));

    let events = when(&state, revoke(&j1)).unwrap();
    assert_eq!(
        events,
        vec![ServerEvent::JwtAuthorityRevoked {
            server_id: None,
            kid: j1.kid.clone(),
        }]
    );
    log.extend(events);
    let state = given(&log);
    assert!(state.jwt_key(&j1.kid).is_none());
    let bundle = state.bundle().unwrap();
    assert!(bundle.jwt_authority(&j1.kid).is_none());
    assert!(bundle.jwt_authority(&j2.kid).is_some());
    assert!(!bundle.has_taints());
}

#[test]
fn an_owned_server_names_itself_in_taint_events() {
    let (log, a, _, _) = rotated();
    let mut state = given(&log);
    state.set_owner(Owner {
        server_id: "s1".into(),
        adopt_unowned: true,
    });
    assert_eq!(
        when(&state, taint_ca(&a)).unwrap(),
        vec![ServerEvent::X509AuthorityTainted {
            server_id: Some("s1".into()),
            authority_id: a.authority_id.clone(),
        }]
    );
}

#[test]
fn the_tainted_flag_survives_a_snapshot_round_trip() {
    let (mut log, a, _, _) = rotated();
    log.extend(when(&given(&log), taint_ca(&a)).unwrap());
    let state = given(&log);
    let bytes = tessera_eventlog::typed::encode_state(&state).unwrap();
    let mut back: Authority = tessera_eventlog::typed::decode_state(0, &bytes).unwrap();
    back.configure(td());
    assert_eq!(back, state);
    assert!(back
        .bundle()
        .unwrap()
        .is_x509_authority_tainted(&a.cert_der));
}

/// A CA signed by upstream `root`.
fn ca_under(root: &UpstreamCa, seed: u64) -> CaRecord {
    let dir = tempfile::tempdir().unwrap();
    let settings = CaSettings {
        upstream: Some(write_upstream(dir.path(), &[root], &root.key, None)),
        ttl: std::time::Duration::from_secs(600),
        ..CaSettings::default()
    };
    build_ca(
        &td(),
        &settings,
        &MemoryKeyManager::new(),
        &SeededRandom::new(seed),
        T0,
    )
    .unwrap()
    .record
}

/// CA `a` signed by upstream root `r1`, then CA `b` signed by `r2` (the upstream changed):
/// `a` old, `b` active.
fn upstream_rotated() -> (Vec<ServerEvent>, CaRecord, CaRecord, UpstreamCa, UpstreamCa) {
    let r1 = UpstreamCa::root(T0 - 100, T0 + 3600, &rcgen::PKCS_ECDSA_P256_SHA256);
    let r2 = UpstreamCa::root(T0 - 100, T0 + 3600, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (a, b) = (ca_under(&r1, 1), ca_under(&r2, 2));
    let log = vec![
        ServerEvent::CaPrepared(a.clone()),
        ServerEvent::CaActivated {
            authority_id: a.authority_id.clone(),
        },
        ServerEvent::CaPrepared(b.clone()),
        ServerEvent::CaActivated {
            authority_id: b.authority_id.clone(),
        },
    ];
    (log, a, b, r1, r2)
}

#[test]
fn an_upstream_root_is_tainted_through_its_old_cas_then_revoked_with_them() {
    let (mut log, a, b, r1, r2) = upstream_rotated();
    let state = given(&log);
    let skid = |r: &UpstreamCa| super::x509::subject_key_id(&r.der).unwrap();
    let taint = |r: &UpstreamCa| AuthorityCommand::TaintUpstream {
        subject_key_id: skid(r).to_ascii_uppercase(),
    };
    let revoke = |r: &UpstreamCa| AuthorityCommand::RevokeUpstream {
        subject_key_id: skid(r),
    };

    // The root signing the active CA, an unknown one, or revoking first: refused.
    assert!(matches!(
        when(&state, taint(&r2)),
        Err(AuthorityError::UpstreamInUse { status: "active", ca, .. }) if ca == b.authority_id
    ));
    assert!(matches!(
        when(
            &state,
            AuthorityCommand::TaintUpstream {
                subject_key_id: "abcd".into()
            }
        ),
        Err(AuthorityError::UnknownUpstream { .. })
    ));
    assert!(matches!(
        when(&state, revoke(&r1)),
        Err(AuthorityError::NotTainted { .. })
    ));

    // Taint r1 (its ID in any case): a is tainted, r1 marked in the bundle, r2 not.
    let events = when(&state, taint(&r1)).unwrap();
    assert_eq!(
        events,
        vec![ServerEvent::X509AuthorityTainted {
            server_id: None,
            authority_id: a.authority_id.clone(),
        }]
    );
    log.extend(events);
    let state = given(&log);
    let bundle = state.bundle().unwrap();
    assert!(bundle.is_x509_authority_tainted(&r1.der));
    assert!(!bundle.is_x509_authority_tainted(&r2.der));
    assert!(matches!(
        when(&state, taint(&r1)),
        Err(AuthorityError::AlreadyTainted { .. })
    ));

    // Revoke r1: a leaves the state, r1 the bundle.
    let events = when(&state, revoke(&r1)).unwrap();
    assert_eq!(
        events,
        vec![ServerEvent::X509AuthorityRevoked {
            server_id: None,
            authority_id: a.authority_id.clone(),
        }]
    );
    log.extend(events);
    let state = given(&log);
    assert!(state.ca(&a.authority_id).is_none());
    let roots: Vec<&[u8]> = state
        .bundle()
        .unwrap()
        .x509_authorities()
        .iter()
        .map(|x| x.der())
        .collect();
    assert_eq!(roots, vec![r2.der.as_slice()]);
}

#[test]
fn an_upstream_root_another_server_still_signs_under_is_not_tainted() {
    // "me" moved off root r1 (its CA a is old, b under r2 active); "other" still has its
    // active CA c under r1. Tainting r1 would mark it for every agent, so "me" is refused.
    let r1 = UpstreamCa::root(T0 - 100, T0 + 3600, &rcgen::PKCS_ECDSA_P256_SHA256);
    let r2 = UpstreamCa::root(T0 - 100, T0 + 3600, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (a, b, c) = (ca_under(&r1, 1), ca_under(&r2, 2), ca_under(&r1, 3));
    let on = |server: &str, r: &CaRecord| {
        vec![
            ServerEvent::ServerCaPrepared {
                server_id: server.into(),
                record: r.clone(),
            },
            ServerEvent::ServerCaActivated {
                server_id: server.into(),
                authority_id: r.authority_id.clone(),
            },
        ]
    };
    let mut log = on("me", &a);
    log.extend(on("me", &b));
    log.extend(on("other", &c));
    let mut state = given(&log);
    state.set_owner(Owner {
        server_id: "me".into(),
        adopt_unowned: false,
    });
    let skid = super::x509::subject_key_id(&r1.der).unwrap();
    assert!(matches!(
        when(&state, AuthorityCommand::TaintUpstream { subject_key_id: skid }),
        Err(AuthorityError::UpstreamInUse { status: "active", ca, .. }) if ca == c.authority_id
    ));
}
