//! The report's contract: percentiles by nearest rank, a byte-identical JSON report for equal
//! metrics, a text report that names the violation and how to reproduce it, and plots that
//! are SVG with one point per virtual minute.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;

use tessera_sim::metrics::{MinuteSample, RotationKind, RotationRecord, RunMetrics, Violation};
use tessera_sim::report::{
    nearest_rank, plot_svg, queue_svg, render_text, signing_svg, to_json, CheckerOutcome, RunInfo,
    Summary,
};

/// 48 virtual hours with a rotation spike at hour 24 and an outage-like queue bump.
fn metrics(violation: bool) -> RunMetrics {
    let minutes: Vec<MinuteSample> = (0..48 * 60u64)
        .map(|minute| MinuteSample {
            minute,
            signatures: if minute == 24 * 60 + 3 {
                9_000
            } else {
                100 + minute % 7
            },
            queue_depth_max: if (1440..1450).contains(&minute) {
                500
            } else {
                minute % 5
            },
            refused_overloaded: u64::from(minute == 1441) * 3,
            reconnects: 0,
            connected_agents: 1000,
            unserved_identities: if (600..660).contains(&minute) { 10 } else { 0 },
        })
        .collect();
    let mut checks = BTreeMap::new();
    checks.insert("no_expired_svid_served".to_owned(), 2880);
    checks.insert("signing_queue_bounded".to_owned(), 2880);
    checks.insert("ca_in_bundle_before_use".to_owned(), 0);
    RunMetrics {
        scenario: "steady".into(),
        seed: 42,
        virtual_ms: 48 * 3_600_000,
        agents: 1000,
        entries: 10_000,
        minutes,
        propagation_ms: (1..=1000).rev().collect(),
        signatures: 1_000_000,
        reconnects: 12,
        ca_rotations: 2,
        log_events: 20_000,
        checks,
        violation: violation.then(|| Violation {
            checker: "no_expired_svid_served".into(),
            at_ms: 3_723_004,
            agent: "spiffe://example.org/spire/agent/sim/7".into(),
            entry: Some("spiffe://example.org/workload/3".into()),
            detail: "served an SVID that expired at 1:02:03.000".into(),
            seed: 42,
        }),
        rotations: Vec::new(),
    }
}

#[test]
fn percentiles_by_nearest_rank() {
    let v: Vec<u64> = (1..=1000).collect();
    assert_eq!(nearest_rank(&v, 50), Some(500));
    assert_eq!(nearest_rank(&v, 99), Some(990));
    assert_eq!(nearest_rank(&v, 100), Some(1000));
    assert_eq!(nearest_rank(&[3, 9], 50), Some(3));
    assert_eq!(nearest_rank(&[3, 9], 51), Some(9));
    assert_eq!(nearest_rank(&[], 99), None);

    let s = Summary::from_metrics(&metrics(false));
    // Unsorted input is sorted first.
    assert_eq!(s.propagation.p50_ms, Some(500));
    assert_eq!(s.propagation.p99_ms, Some(990));
    assert_eq!(s.propagation.max_ms, Some(1000));
    assert_eq!(s.propagation.deliveries, 1000);
    assert_eq!(s.signing.per_minute_peak, 9_000);
    assert_eq!(s.signing.peak_minute, 24 * 60 + 3);
    assert_eq!(s.signing.per_minute_p50, Some(103));
    assert_eq!(s.queue.depth_max, 500);
    // 10 of 2880 minutes at 500: rank ⌈0.99·2880⌉ = 2852 is still in the 0..4 minutes.
    assert_eq!(s.queue.depth_p99, Some(4));
    assert_eq!(s.queue.refused_overloaded, 3);
    assert_eq!(s.unserved.peak, 10);
    assert_eq!(s.unserved.peak_minute, 600);
    assert_eq!(s.unserved.identity_minutes, 600);
    let outcome = |name: &str| {
        s.checkers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.outcome)
    };
    assert_eq!(
        outcome("no_expired_svid_served"),
        Some(CheckerOutcome::Passed)
    );
    assert_eq!(
        outcome("ca_in_bundle_before_use"),
        Some(CheckerOutcome::NotRun)
    );

    let failed = Summary::from_metrics(&metrics(true));
    assert_eq!(
        failed
            .checkers
            .iter()
            .find(|c| c.name == "no_expired_svid_served")
            .map(|c| c.outcome),
        Some(CheckerOutcome::Failed)
    );
}

#[test]
fn json_is_byte_identical_for_equal_metrics() {
    let a = to_json(&metrics(true));
    let b = to_json(&metrics(true).clone());
    assert_eq!(a, b);
    assert_ne!(a, to_json(&metrics(false)));
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v["report_version"], 1);
    assert_eq!(v["minutes"].as_array().unwrap().len(), 48 * 60);
    assert_eq!(v["summary"]["signing"]["per_minute_peak"], 9_000);
    assert_eq!(
        v["summary"]["violation"]["checker"],
        "no_expired_svid_served"
    );
    // The summary reads back as what was computed.
    let back: Summary = serde_json::from_value(v["summary"].clone()).unwrap();
    assert_eq!(back, Summary::from_metrics(&metrics(true)));
}

