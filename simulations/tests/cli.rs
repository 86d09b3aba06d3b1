//! The `tessera-sim` binary: `run` on a tiny scenario writes every report file, two runs with
//! one seed write byte-identical `report.json`, and bad input exits 2 with a message naming
//! the problem.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::Path;
use std::process::{Command, Output};

/// 10 agents × 2 entries for 30 virtual minutes, CA rotating every 10 minutes.
const TINY: &str = r#"
name = "cli-tiny"
seed = 7
duration = "30m"
crypto = "fast"

[fleet]
agents = 10
entries_per_agent = 2
attest_spread = "10s"

[server]
ca_ttl = "12m"
default_x509_svid_ttl = "4m"

[network]
latency_min = "1ms"
latency_max = "20ms"
"#;

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera-sim"))
        .args(args)
        .env_remove("TESSERA_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_into(scenario: &Path, seed: &str, out: &Path) -> Output {
    let output = sim(&[
        "run",
        scenario.to_str().unwrap(),
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

#[test]
fn run_writes_the_report_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("tiny.toml");
    std::fs::write(&scenario, TINY).unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );

    let first = run_into(&scenario, "11", &a);
    let stdout = text(&first.stdout);
    assert!(
        stdout.contains("scenario cli-tiny, seed 11, completed"),
        "{stdout}"
    );
    assert!(stdout.contains("wall time"), "{stdout}");
    for f in [
        "report.json",
        "run.json",
        "report.txt",
        "signing.svg",
        "queue.svg",
    ] {
        assert!(a.join(f).is_file(), "{f} missing from --out");
    }
    assert_eq!(
        std::fs::read_to_string(a.join("report.txt")).unwrap(),
        stdout
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["summary"]["seed"], 11);
    assert_eq!(report["summary"]["agents"], 10);
    assert_eq!(report["minutes"].as_array().unwrap().len(), 30);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("run.json")).unwrap()).unwrap();
    assert!(info["peak_rss_bytes"].as_u64().unwrap() > 0, "{info}");
    assert!(std::fs::read_to_string(a.join("signing.svg"))
        .unwrap()
        .starts_with("<svg"));

    run_into(&scenario, "11", &b);
    assert_eq!(
        std::fs::read(a.join("report.json")).unwrap(),
        std::fs::read(b.join("report.json")).unwrap(),
        "same scenario and seed, different report.json"
    );
    assert_eq!(
        std::fs::read(a.join("signing.svg")).unwrap(),
        std::fs::read(b.join("signing.svg")).unwrap()
    );
    // Without --seed the scenario's seed is used.
    let own = sim(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        c.to_str().unwrap(),
    ]);
    assert_eq!(own.status.code(), Some(0), "{}", text(&own.stderr));
    assert!(text(&own.stdout).contains("seed 7,"));
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("nope.toml");
    let out = sim(&["run", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("nope.toml") && err.contains("cannot read"),
        "{err}"
    );

    let unknown = dir.path().join("typo.toml");
    std::fs::write(&unknown, TINY.replace("ca_ttl", "ca_tll")).unwrap();
    let out = sim(&["run", unknown.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("ca_tll") && err.contains("typo.toml"), "{err}");
    assert!(out.stdout.is_empty());

    let out = sim(&["run", "--seed", "x", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn a_violation_exits_1_and_its_reproduce_command_reproduces_it() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/ci/broken_rotation.toml");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = sim(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.starts_with("!!! VIOLATION: checker "), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("report.json")).unwrap()).unwrap();
    let checker = report["summary"]["violation"]["checker"].as_str().unwrap();
    assert!(stdout.contains(checker), "{stdout}");

    // The printed command, run again, gives the same report.
    let command = stdout
        .lines()
        .find_map(|l| l.split_once("reproduce").map(|(_, c)| c.trim().to_owned()))
        .expect("a reproduce line");
    let mut words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"tessera-sim"), "{command}");
    words.remove(0);
    words.extend(["--out", b.to_str().unwrap()]);
    let again = sim(&words);
    assert_eq!(again.status.code(), Some(1));
    let (first, second) = (
        std::fs::read_to_string(a.join("report.json")).unwrap(),
        std::fs::read_to_string(b.join("report.json")).unwrap(),
    );
    // Byte for byte: the engine names CAs by owner and order, never by their OS-RNG ids.
    assert_eq!(first, second);
}
