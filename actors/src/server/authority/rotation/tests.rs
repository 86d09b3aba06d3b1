//! Given these events, at this time, then this rotation plan. Timing only: the records carry
//! placeholder certificates (the plan never reads them).

use std::collections::BTreeSet;

use super::*;
use crate::server::aggregate::Aggregate;
use crate::server::events::{CaRecord, JwtKeyRecord, ServerEvent};

/// CA TTL in these tests: 6000 s, so T/2 = 3000 s and 5T/6 = 5000 s.
const T: i64 = 6000;
const T0: i64 = 1_900_000_000;

fn ca(id: &str, not_before: i64) -> ServerEvent {
    ServerEvent::CaPrepared(CaRecord {
        authority_id: id.into(),
        cert_der: vec![1],
        upstream_chain: vec![],
        trust_anchors: vec![vec![1]],
        not_before,
        not_after: not_before + T,
        key_ref: format!("key-{id}"),
    })
}

fn jwt(kid: &str, not_before: i64) -> ServerEvent {
    ServerEvent::JwtKeyPrepared(JwtKeyRecord {
        kid: kid.into(),
        public_key_der: vec![2],
        not_before,
        not_after: not_before + T,
        key_ref: format!("key-{kid}"),
    })
}

fn activated(id: &str) -> ServerEvent {
    ServerEvent::CaActivated {
        authority_id: id.into(),
    }
}

fn jwt_activated(kid: &str) -> ServerEvent {
    ServerEvent::JwtKeyActivated { kid: kid.into() }
}

fn given(events: &[ServerEvent]) -> Authority {
    let mut a = Authority::default();
    for e in events {
        a.apply(e);
    }
    a
}

fn when_planned_at(state: &Authority, now: i64) -> Vec<RotationAction> {
    plan(state, now, &RotationSettings::default(), &BTreeSet::new())
}

fn ca_only(actions: Vec<RotationAction>) -> Vec<RotationAction> {
    actions
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                RotationAction::PrepareCa { .. }
                    | RotationAction::ActivateCa { .. }
                    | RotationAction::RetireCa { .. }
            )
        })
        .collect()
}

fn activate(id: &str) -> RotationAction {
    RotationAction::ActivateCa {
        authority_id: id.into(),
    }
}

fn retire(id: &str) -> RotationAction {
    RotationAction::RetireCa {
        authority_id: id.into(),
    }
}

/// A running authority: CA "a" and JWT key "ka" active since T0.
fn running() -> Vec<ServerEvent> {
    vec![
        ca("a", T0),
        activated("a"),
        jwt("ka", T0),
        jwt_activated("ka"),
    ]
}

#[test]
fn nothing_yet_prepares_and_activates_both_at_once() {
    assert_eq!(
        when_planned_at(&given(&[]), T0),
        vec![
            RotationAction::PrepareCa { activate: true },
            RotationAction::PrepareJwtKey { activate: true },
        ]
    );
}

#[test]
fn before_half_life_nothing_happens() {
    assert_eq!(when_planned_at(&given(&running()), T0 + T / 2 - 1), vec![]);
}

#[test]
fn at_half_life_the_next_ca_and_key_are_prepared_not_activated() {
    assert_eq!(
        when_planned_at(&given(&running()), T0 + T / 2),
        vec![
            RotationAction::PrepareCa { activate: false },
            RotationAction::PrepareJwtKey { activate: false },
        ]
    );
}

#[test]
fn prepared_waits_until_five_sixths() {
    let mut events = running();
    events.push(ca("b", T0 + T / 2));
    assert_eq!(
        ca_only(when_planned_at(&given(&events), T0 + 5 * T / 6 - 1)),
        vec![]
    );
}

#[test]
fn at_five_sixths_the_prepared_ca_and_key_are_activated() {
    let mut events = running();
    events.extend([ca("b", T0 + T / 2), jwt("kb", T0 + T / 2)]);
    assert_eq!(
        when_planned_at(&given(&events), T0 + 5 * T / 6),
        vec![
            activate("b"),
            RotationAction::ActivateJwtKey { kid: "kb".into() }
        ]
    );
}

