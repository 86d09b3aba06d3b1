#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The engine end to end on small scenarios: determinism, outages, several servers.

use std::path::PathBuf;

use tessera_sim::engine::run;
use tessera_sim::scenario::Scenario;

// As the binary: the scale test allocates and frees millions of small cache entries.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn ci(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/ci")
        .join(format!("{name}.toml"));
    Scenario::from_file(&path).unwrap()
}

/// What a run did, for the test log.
fn summary(m: &tessera_sim::metrics::RunMetrics) {
    let col = |f: fn(&tessera_sim::metrics::MinuteSample) -> u64| {
        m.minutes
            .iter()
            .map(f)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "{}: signatures {} rotations {} reconnects {} log {} propagation n={} checks {:?}\n  \
         unserved/min {}\n  queue max/min {}\n  refused/min {}\n  connected/min {}",
        m.scenario,
        m.signatures,
        m.ca_rotations,
        m.reconnects,
        m.log_events,
        m.propagation_ms.len(),
        m.checks,
        col(|s| s.unserved_identities),
        col(|s| s.queue_depth_max),
        col(|s| s.refused_overloaded),
        col(|s| s.connected_agents),
    );
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

/// The scale measurement, not a CI step: `SIM_SCENARIO=simulations/scenarios/steady.toml
/// [SIM_AGENTS=10000] cargo test --release -p tessera-sim --test engine -- --ignored
/// --nocapture scale`. Prints wall time and peak RSS.
#[test]
#[ignore = "a measurement: run it by hand with --release"]
#[allow(clippy::disallowed_methods)] // Wall time of the measurement itself, not of the run.
fn scale() {
    let path = std::env::var("SIM_SCENARIO").expect("SIM_SCENARIO=path/to/scenario.toml");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let mut scenario = Scenario::from_file(&path).unwrap();
    if let Ok(agents) = std::env::var("SIM_AGENTS") {
        scenario.fleet.agents = agents.parse().unwrap();
    }
    if let Ok(d) = std::env::var("SIM_DURATION") {
        scenario.duration = tessera_edge::duration::parse_duration(&d).unwrap();
    }
    let started = std::time::Instant::now();
    let metrics = tessera_sim::engine::run_with_progress(&scenario, scenario.seed, &mut |p| {
        eprintln!(
            "  {:.1}/{:.1} virtual h, {} events, {:.0} s wall",
            p.virtual_ms as f64 / 3.6e6,
            p.total_ms as f64 / 3.6e6,
            p.events,
            started.elapsed().as_secs_f64()
        );
    })
    .unwrap();
    let wall = started.elapsed();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    let peak_per_minute = metrics.minutes.iter().map(|m| m.signatures).max();
    eprintln!(
        "scenario {} agents {} entries {} virtual {} h: wall {:.1} s, {hwm}; signatures {} \
         (peak {:?}/min), rotations {}, reconnects {}, log events {}, violation {:?}, checks {:?}",
        metrics.scenario,
        metrics.agents,
        metrics.entries,
        metrics.virtual_ms / 3_600_000,
        wall.as_secs_f64(),
        metrics.signatures,
        peak_per_minute,
        metrics.ca_rotations,
        metrics.reconnects,
        metrics.log_events,
        metrics.violation,
        metrics.checks
    );
}

#[test]
fn an_outage_longer_than_the_svid_ttl_leaves_workloads_unserved_never_served_expired() {
    let m = run(&ci("outage"), 3).unwrap();
    summary(&m);
    assert_eq!(m.violation, None, "{:?}", m.violation);
    // Minutes 30..50 the server is down; SVIDs of 10m expire during it.
    let worst = m.minutes[30..52]
        .iter()
        .map(|s| s.unserved_identities)
        .max()
        .unwrap();
    assert!(
        worst > 0,
        "nobody went unserved during a 20m outage of 10m SVIDs"
    );
    assert_eq!(m.minutes[29].unserved_identities, 0, "{:?}", m.minutes[29]);
    assert_eq!(
        m.minutes.last().unwrap().unserved_identities,
        0,
        "all served again after"
    );
    assert!(m.checks["no_expired_svid_served"] > 0);
    assert!(
        m.reconnects >= 100,
        "every agent reconnected: {}",
        m.reconnects
    );
}

#[test]
fn a_reconnect_storm_stays_within_the_queue_bound_and_recovers() {
    let m = run(&ci("storm"), 5).unwrap();
    summary(&m);
    assert_eq!(m.violation, None, "{:?}", m.violation);
    assert!(m.reconnects >= 300, "{}", m.reconnects);
    assert!(m.minutes.iter().all(|s| s.queue_depth_max <= 500));
    let refused: u64 = m.minutes.iter().map(|s| s.refused_overloaded).sum();
    let deepest = m.minutes.iter().map(|s| s.queue_depth_max).max().unwrap();
    assert!(
        refused > 0 && deepest >= 400,
        "the storm met the bound: {refused} refused, depth {deepest}"
    );
    assert_eq!(m.minutes.last().unwrap().unserved_identities, 0);
    assert!(m.checks["signing_queue_bounded"] > 0);
}

#[test]
fn churn_with_loss_keeps_every_cache_equal_to_its_view() {
    let m = run(&ci("churn"), 11).unwrap();
    summary(&m);
    assert_eq!(m.violation, None, "{:?}", m.violation);
    assert!(!m.propagation_ms.is_empty());
    assert!(m.reconnects > 0, "loss breaks some streams");
    assert!(m.checks["no_missed_or_repeated_update"] > 1000);
}

#[test]
fn three_servers_one_failing_agents_fail_over() {
    let m = run(&ci("multi"), 13).unwrap();
    summary(&m);
    assert_eq!(m.violation, None, "{:?}", m.violation);
    // Each server rotates its own CA: more activations than one server's.
    assert!(m.ca_rotations >= 3, "{}", m.ca_rotations);
    assert!(m.reconnects > 0);
    assert_eq!(m.minutes.last().unwrap().unserved_identities, 0);
}

#[test]
fn every_scenario_file_parses() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for dir in [root.clone(), root.join("ci")] {
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
    }
    assert!(seen >= 10, "{seen} scenario files");
}

