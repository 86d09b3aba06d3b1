#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Forced rotation in the simulator (`[[timeline]]` `force_rotation`): the timeline parses
//! and refuses bad input by name; every agent re-signs its SVIDs of the tainted CA through
//! the bounded signing queue and the figures say so; a revoke that reaches agents before
//! they re-signed is caught; a run is a function of its seed.

use std::path::PathBuf;
use std::time::Duration;

use tessera_sim::engine::run;
use tessera_sim::metrics::{RotationKind, RotationRecord, RunMetrics};
use tessera_sim::scenario::{ActionKind, FaultKind, Scenario, ScenarioError};

fn ci_taint() -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/ci/taint.toml");
    Scenario::from_file(&path).unwrap()
}

fn forced(m: &RunMetrics) -> &RotationRecord {
    let forced: Vec<&RotationRecord> = m
        .rotations
        .iter()
        .filter(|r| r.kind == RotationKind::Forced)
        .collect();
    assert_eq!(forced.len(), 1, "{:?}", m.rotations);
    forced[0]
}

const MINIMAL: &str = "duration = \"2h\"\n[[timeline]]\nat = \"1h\"\naction = \"force_rotation\"\n";

#[test]
fn the_timeline_parses_with_its_defaults() {
    let s = Scenario::from_toml_str(MINIMAL).unwrap();
    assert_eq!(s.timeline.len(), 1);
    let t = &s.timeline[0];
    assert_eq!(t.action, ActionKind::ForceRotation);
    assert_eq!(t.at, Duration::from_secs(3600));
    assert_eq!(t.server, 0);
    assert_eq!(t.activate_after, Duration::from_secs(60));
    assert_eq!(t.taint_after, Duration::ZERO);
    assert_eq!(t.revoke_after, None);
    assert_eq!(t.steps_ms(), (3_600_000, 3_660_000, 3_660_000, None));

    let ci = ci_taint();
    assert_eq!(ci.timeline[0].revoke_after, Some(Duration::from_secs(300)));
    // The scenario without a timeline has none.
    assert!(Scenario::from_toml_str("name = \"x\"\n")
        .unwrap()
        .timeline
        .is_empty());
}

#[test]
fn bad_timeline_input_is_refused_naming_the_key_and_the_fix() {
    let parse_err = |text: &str| Scenario::from_toml_str(text).unwrap_err().to_string();

    let err = parse_err(&MINIMAL.replace("force_rotation", "rotate_harder"));
    assert!(
        err.contains("rotate_harder") && err.contains("force_rotation"),
        "{err}"
    );

    let err = parse_err(&format!("{MINIMAL}revoke_afer = \"10m\"\n"));
    assert!(
        err.contains("revoke_afer") && err.contains("revoke_after"),
        "{err}"
    );

    let err = parse_err(&format!("{MINIMAL}revoke_after = \"ten minutes\"\n"));
    assert!(err.contains("ten minutes"), "{err}");

    let err = parse_err("[[timeline]]\nat = \"1h\"\n");
    assert!(err.contains("action"), "{err}");

    let err = Scenario::from_toml_str(&MINIMAL.replace("at = \"1h\"", "at = \"3h\"")).unwrap_err();
    assert!(matches!(err, ScenarioError::Invalid { ref key, .. } if key == "timeline[0].at"));
    assert!(err.to_string().contains("inside the run"), "{err}");

    let err = Scenario::from_toml_str(&format!("{MINIMAL}server = 1\n")).unwrap_err();
    assert!(matches!(err, ScenarioError::Invalid { ref key, .. } if key == "timeline[0].server"));
    assert!(err.to_string().contains("0 to servers - 1"), "{err}");
}