#[test]
fn the_old_ca_stays_until_it_expires_then_is_retired() {
    let mut events = running();
    events.extend([ca("b", T0 + T / 2), activated("b")]);
    let state = given(&events);
    assert_eq!(state.ca("a").map(|s| s.status), Some(SlotStatus::Old));
    // a is old but valid: it stays (in the bundle) and nothing happens.
    assert_eq!(ca_only(when_planned_at(&state, T0 + T - 1)), vec![]);
    // One second past a's notAfter: a leaves; b, at its own half-life, gets a successor.
    assert_eq!(
        ca_only(when_planned_at(&state, T0 + T + 1)),
        vec![retire("a"), RotationAction::PrepareCa { activate: false }]
    );
}

#[test]
fn restart_between_prepare_and_activate_picks_up_where_it_stopped() {
    // The log as a crashed server left it: b prepared at half-life, not yet active.
    let mut events = running();
    events.push(ca("b", T0 + T / 2));
    let replayed = given(&events);
    assert_eq!(
        replayed.prepared_ca().map(|r| r.authority_id.as_str()),
        Some("b")
    );
    assert_eq!(
        ca_only(when_planned_at(&replayed, T0 + 5 * T / 6)),
        vec![activate("b")]
    );
}

#[test]
fn restart_after_the_first_prepare_activates_it() {
    // Crash between the first CaPrepared and its CaActivated.
    let state = given(&[ca("a", T0)]);
    assert_eq!(
        ca_only(when_planned_at(&state, T0 + 1)),
        vec![activate("a")]
    );
}

#[test]
fn down_past_activation_prepares_and_activates_at_once() {
    assert_eq!(
        ca_only(when_planned_at(&given(&running()), T0 + 5 * T / 6 + 100)),
        vec![RotationAction::PrepareCa { activate: true }]
    );
}

#[test]
fn down_past_expiry_replaces_the_expired_active_ca() {
    let state = given(&running());
    assert_eq!(
        ca_only(when_planned_at(&state, T0 + T + 1)),
        vec![RotationAction::PrepareCa { activate: true }]
    );
}

#[test]
fn an_expired_prepared_ca_is_retired_and_replaced() {
    let state = given(&[ca("a", T0)]);
    assert_eq!(
        ca_only(when_planned_at(&state, T0 + T + 1)),
        vec![retire("a"), RotationAction::PrepareCa { activate: true }]
    );
}

#[test]
fn a_ca_whose_key_is_lost_is_replaced_but_kept_in_the_bundle() {
    let state = given(&running());
    let unusable = BTreeSet::from(["a".to_owned()]);
    assert_eq!(
        ca_only(plan(
            &state,
            T0 + 10,
            &RotationSettings::default(),
            &unusable
        )),
        vec![RotationAction::PrepareCa { activate: true }]
    );
    // A keyless prepared one is dropped (it never signed anything).
    let mut events = running();
    events.push(ca("b", T0 + T / 2));
    let unusable = BTreeSet::from(["b".to_owned()]);
    assert_eq!(
        ca_only(plan(
            &given(&events),
            T0 + T / 2 + 1,
            &RotationSettings::default(),
            &unusable
        )),
        vec![retire("b"), RotationAction::PrepareCa { activate: false }]
    );
}

#[test]
fn custom_fractions_and_their_validation() {
    let settings = RotationSettings {
        prepare_at: Fraction::new(1, 4),
        activate_at: Fraction::new(1, 2),
    };
    assert_eq!(settings.validate(), Ok(()));
    let state = given(&running());
    assert_eq!(
        ca_only(plan(&state, T0 + T / 4, &settings, &BTreeSet::new())),
        vec![RotationAction::PrepareCa { activate: false }]
    );
    assert!(RotationSettings {
        prepare_at: Fraction::new(5, 6),
        activate_at: Fraction::new(1, 2),
    }
    .validate()
    .is_err());
    assert!(RotationSettings {
        prepare_at: Fraction::new(0, 2),
        activate_at: Fraction::new(1, 2),
    }
    .validate()
    .is_err());
}

#[test]
fn fraction_points_are_exact() {
    assert_eq!(Fraction::new(5, 6).point(0, 86_400), 72_000);
    assert_eq!(Fraction::new(1, 2).point(-10, 86_390), 43_190);
    assert_eq!(Fraction::new(1, 2).point(i64::MIN, i64::MAX), -1);
}
