//! Admin ergonomics SPIRE users expect (issue 14 §5), end to end against a server process:
//! `entry create|update --data`, `entry delete --file`, `--output json`, `validate`,
//! `healthcheck --verbose`; each with its bad input.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{cli, fails, ok, ok_json, Workspace, BIN};

/// Runs a CLI verb against `socket` with `input` on stdin.
fn cli_stdin(socket: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--socketPath")
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const NODE: &str = "spiffe://example.org/spire/agent/x509pop/n1";

fn entry_json(id: &str, path: &str, uid: u32) -> String {
    format!(
        r#"{{"entry_id": "{id}", "spiffe_id": "spiffe://example.org/{path}", "parent_id": "{NODE}",
            "selectors": [{{"type": "unix", "value": "uid:{uid}"}}], "x509_svid_ttl": 600,
            "dns_names": ["{path}.example.org"], "federates_with": ["partner.org"], "hint": "{path}"}}"#
    )
}

#[test]
fn entry_batches_from_files_and_stdin() {
    let ws = Workspace::new();
    let server = ws.start();
    let s = server.socket.as_path();
    let file = ws.path().join("entries.json");

    // Create three from a file: pretty output shows each, as the flag form does.
    let batch = format!(
        r#"{{"entries": [{}, {}, {}]}}"#,
        entry_json("a", "a", 1),
        entry_json("b", "b", 2),
        entry_json("c", "c", 3)
    );
    std::fs::write(&file, &batch).unwrap();
    let out = ok(s, &["entry", "create", "--data", file.to_str().unwrap()]);
    for want in [
        "Entry ID         : a",
        "Entry ID         : b",
        "Entry ID         : c",
        "SPIFFE ID        : spiffe://example.org/b",
        "X509-SVID TTL    : 600",
        "DNS name         : c.example.org",
        "FederatesWith    : partner.org",
        "Hint             : a",
    ] {
        assert!(out.contains(want), "{want:?} missing from\n{out}");
    }
    assert_eq!(ok(s, &["entry", "count"]).trim(), "3 registration entries");

    // From stdin, JSON output; one item fails (duplicate): exit 1, each result in the JSON,
    // the failure named on stderr by its index.
    let batch = format!(
        r#"{{"entries": [{}, {}]}}"#,
        entry_json("d", "d", 4),
        entry_json("a2", "a", 1)
    );
    let out = cli_stdin(
        s,
        &["entry", "create", "--data", "-", "--output", "json"],
        &batch,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["status"]["code"], 0);
    assert_eq!(results[0]["entry"]["id"], "d");
    assert_eq!(results[1]["status"]["code"], 6, "AlreadyExists: {doc}");
    assert_eq!(results[1]["entry"]["spiffe_id"]["path"], "/a");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("entry create: failed to create 1 of 2 entries:")
            && err.contains("entries[1] (spiffe://example.org/a): AlreadyExists: "),
        "{err}"
    );
    assert_eq!(ok(s, &["entry", "count"]).trim(), "4 registration entries");

    // Update from `entry show --output json`, edited: a round trip of the JSON forms.
    let shown = ok_json(s, &["entry", "show", "--entryID", "b"]);
    let mut e = shown["entries"][0].clone();
    e["x509_svid_ttl"] = 1200.into();
    e["selectors"] = serde_json::json!([{"type": "unix", "value": "uid:22"}]);
    std::fs::write(&file, serde_json::json!({ "entries": [e] }).to_string()).unwrap();
    let out = ok(s, &["entry", "update", "--data", file.to_str().unwrap()]);
    assert!(out.contains("X509-SVID TTL    : 1200"), "{out}");
    let now = ok_json(s, &["entry", "show", "--entryID", "b"]);
    assert_eq!(now["entries"][0]["x509_svid_ttl"], 1200);
    assert_eq!(now["entries"][0]["selectors"][0]["value"], "uid:22");
    assert_eq!(now["entries"][0]["hint"], "b", "unchanged fields kept");
    // An update needs each entry's id.
    std::fs::write(
        &file,
        format!(r#"{{"entries": [{}]}}"#, entry_json("", "z", 9)),
    )
    .unwrap();
    let err = fails(s, &["entry", "update", "--data", file.to_str().unwrap()]);
    assert!(err.contains("entries[0]: entry_id: is required"), "{err}");

    // Delete from a file: one unknown id fails, the others go; exit 1 naming it.
    let ids = ws.path().join("ids.json");
    std::fs::write(&ids, r#"{"ids": ["a", "b", "nope"]}"#).unwrap();
    let out = cli(s, &["entry", "delete", "--file", ids.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Deleted entry with ID: a\n")
            && stdout.contains("Deleted entry with ID: b\n")
            && stdout.contains("Deleted 2 entries successfully"),
        "{stdout}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("failed to delete 1 of 3 entries") && err.contains("ids[2] (nope): NotFound"),
        "{err}"
    );
    let out = cli_stdin(
        s,
        &["entry", "delete", "--file", "-", "--output", "json"],
        r#"{"ids": ["c"]}"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["results"][0]["id"], "c");
    assert_eq!(doc["results"][0]["status"]["code"], 0);
    assert_eq!(ok(s, &["entry", "count"]).trim(), "1 registration entries");
    server.stop();
}

#[test]
fn bad_batch_files_are_refused_before_any_call() {
    let ws = Workspace::new();
    let server = ws.start();
    let s = server.socket.as_path();
    let file = ws.path().join("bad.json");
    let path = file.to_str().unwrap();

    std::fs::write(&file, "{\"entries\": [\n  {\"spiffe_id\": }\n]}").unwrap();
    let err = fails(s, &["entry", "create", "--data", path]);
    assert!(
        err.starts_with(&format!(
            "entry create: --data {path:?}: is not valid JSON: "
        )) && err.contains("line 2"),
        "{err}"
    );

    let good = entry_json("x", "x", 1);
    for (second, want) in [
        (
            good.replace("spiffe://example.org/x", "spiffe://Ex.org/x"),
            "entries[1]: spiffe_id: \"spiffe://Ex.org/x\": trust domain characters",
        ),
        (
            good.replace("\"x509_svid_ttl\": 600", "\"x509_svid_ttl\": \"10m\""),
            "entries[1]: x509_svid_ttl: must be whole seconds",
        ),
        (
            good.replace("\"selectors\"", "\"selector\""),
            "entries[1]: selector: unknown field",
        ),
        (
            good.replace("uid:1", "").replace("\"unix\"", "\"\""),
            "entries[1]: selectors[0]: ",
        ),
    ] {
        std::fs::write(&file, format!(r#"{{"entries": [{good}, {second}]}}"#)).unwrap();
        let err = fails(s, &["entry", "create", "--data", path]);
        assert!(
            err.starts_with(&format!("entry create: --data {path}: ")) && err.contains(want),
            "{want:?} not in {err}"
        );
    }
    assert_eq!(
        ok(s, &["entry", "count"]).trim(),
        "0 registration entries",
        "nothing of a bad file is created"
    );

    // --data with the per-entry flags: refused, naming them.
    std::fs::write(&file, format!(r#"{{"entries": [{good}]}}"#)).unwrap();
    let err = fails(
        s,
        &[
            "entry",
            "create",
            "--data",
            path,
            "--spiffeID",
            "spiffe://example.org/y",
            "--selector",
            "unix:uid:1",
        ],
    );
    assert!(
        err.contains("--data cannot be used with --spiffeID, --selector"),
        "{err}"
    );
    let err = fails(s, &["entry", "update", "--data", path, "--entryID", "x"]);
    assert!(
        err.contains("--data cannot be used with --entryID"),
        "{err}"
    );
    let err = fails(s, &["entry", "delete", "--file", path, "--entryID", "x"]);
    assert!(
        err.contains("--file cannot be used with --entryID"),
        "{err}"
    );
    let err = fails(s, &["entry", "delete", "--file", path]);
    assert!(err.contains("has no \"ids\" array"), "{err}");

    // Bounds: size and count.
    let big = ws.path().join("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(16 * 1024 * 1024 + 1).unwrap();
    let err = fails(s, &["entry", "create", "--data", big.to_str().unwrap()]);
    assert!(err.contains("is larger than 16777216 bytes"), "{err}");
    let many = vec![good.as_str(); 1_001].join(",");
    std::fs::write(&file, format!(r#"{{"entries": [{many}]}}"#)).unwrap();
    let err = fails(s, &["entry", "create", "--data", path]);
    assert!(
        err.contains("1001 items") && err.contains("limits.max_batch_size"),
        "{err}"
    );
    let err = fails(s, &["entry", "create", "--data", "/nonexistent/e.json"]);
    assert!(err.contains("/nonexistent/e.json"), "{err}");
    server.stop();
}

#[test]
fn healthcheck_verbose_says_what_it_checked() {
    let ws = Workspace::new();
    let server = ws.start();
    let socket = server.socket.clone();
    let s = socket.as_path();
    assert_eq!(ok(s, &["healthcheck"]), "Server is healthy.\n", "unchanged");
    let out = ok(s, &["healthcheck", "--verbose"]);
    let sock = s.display().to_string();
    for want in [
        format!("Checking server health at {sock}\n"),
        format!("Socket: {sock} (a Unix socket)\n"),
        "Connect: ok\n".into(),
        "Server (service \"\"): SERVING\n".into(),
        "Service spire.api.server.entry.v1.Entry: SERVING\n".into(),
        "Service spire.api.server.trustdomain.v1.TrustDomain: SERVING\n".into(),
        "Service tessera.eventlog.v1.EventLog: SERVING\n".into(),
        "Server is healthy.\n".into(),
    ] {
        assert!(out.contains(&want), "{want:?} missing from\n{out}");
    }
    let doc = ok_json(s, &["healthcheck", "--verbose"]);
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["status"], "SERVING");
    assert_eq!(
        doc["services"]["spire.api.server.agent.v1.Agent"],
        "SERVING"
    );
    server.stop();

    // Nothing listening: the failed step is printed, then the error.
    let out = cli(s, &["healthcheck", "--verbose"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("Socket: {sock}: No such file or directory"))
            && stdout.contains("Connect: failed (healthcheck: cannot reach the server"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).starts_with("healthcheck: cannot reach the server at "),
        "{}",
        text(&out.stderr)
    );
}

/// `validate` with `args`; (exit code, stdout, stderr).
fn validate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("validate")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn validate_checks_the_config_as_run_does_and_starts_nothing() {
    let ws = Workspace::new();
    let conf = ws.path().join("server.toml");
    let data = ws.data_dir();
    let socket = ws.socket();
    std::fs::write(
        &conf,
        format!(
            "[server]\ntrust_domain = \"example.org\"\ndata_dir = {:?}\nsocket_path = {:?}\nbind_port = 0\n",
            data.display().to_string(),
            socket.display().to_string()
        ),
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let (code, out, err) = validate(&["--config", c]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!("Configuration is valid: {c} (trust domain example.org)\n")
    );
    let (code, out, _) = validate(&["--config", c, "--output", "json"]);
    assert_eq!(code, Some(0));
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["trust_domain"], "example.org");
    // A flag is checked as `run` checks it.
    let (code, _, err) = validate(&["--config", c, "--trustDomain", "Ex.org"]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("validate: configuration is invalid: --trustDomain \"Ex.org\": "),
        "{err}"
    );

    std::fs::write(&conf, "[server]\nca_ttl = \"soon\"\n").unwrap();
    let (code, out, err) = validate(&["--config", c]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(err.contains("ca_ttl"), "{err}");
    let (code, out, _) = validate(&["--config", c, "--output", "json"]);
    assert_eq!(code, Some(1));
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["valid"], false);
    assert!(doc["error"].as_str().unwrap().contains("ca_ttl"), "{doc}");
    std::fs::write(&conf, "[limits]\nmax_batch_size = 0\n").unwrap();
    let (code, _, err) = validate(&["--config", c]);
    assert_eq!(code, Some(1));
    assert!(err.contains("limits.max_batch_size"), "{err}");
    let (code, _, err) = validate(&["--config", "/nonexistent/server.toml"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot read config file /nonexistent/server.toml"),
        "{err}"
    );

    assert!(!data.exists(), "validate opens no store");
    assert!(!socket.exists(), "validate binds no socket");
}
