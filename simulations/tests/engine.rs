#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The engine end to end on small scenarios: determinism, outages, several servers.

use std::path::PathBuf;

use tessera_sim::engine::run;
use tessera_sim::scenario::Scenario;

fn ci(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/ci")
        .join(format!("{name}.toml"));
    Scenario::from_file(&path).unwrap()
}

#[test]
fn the_same_seed_gives_a_byte_identical_report_and_another_seed_does_not() {
    let scenario = ci("steady");
    let a = run(&scenario, 7).unwrap();
    let b = run(&scenario, 7).unwrap();
    let c = run(&scenario, 8).unwrap();
    assert_eq!(a.violation, None, "{:?}", a.violation);
    assert!(a.signatures > 0);
    eprintln!(
        "signatures {} rotations {} checks {:?}",
        a.signatures, a.ca_rotations, a.checks
    );
    assert_eq!(
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&b).unwrap()
    );
    assert_ne!(
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&c).unwrap()
    );
}