#[test]
fn text_names_the_violation_and_the_reproduce_command() {
    let s = Summary::from_metrics(&metrics(true));
    let info = RunInfo {
        wall_ms: 1234,
        peak_rss_bytes: 64 * 1024 * 1024,
        scenario_file: Some("scenarios/steady.toml".into()),
    };
    let text = render_text(&s, Some(&info));
    assert!(
        text.starts_with("!!! VIOLATION: checker no_expired_svid_served"),
        "{text}"
    );
    assert!(text.contains("1:02:03.004 since start"), "{text}");
    assert!(
        text.contains("spiffe://example.org/spire/agent/sim/7"),
        "{text}"
    );
    assert!(text.contains("spiffe://example.org/workload/3"), "{text}");
    assert!(text.contains("served an SVID that expired"), "{text}");
    assert!(
        text.contains("tessera-sim run scenarios/steady.toml --seed 42"),
        "{text}"
    );
    assert!(text.contains("64.0 MiB"), "{text}");
    assert!(text.contains("1.234 s"), "{text}");

    let clean = render_text(&Summary::from_metrics(&metrics(false)), None);
    assert!(!clean.contains("VIOLATION"), "{clean}");
    assert!(clean.contains("peak 9,000 (minute 24:03)"), "{clean}");
    assert!(clean.contains("not run (proved nothing)"), "{clean}");
    assert!(!clean.contains("wall time"), "{clean}");
}

#[test]
fn a_forced_rotation_is_summarised_over_agents_and_shown() {
    let mut m = metrics(false);
    assert!(
        !to_json(&m).contains("\"rotations\""),
        "no rotation, no key"
    );
    m.rotations.push(RotationRecord {
        kind: RotationKind::Forced,
        server: 0,
        old_ca: "#2 of the shared authority".into(),
        prepared_ms: Some(23_400_000),
        activated_ms: Some(23_460_000),
        tainted_ms: Some(23_460_000),
        revoked_ms: None,
        refused: None,
        affected_agents: 100,
        affected_svids: 500,
        replaced_svids: 500,
        agent_done_ms: (1..=100).rev().map(|i| i * 100).collect(),
        taint_received_ms: vec![20; 100],
        agents_remaining: 0,
        svids_remaining: 0,
    });
    let s = Summary::from_metrics(&m);
    let r = &s.rotations[0];
    assert_eq!(
        (r.done_p50_ms, r.done_p99_ms, r.done_max_ms, r.agents_done),
        (Some(5_000), Some(9_900), Some(10_000), 100)
    );
    let text = render_text(&s, None);
    assert!(text.contains("tainted 6:31:00.000, revoked -"), "{text}");
    assert!(
        text.contains("p50 5,000 ms, p99 9,900 ms, max 10,000 ms over 100 agents"),
        "{text}"
    );
    assert!(
        text.contains("0 unexpired SVIDs of the old CA on 0 agents"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&to_json(&m)).unwrap();
    assert_eq!(v["summary"]["rotations"][0]["kind"], "forced");
    assert_eq!(v["summary"]["rotations"][0]["done_max_ms"], 10_000);
}

/// The `points` of the polyline that has `n` points, if there is one.
fn polyline_with(svg: &str, n: usize) -> Option<Vec<(i64, i64)>> {
    svg.split("<polyline").skip(1).find_map(|rest| {
        let points = rest.split("points=\"").nth(1)?.split('"').next()?;
        let parsed: Vec<(i64, i64)> = points
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        (parsed.len() == n).then_some(parsed)
    })
}

#[test]
fn plots_are_svg_with_one_point_per_minute() {
    let m = metrics(false);
    for svg in [signing_svg(&m).unwrap(), queue_svg(&m).unwrap()] {
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let points = polyline_with(&svg, m.minutes.len()).expect("a polyline, one point a minute");
        // Left to right in time.
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0));
    }
    let signing = signing_svg(&m).unwrap();
    assert!(signing.contains("peak 9000 at 24:03"));
    // Deterministic.
    assert_eq!(signing, signing_svg(&m.clone()).unwrap());

    // Empty and one-minute runs still draw.
    let empty = RunMetrics::default();
    assert!(signing_svg(&empty).unwrap().starts_with("<svg"));
    let one = RunMetrics {
        minutes: vec![MinuteSample::default()],
        ..RunMetrics::default()
    };
    assert!(polyline_with(&queue_svg(&one).unwrap(), 1).is_some());

    let dir = tempfile::tempdir().unwrap();
    plot_svg(&m, dir.path()).unwrap();
    for f in ["signing.svg", "queue.svg"] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(text.starts_with("<svg"));
    }
    if let Some(keep) = std::env::var_os("TESSERA_SIM_KEEP_PLOTS") {
        plot_svg(&m, std::path::Path::new(&keep)).unwrap();
    }
}
