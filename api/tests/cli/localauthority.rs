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

/// A self-signed upstream root: its certificate and key, PEM.
fn upstream_root(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn an_upstream_root_is_tainted_then_revoked_after_the_upstream_changes() {
    let ws = Workspace::new();
    let (cert, key) = (
        ws.path().join("upstream.crt"),
        ws.path().join("upstream.key"),
    );
    let install = |(c, k): (String, String)| {
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
    };
    install(upstream_root("Upstream One"));
    let config = ws.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream_authority.disk]\ncert_file_path = {:?}\nkey_file_path = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let server = ws.start_with(&["--config", config.to_str().unwrap()]);
    let s = server.socket.as_path();
    let state = ok_json(s, &["localauthority", "x509", "show"]);
    let first = state["active"]["authority_id"].as_str().unwrap().to_owned();
    let one = state["active"]["upstream_authority_subject_key_id"]
        .as_str()
        .expect("the upstream's subject key ID")
        .to_owned();

    // The upstream changes (a new root on disk); a CA it signs is prepared and activated.
    install(upstream_root("Upstream Two"));
    let next = ok_json(s, &["localauthority", "x509", "prepare"])["prepared_authority"].clone();
    let two = next["upstream_authority_subject_key_id"].as_str().unwrap();
    assert_ne!(two, one);
    let next_id = next["authority_id"].as_str().unwrap();
    ok(
        s,
        &[
            "localauthority",
            "x509",
            "activate",
            "--authorityID",
            next_id,
        ],
    );
    assert_eq!(roots(&ok(s, &["bundle", "show"])), 2);

    // The local CA cannot be tainted on its own; the upstream signing the active one neither.
    let e = fails(
        s,
        &["localauthority", "x509", "taint", "--authorityID", &first],
    );
    assert!(
        e.contains("FailedPrecondition") && e.contains("upstreamauthority taint"),
        "{e}"
    );
    let e = fails(s, &["upstreamauthority", "taint", "--subjectKeyID", two]);
    assert!(
        e.contains("FailedPrecondition") && e.contains("signs the active CA"),
        "{e}"
    );
    let e = fails(s, &["upstreamauthority", "revoke", "--subjectKeyID", &one]);
    assert!(e.contains("not tainted"), "{e}");

    let out = ok(s, &["upstreamauthority", "taint", "-subjectKeyID", &one]);
    assert_eq!(
        out,
        format!("Tainted X.509 upstream authority:\n  Subject Key ID: {one}\n")
    );
    let revoked = ok_json(s, &["upstreamauthority", "revoke", "--subjectKeyID", &one]);
    assert_eq!(revoked["upstream_authority_subject_key_id"], one.as_str());
    assert_eq!(roots(&ok(s, &["bundle", "show"])), 1);
    let shown = ok(s, &["localauthority", "x509", "show"]);
    assert!(shown.contains("No old X.509 authority found"), "{shown}");
    assert!(
        shown.contains(&format!("Upstream authority Subject Key ID: {two}")),
        "{shown}"
    );
    let tail = ok(s, &["events", "tail"]);
    assert!(
        tail.contains("X509AuthorityTainted") && tail.contains("X509AuthorityRevoked"),
        "{tail}"
    );
    server.stop();
}