#[test]
fn a_scripted_timeline_replaces_the_generated_fleet() {
    use tessera_actors::server::events::{AttestedAgent, ServerEvent};
    use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};
    use tessera_sim::scenario::Scripted;

    let td = TrustDomain::new("example.org").unwrap();
    let mut scenario = ci("steady");
    scenario.duration = std::time::Duration::from_secs(3600);
    let mut script = Vec::new();
    let mut entry_ids = Vec::new();
    for i in 0..3u8 {
        let agent = SpiffeId::from_path(&td, &format!("/spire/agent/x509pop/node{i}")).unwrap();
        script.push(Scripted {
            at_ms: u64::from(i) * 1000,
            event: ServerEvent::AgentAttested(AttestedAgent {
                id: agent.clone(),
                attestation_type: "x509pop".into(),
                selectors: SelectorSet::new(),
                svid_serial: "01".into(),
                svid_expires_at: scenario.start_unix + 3600,
                attested_at: scenario.start_unix,
                can_reattest: true,
            }),
        });
        for j in 0..2u8 {
            let id = EntryId::from_random_bytes([i * 16 + j + 1; 16]);
            entry_ids.push(id.clone());
            script.push(Scripted {
                at_ms: 10_000 + u64::from(i * 2 + j) * 1000,
                event: ServerEvent::EntryCreated(RegistrationEntry {
                    id,
                    spiffe_id: SpiffeId::from_path(&td, &format!("/node{i}/w{j}")).unwrap(),
                    parent_id: agent.clone(),
                    selectors: SelectorSet::parse_all([format!("unix:uid:{j}").as_str()]).unwrap(),
                    x509_svid_ttl: None,
                    jwt_svid_ttl: None,
                    federates_with: Vec::new(),
                    dns_names: Vec::new(),
                    admin: false,
                    downstream: false,
                    hint: String::new(),
                    expires_at: None,
                    created_at: scenario.start_unix,
                    revision: 0,
                }),
            });
        }
    }
    // One entry deleted half-way.
    script.push(Scripted {
        at_ms: 1_800_000,
        event: ServerEvent::EntryDeleted {
            id: entry_ids[0].clone(),
        },
    });
    scenario.script = script;
    let m = run(&scenario, 1).unwrap();
    assert_eq!(m.violation, None, "{:?}", m.violation);
    assert_eq!(m.agents, 3, "the generator made nothing");
    assert_eq!(m.entries, 5);
    // Six creations and one deletion reached the agents as updates.
    assert_eq!(m.propagation_ms.len(), 7, "{:?}", m.propagation_ms);
    assert!(m.signatures >= 6 * 5, "{}", m.signatures);
    assert_eq!(m.minutes.last().unwrap().unserved_identities, 0);
}

