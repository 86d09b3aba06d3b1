#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A checker can fail: deliberately broken rotation settings are caught, and the same
//! scenario with SPIRE's settings is clean.

use std::path::PathBuf;

use tessera_sim::engine::run;
use tessera_sim::scenario::Scenario;

fn broken() -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/ci/broken_rotation.toml");
    Scenario::from_file(&path).unwrap()
}

#[test]
fn a_ca_that_signs_as_soon_as_it_is_prepared_is_caught() {
    let scenario = broken();
    let m = run(&scenario, scenario.seed).unwrap();
    let v = m
        .violation
        .expect("a CA activated at preparation must be caught");
    assert_eq!(v.checker, "ca_in_bundle_before_use", "{v:?}");
    assert_eq!(v.seed, scenario.seed);
    assert!(v.entry.is_some() && v.agent.starts_with("spiffe://example.org/spire/agent/"));
    // The CA's half-life is 30m: the violation is right after it.
    assert!((30 * 60_000..32 * 60_000).contains(&v.at_ms), "{v:?}");
    assert!(m.virtual_ms == v.at_ms, "the run stops at the violation");
}

#[test]
fn the_same_scenario_with_spires_rotation_timing_is_clean() {
    let mut scenario = broken();
    scenario.set("activate_at", "5/6").unwrap();
    let m = run(&scenario, scenario.seed).unwrap();
    assert_eq!(m.violation, None, "{:?}", m.violation);
    assert!(m.ca_rotations >= 1);
    for name in [
        "no_expired_svid_served",
        "svid_chains_to_held_bundle",
        "ca_in_bundle_before_use",
        "no_missed_or_repeated_update",
        "signing_queue_bounded",
    ] {
        assert!(m.checks[name] > 0, "{name} never ran: {:?}", m.checks);
    }
}

#[test]
fn real_certificates_are_checked_by_their_authority_key_identifier() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/ci/real.toml");
    let scenario = Scenario::from_file(&path).unwrap();
    let m = run(&scenario, 2).unwrap();
    assert_eq!(m.violation, None, "{:?}", m.violation);
    assert!(m.signatures >= 300, "{}", m.signatures);
    assert!(m.ca_rotations >= 1);
    assert_eq!(m.checks["ca_in_bundle_before_use"], m.signatures);
    assert_eq!(m.minutes.last().unwrap().unserved_identities, 0);
}

#[test]
fn real_certificates_signed_by_a_ca_activated_at_preparation_are_caught_too() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/ci/real.toml");
    let mut scenario = Scenario::from_file(&path).unwrap();
    scenario.set("activate_at", "1/2").unwrap();
    scenario.fleet.agents = 100;
    scenario.duration = std::time::Duration::from_secs(20 * 60);
    scenario.network.latency_min = std::time::Duration::ZERO;
    scenario.network.latency_max = std::time::Duration::from_secs(3);
    // Whether a reply overtakes the bundle is a draw of the network: a few seeds, bounded.
    let caught = (1..=4u64).find_map(|seed| run(&scenario, seed).unwrap().violation);
    let v = caught.expect("caught with real certificates within 4 seeds");
    assert_eq!(v.checker, "ca_in_bundle_before_use", "{v:?}");
}
