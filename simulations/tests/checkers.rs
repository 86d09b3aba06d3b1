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
