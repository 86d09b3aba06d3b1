//! `federation create|show|list|update|delete|refresh` and `bundle set|list|delete|count`
//! against a running server, including the flag combinations and bundle files the CLI
//! refuses before calling. Bundle endpoints point at a closed loopback port: nothing here
//! leaves the machine.

use std::io::Write;
use std::process::{Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use crate::support::{fails, ok, ok_json, Workspace, BIN};

/// A bundle endpoint nobody listens on (loopback, port 1).
const DEAD_URL: &str = "https://127.0.0.1:1/bundle";

/// A self-signed CA certificate as PEM.
fn ca_pem() -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

/// Runs a CLI verb with `stdin` fed in; returns (success, stdout, stderr).
fn with_stdin(socket: &std::path::Path, args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--socketPath")
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn federation_verbs_against_a_running_server() {
    let ws = Workspace::new();
    let server = ws.start();
    let s = server.socket.as_path();
    let pem_path = ws.path().join("partner.pem");
    std::fs::write(&pem_path, ca_pem()).unwrap();
    let pem = pem_path.to_str().unwrap();
    let junk_path = ws.path().join("junk.pem");
    std::fs::write(&junk_path, "this is not a certificate\n").unwrap();
    let junk = junk_path.to_str().unwrap();

    // Flag combinations refused before any call, naming the flag and the fix.
    let err = fails(
        s,
        &[
            "federation",
            "create",
            "--trustDomain",
            "partner.org",
            "--bundleEndpointURL",
            DEAD_URL,
            "--bundleEndpointProfile",
            "https_spiffe",
        ],
    );
    assert!(
        err.contains("federation create: --endpointSpiffeID is required with --bundleEndpointProfile https_spiffe"),
        "{err}"
    );
    let err = fails(
        s,
        &[
            "federation",
            "create",
            "--trustDomain",
            "partner.org",
            "--bundleEndpointURL",
            DEAD_URL,
            "--bundleEndpointProfile",
            "https_web",
            "--endpointSpiffeID",
            "spiffe://partner.org/spire/server",
        ],
    );
    assert!(
        err.contains("--endpointSpiffeID only applies to --bundleEndpointProfile https_spiffe"),
        "{err}"
    );
    let err = fails(
        s,
        &[
            "federation",
            "create",
            "--trustDomain",
            "partner.org",
            "--bundleEndpointURL",
            DEAD_URL,
            "--bundleEndpointProfile",
            "https_spiffe",
            "--endpointSpiffeID",
            "spiffe://partner.org/spire/server",
            "--trustDomainBundlePath",
            junk,
        ],
    );
    assert!(
        err.contains(&format!(
            "federation create: --trustDomainBundlePath {junk:?} is not a PEM bundle"
        )),
        "{err}"
    );
    let err = fails(
        s,
        &[
            "federation",
            "create",
            "--trustDomain",
            "partner.org",
            "--bundleEndpointURL",
            DEAD_URL,
            "--bundleEndpointProfile",
            "ftp",
        ],
    );
    assert!(
        err.contains("\"ftp\" is not a profile: use https_web or https_spiffe"),
        "{err}"
    );
    // The server's own check: https only.
    let err = fails(
        s,
        &[
            "federation",
            "create",
            "--trustDomain",
            "partner.org",
            "--bundleEndpointURL",
            "http://127.0.0.1:1/bundle",
            "--bundleEndpointProfile",
            "https_web",
        ],
    );
    assert!(
        err.contains("InvalidArgument") && err.contains("https://"),
        "{err}"
    );

    // Create: https_spiffe with a bootstrap bundle, and https_web.
    let created = ok(
        s,
        &[
            "federation",
            "create",
            "--trustDomain",
            "partner.org",
            "--bundleEndpointURL",
            DEAD_URL,
            "--bundleEndpointProfile",
            "https_spiffe",
            "--endpointSpiffeID",
            "spiffe://partner.org/spire/server",
            "--trustDomainBundlePath",
            pem,
            "--trustDomainBundleFormat",
            "pem",
        ],
    );
    assert_eq!(
        created,
        format!(
            "\nTrust domain              : partner.org\nBundle endpoint URL       : {DEAD_URL}\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://partner.org/spire/server\n"
        )
    );
    ok(
        s,
        &[
            "federation",
            "create",
            "-trustDomain",
            "web.org",
            "-bundleEndpointURL",
            DEAD_URL,
            "-bundleEndpointProfile",
            "https_web",
        ],
    );
    let err = fails(
        s,
        &[
            "federation",
            "create",
            "--trustDomain",
            "web.org",
            "--bundleEndpointURL",
            DEAD_URL,
            "--bundleEndpointProfile",
            "https_web",
        ],
    );
    assert!(err.contains("web.org: AlreadyExists"), "{err}");

    // --data: SPIRE's JSON; the other relationship flags do not go with it.
    let data_path = ws.path().join("relationships.json");
    let data = serde_json::json!({ "federationRelationships": [
        { "trustDomain": "data-one.org", "bundleEndpointURL": DEAD_URL, "bundleEndpointProfile": "https_web" },
        { "trustDomain": "data-two.org", "bundleEndpointURL": DEAD_URL, "bundleEndpointProfile": "https_spiffe",
          "endpointSPIFFEID": "spiffe://data-two.org/spire/server",
          "trustDomainBundle": ca_pem(), "trustDomainBundleFormat": "pem" },
    ]});
    std::fs::write(&data_path, data.to_string()).unwrap();
    let data_arg = data_path.to_str().unwrap();
    let out = ok(s, &["federation", "create", "--data", data_arg]);
    assert!(
        out.contains("Trust domain              : data-one.org"),
        "{out}"
    );
    assert!(
        out.contains("Trust domain              : data-two.org"),
        "{out}"
    );
    let err = fails(
        s,
        &[
            "federation",
            "create",
            "--data",
            data_arg,
            "--trustDomain",
            "x.org",
        ],
    );
    assert!(err.contains("--data gives every field"), "{err}");

    // Show: SPIRE's lines, then the refresh status (Tessera's addition).
    let shown = ok(s, &["federation", "show", "--trustDomain", "partner.org"]);
    assert!(
        shown.starts_with("Found a federation relationship with trust domain partner.org:\n\nTrust domain              : partner.org\n"),
        "{shown}"
    );
    assert!(
        shown.contains("Endpoint SPIFFE ID        : spiffe://partner.org/spire/server"),
        "{shown}"
    );
    assert!(shown.contains("Last refresh              : "), "{shown}");
    let v = ok_json(s, &["federation", "show", "--trustDomain", "partner.org"]);
    assert_eq!(v["trust_domain"], "partner.org");
    assert_eq!(
        v["https_spiffe"]["endpoint_spiffe_id"],
        "spiffe://partner.org/spire/server"
    );
    assert_eq!(
        v["trust_domain_bundle"]["x509_authorities"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(v.get("refresh_status").is_some(), "{v}");
    let err = fails(s, &["federation", "show", "--trustDomain", "nobody.org"]);
    assert!(err.contains("federation show: NotFound"), "{err}");
    let err = fails(s, &["federation", "show"]);
    assert!(err.contains("--trustDomain is required"), "{err}");

    // List.
    let listed = ok(s, &["federation", "list"]);
    assert!(
        listed.starts_with("Found 4 federation relationships\n"),
        "{listed}"
    );
    let v = ok_json(s, &["federation", "list"]);
    assert_eq!(v["federation_relationships"].as_array().unwrap().len(), 4);

    // Update: every field replaced.
    let updated = ok(
        s,
        &[
            "federation",
            "update",
            "--trustDomain",
            "web.org",
            "--bundleEndpointURL",
            "https://127.0.0.1:1/v2",
            "--bundleEndpointProfile",
            "https_web",
        ],
    );
    assert!(
        updated.contains("Bundle endpoint URL       : https://127.0.0.1:1/v2"),
        "{updated}"
    );
    let err = fails(
        s,
        &[
            "federation",
            "update",
            "--trustDomain",
            "nobody.org",
            "--bundleEndpointURL",
            DEAD_URL,
            "--bundleEndpointProfile",
            "https_web",
        ],
    );
    assert!(err.contains("nobody.org: NotFound"), "{err}");

    // Refresh: the endpoint is dead (or no refresher runs): Unavailable, said plainly.
    let err = fails(s, &["federation", "refresh", "--id", "web.org"]);
    assert!(
        err.contains("federation refresh: failed to refresh bundle: Unavailable"),
        "{err}"
    );
    // The failed attempt shows in `federation show` (the server's refresher records it).
    let shown = ok(s, &["federation", "show", "--trustDomain", "web.org"]);
    assert!(
        shown.contains("Last successful refresh   : never\nLast refresh error        : "),
        "{shown}"
    );
    let err = fails(s, &["federation", "refresh", "--id", "nobody.org"]);
    assert!(
        err.contains("there is no federation relationship with trust domain \"nobody.org\""),
        "{err}"
    );

    // Delete.
    assert_eq!(
        ok(s, &["federation", "delete", "--id", "web.org"]),
        "federation relationship deleted.\n"
    );
    let err = fails(s, &["federation", "delete", "--id", "web.org"]);
    assert!(
        err.contains("failed to delete federation relationship \"web.org\": NotFound"),
        "{err}"
    );
    let err = fails(s, &["federation", "delete"]);
    assert!(err.contains("--id is required"), "{err}");
    server.stop();
}

#[test]
fn federated_bundle_verbs_against_a_running_server() {
    let ws = Workspace::new();
    let server = ws.start();
    let s = server.socket.as_path();
    let pem_path = ws.path().join("third.pem");
    let third_pem = ca_pem();
    std::fs::write(&pem_path, &third_pem).unwrap();
    let pem = pem_path.to_str().unwrap();

    assert_eq!(ok(s, &["bundle", "count"]), "1 bundle\n");
    assert_eq!(
        ok(
            s,
            &["bundle", "set", "--id", "spiffe://third.org", "--path", pem]
        ),
        "bundle set.\n"
    );
    // From stdin, as a SPIFFE bundle: our own bundle's JWKS, stored as another trust domain's.
    let jwks = ok(s, &["bundle", "show", "--format", "spiffe"]);
    let (done, out, err) = with_stdin(
        s,
        &["bundle", "set", "--id", "fourth.org", "--format", "spiffe"],
        jwks.as_bytes(),
    );
    assert!(done, "{err}");
    assert_eq!(out, "bundle set.\n");
    let (done, _, err) = with_stdin(s, &["bundle", "set", "--id", "fifth.org"], b"garbage");
    assert!(!done);
    assert!(
        err.contains("bundle set: the bundle read from stdin is not a PEM bundle"),
        "{err}"
    );
    let err = fails(s, &["bundle", "set", "--id", "example.org", "--path", pem]);
    assert!(
        err.contains("InvalidArgument") && err.contains("own trust domain"),
        "{err}"
    );
    let err = fails(s, &["bundle", "set", "--path", pem]);
    assert!(err.contains("--id is required"), "{err}");
    assert_eq!(ok(s, &["bundle", "count"]), "3 bundles\n");

    let listed = ok(s, &["bundle", "list"]);
    assert!(
        listed.starts_with("****************************************\n* fourth.org\n****************************************\n-----BEGIN CERTIFICATE-----"),
        "{listed}"
    );
    assert!(
        listed.contains("\n\n****************************************\n* third.org\n"),
        "{listed}"
    );
    assert_eq!(
        ok(s, &["bundle", "list", "--id", "third.org"]).trim(),
        third_pem.trim()
    );
    let jwks_out: serde_json::Value = serde_json::from_str(&ok(
        s,
        &["bundle", "list", "--id", "fourth.org", "--format", "spiffe"],
    ))
    .unwrap();
    assert!(
        !jwks_out["keys"].as_array().unwrap().is_empty(),
        "{jwks_out}"
    );
    let v = ok_json(s, &["bundle", "list"]);
    assert_eq!(v["bundles"].as_array().unwrap().len(), 2);
    let err = fails(s, &["bundle", "list", "--id", "nobody.org"]);
    assert!(err.contains("NotFound"), "{err}");

    // An entry federates with third.org: restrict refuses, dissociate releases it.
    ok(
        s,
        &[
            "entry",
            "create",
            "--entryID",
            "fed",
            "--spiffeID",
            "spiffe://example.org/fed",
            "--parentID",
            "spiffe://example.org/spire/agent/x509pop/n1",
            "--selector",
            "unix:uid:1",
            "--federatesWith",
            "third.org",
        ],
    );
    let err = fails(s, &["bundle", "delete", "--id", "third.org"]);
    assert!(
        err.contains("failed to delete federated bundle \"third.org\": FailedPrecondition: 1 registration entries federate with third.org"),
        "{err}"
    );
    assert_eq!(
        ok(
            s,
            &[
                "bundle",
                "delete",
                "--id",
                "third.org",
                "--mode",
                "dissociate"
            ]
        ),
        "bundle deleted.\n"
    );
    let entry = ok(s, &["entry", "show", "--entryID", "fed"]);
    assert!(!entry.contains("FederatesWith"), "{entry}");
    let v = ok_json(
        s,
        &["bundle", "delete", "--id", "fourth.org", "--mode", "delete"],
    );
    assert_eq!(v["results"][0]["trust_domain"], "fourth.org");
    assert_eq!(ok_json(s, &["bundle", "count"])["count"], 1);
    server.stop();
}