#[test]
fn every_agent_re_signs_its_svids_of_the_tainted_ca_through_the_bounded_queue() {
    let sc = ci_taint();
    let m = run(&sc, 3).unwrap();
    assert_eq!(m.violation, None, "{:?}", m.violation);
    let f = forced(&m);
    eprintln!("{f:?}");
    assert_eq!(f.refused, None);
    assert!(f.prepared_ms.is_some() && f.activated_ms.is_some() && f.revoked_ms.is_some());
    let tainted = f.tainted_ms.unwrap();
    assert_eq!(f.activated_ms, Some(tainted), "taint_after = 0s");
    assert_eq!(f.affected_agents, 100);
    assert_eq!(
        f.affected_svids, 500,
        "every SVID was of the CA active since 50m"
    );
    assert!(f.replaced_svids >= 500, "{}", f.replaced_svids);
    assert_eq!(
        f.agent_done_ms.len(),
        100,
        "every agent moved off the tainted CA"
    );
    assert_eq!(f.taint_received_ms.len(), 100);
    assert_eq!((f.agents_remaining, f.svids_remaining), (0, 0));
    // 500 SVIDs at 100/s cannot take less than 5 s, and they did not wait for renewal (the
    // SVIDs live 10m: half-life is 5 minutes away).
    let last = *f.agent_done_ms.iter().max().unwrap();
    assert!((5_000..120_000).contains(&last), "{last} ms");
    // The queue (200, 150 for renewals) turned rounds away: queueing, as at fleet scale.
    let minute = usize::try_from(tainted / 60_000).unwrap();
    assert!(
        m.minutes[minute].refused_overloaded > 0,
        "{:?}",
        m.minutes[minute]
    );
    assert!(m.minutes[minute].queue_depth_max <= 200);

    // The scheduled rotation at 50m is the baseline: SVIDs moved as they fell due.
    let scheduled = m
        .rotations
        .iter()
        .find(|r| r.kind == RotationKind::Scheduled)
        .unwrap();
    let baseline = *scheduled.agent_done_ms.iter().max().unwrap();
    assert!(
        baseline > 10 * last,
        "scheduled {baseline} ms, forced {last} ms"
    );
}

#[test]
fn the_same_seed_gives_the_same_figures() {
    let sc = ci_taint();
    let a = run(&sc, 9).unwrap();
    let b = run(&sc, 9).unwrap();
    assert_eq!(a.violation, None, "{:?}", a.violation);
    assert_eq!(
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&b).unwrap()
    );
    assert_eq!(
        tessera_sim::report::to_json(&a),
        tessera_sim::report::to_json(&b)
    );
    let c = run(&sc, 10).unwrap();
    assert_ne!(forced(&a).agent_done_ms, forced(&c).agent_done_ms);
}

#[test]
fn a_revoke_that_reaches_agents_before_they_re_signed_is_caught() {
    let mut sc = ci_taint();
    sc.timeline[0].revoke_after = Some(Duration::ZERO);
    let m = run(&sc, 3).unwrap();
    let v = m
        .violation
        .as_ref()
        .expect("revoked at the taint: nobody re-signed yet");
    assert_eq!(v.checker, "svid_chains_to_held_bundle");
    assert!(v.detail.contains("revoked at"), "{}", v.detail);
    // A revoke after the fleet re-signed (the scenario's 5m) is clean: see above.
}

#[test]
fn agents_cut_off_during_the_taint_keep_svids_of_the_tainted_ca() {
    let mut sc = ci_taint();
    sc.timeline[0].revoke_after = None;
    sc.faults.push(
        toml::from_str::<tessera_sim::scenario::Fault>(
            "kind = \"partition\"\nat = \"1h9m\"\nduration = \"1h\"\nfraction = 0.2\n",
        )
        .unwrap(),
    );
    assert_eq!(sc.faults[0].kind, FaultKind::Partition);
    let m = run(&sc, 3).unwrap();
    assert_eq!(m.violation, None, "{:?}", m.violation);
    let f = forced(&m);
    assert!(f.agents_remaining > 0, "{f:?}");
    assert_eq!(
        f.agent_done_ms.len() as u64 + f.agents_remaining,
        f.affected_agents,
        "{f:?}"
    );
}
