//! `localauthority x509|jwt show|prepare|activate|taint|revoke` against a running server:
//! SPIRE's layout, `--output json`, the refusals' exit code and message, each step in
//! `events tail`, and the revoked root gone from `bundle show`.

use crate::support::{fails, ok, ok_json, Workspace};

fn roots(pem: &str) -> usize {
    pem.matches("BEGIN CERTIFICATE").count()
}

#[test]
fn x509_forced_rotation_step_by_step() {
    let ws = Workspace::new();
    let server = ws.start();
    let s = server.socket.as_path();

    let shown = ok(s, &["localauthority", "x509", "show"]);
    assert!(
        shown.starts_with("Active X.509 authority:\n  Authority ID: "),
        "{shown}"
    );
    assert!(
        shown.contains("No prepared X.509 authority found"),
        "{shown}"
    );
    assert!(shown.contains("No old X.509 authority found"), "{shown}");
    let state = ok_json(s, &["localauthority", "x509", "show"]);
    let first = state["active"]["authority_id"].as_str().unwrap().to_owned();
    assert!(state.get("prepared").is_none(), "{state}");

    let prepared = ok_json(s, &["localauthority", "x509", "prepare"]);
    let next = prepared["prepared_authority"]["authority_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(next, first);
    assert_eq!(roots(&ok(s, &["bundle", "show"])), 2);

    // Out of order: taint the active one; activate without an ID.
    let e = fails(
        s,
        &["localauthority", "x509", "taint", "--authorityID", &first],
    );
    assert!(
        e.contains("FailedPrecondition")
            && e.contains("only the old authority can be tainted; activate the prepared one first"),
        "{e}"
    );
    let e = fails(s, &["localauthority", "x509", "activate"]);
    assert!(e.contains("--authorityID is required"), "{e}");

    let out = ok(
        s,
        &["localauthority", "x509", "activate", "-authorityID", &next],
    );
    assert!(
        out.starts_with(&format!(
            "Activated X.509 authority:\n  Authority ID: {next}\n"
        )),
        "{out}"
    );
    let state = ok_json(s, &["localauthority", "x509", "show"]);
    assert_eq!(state["active"]["authority_id"], next.as_str());
    assert_eq!(state["old"]["authority_id"], first.as_str());

    let e = fails(
        s,
        &["localauthority", "x509", "revoke", "--authorityID", &first],
    );
    assert!(e.contains("taint it first"), "{e}");
    let out = ok(
        s,
        &["localauthority", "x509", "taint", "--authorityID", &first],
    );
    assert!(out.starts_with("Tainted X.509 authority:"), "{out}");
    let out = ok(
        s,
        &["localauthority", "x509", "revoke", "--authorityID", &first],
    );
    assert!(out.starts_with("Revoked X.509 authority:"), "{out}");
    assert_eq!(roots(&ok(s, &["bundle", "show"])), 1);

    let tail = ok(s, &["events", "tail"]);
    let order: Vec<&str> = [
        "CaActivated",
        "X509AuthorityTainted",
        "X509AuthorityRevoked",
    ]
    .into_iter()
    .filter(|k| tail.contains(k))
    .collect();
    assert_eq!(
        order,
        [
            "CaActivated",
            "X509AuthorityTainted",
            "X509AuthorityRevoked"
        ],
        "{tail}"
    );
    let tainted_at = tail.find("X509AuthorityTainted").unwrap();
    assert!(
        tail.find("X509AuthorityRevoked").unwrap() > tainted_at,
        "{tail}"
    );
    server.stop();
}

#[test]
fn jwt_forced_rotation_step_by_step() {
    let ws = Workspace::new();
    let server = ws.start();
    let s = server.socket.as_path();
    let first = ok_json(s, &["localauthority", "jwt", "show"])["active"]["authority_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let next = ok_json(s, &["localauthority", "jwt", "prepare"])["prepared_authority"]
        ["authority_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = fails(s, &["localauthority", "jwt", "prepare"]);
    assert!(
        e.contains("FailedPrecondition") && e.contains("already prepared"),
        "{e}"
    );
    ok(
        s,
        &["localauthority", "jwt", "activate", "--authorityID", &next],
    );
    ok(
        s,
        &["localauthority", "jwt", "taint", "--authorityID", &first],
    );
    let revoked = ok_json(
        s,
        &["localauthority", "jwt", "revoke", "--authorityID", &first],
    );
    assert_eq!(revoked["revoked_authority"]["authority_id"], first.as_str());
    let shown = ok(s, &["localauthority", "jwt", "show"]);
    assert!(
        shown.contains(&format!("Active JWT authority:\n  Authority ID: {next}")),
        "{shown}"
    );
    assert!(shown.contains("No old JWT authority found"), "{shown}");
    let jwks = ok(s, &["bundle", "show", "--format", "spiffe"]);
    assert!(jwks.contains(&next) && !jwks.contains(&first), "{jwks}");
    server.stop();
}