#[test]
fn the_svid_cache_size_bounds_eager_signing_and_used_entries_are_signed_beyond_it() {
    let mut scenario = ci("steady");
    scenario.duration = std::time::Duration::from_secs(10 * 60);
    scenario.fleet.agents = 50;
    scenario.fleet.entries_per_agent = 40;
    scenario.fleet.used_entries_per_agent = 5;
    scenario.set("x509_svid_cache_max_size", "10").unwrap();
    let m = run(&scenario, 1).unwrap();
    assert_eq!(m.violation, None, "{:?}", m.violation);
    // Before any renewal (SVIDs live 10m): each agent signed its 10 eager entries and the
    // used ones (about 5, chosen by hash), not its 40.
    let first: u64 = m.minutes[..3].iter().map(|s| s.signatures).sum();
    assert!(
        (50 * 10..=50 * 20).contains(&first),
        "{first} signatures for 50 agents"
    );
    assert_eq!(
        m.minutes[3].unserved_identities, 0,
        "every used entry is served"
    );
    // 0 is the agent's default, 1,000: more than the 40 entries, so every entry is signed.
    scenario.set("x509_svid_cache_max_size", "0").unwrap();
    let all = run(&scenario, 1).unwrap();
    let first: u64 = all.minutes[..3].iter().map(|s| s.signatures).sum();
    assert_eq!(first, 50 * 40);
}

#[test]
fn with_the_default_svid_cache_a_large_view_costs_far_fewer_signatures_than_eager_signing() {
    let scenario = ci("lru");
    let lru = run(&scenario, 1).unwrap();
    summary(&lru);
    assert_eq!(lru.violation, None, "{:?}", lru.violation);
    let mut eager_scenario = scenario.clone();
    eager_scenario
        .set("x509_svid_cache_max_size", "1000000")
        .unwrap();
    let eager = run(&eager_scenario, 1).unwrap();
    summary(&eager);
    assert_eq!(eager.violation, None, "{:?}", eager.violation);
    // 1,000 of each agent's 3,000 entries kept signed against all 3,000: under half.
    assert!(
        lru.signatures * 2 < eager.signatures,
        "default cache {} signatures, eager {}",
        lru.signatures,
        eager.signatures
    );
    // The first fill (renewals start 2 minutes after it at the earliest): each agent signs
    // its 1,000 (its 5 used entries among them, evicting up to 5 others), not its 3,000.
    let first = |m: &tessera_sim::metrics::RunMetrics| -> u64 {
        m.minutes[..2].iter().map(|s| s.signatures).sum()
    };
    assert!(
        (4 * 1_000..=4 * 1_005).contains(&first(&lru)),
        "{}",
        first(&lru)
    );
    assert_eq!(first(&eager), 4 * 3_000);
    // Every used entry is served under both policies once the fleet is up.
    for m in [&lru, &eager] {
        assert_eq!(
            m.minutes.last().unwrap().unserved_identities,
            0,
            "{}",
            m.scenario
        );
    }
}
