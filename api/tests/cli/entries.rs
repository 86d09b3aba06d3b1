//! `entry create|show|update|delete|count`, `healthcheck`, and the flag spellings.

use crate::support::{fails, ok, ok_json, Workspace};

#[test]
fn entry_verbs_against_a_running_server() {
    let ws = Workspace::new();
    let server = ws.start();
    let s = server.socket.as_path();

    assert_eq!(ok(s, &["healthcheck"]).trim(), "Server is healthy.");

    let created = ok(
        s,
        &[
            "entry",
            "create",
            "--entryID",
            "web-entry",
            "--spiffeID",
            "spiffe://example.org/web",
            "--parentID",
            "spiffe://example.org/spire/agent/x509pop/n1",
            "--selector",
            "unix:uid:1000",
            "--selector",
            "unix:gid:1000",
            "--x509SVIDTTL",
            "1h",
            "--jwtSVIDTTL",
            "300",
            "--dns",
            "web.example.org",
            "--federatesWith",
            "spiffe://partner.org",
            "--admin",
            "--downstream",
            "--hint",
            "frontend",
            "--entryExpiry",
            "2035-01-01T00:00:00Z",
        ],
    );
    for want in [
        "Entry ID         : web-entry",
        "SPIFFE ID        : spiffe://example.org/web",
        "Parent ID        : spiffe://example.org/spire/agent/x509pop/n1",
        "Revision         : 0",
        "X509-SVID TTL    : 3600",
        "JWT-SVID TTL     : 300",
        "Expiration time  : 2035-01-01T00:00:00Z",
        "Selector         : unix:gid:1000",
        "Selector         : unix:uid:1000",
        "FederatesWith    : partner.org",
        "DNS name         : web.example.org",
        "Admin            : true",
        "Downstream       : true",
        "Hint             : frontend",
    ] {
        assert!(created.contains(want), "{want:?} missing from\n{created}");
    }

    // Kebab-case and SPIRE's single-dash spelling; --node makes a node alias.
    let alias = ok_json(
        s,
        &[
            "entry",
            "create",
            "-spiffeID",
            "spiffe://example.org/nodes/web",
            "--node",
            "--selector",
            "x509pop:subject:cn:n1",
        ],
    );
    let alias = &alias["results"][0]["entry"];
    assert_eq!(alias["parent_id"]["path"], "/spire/server");
    let db = ok_json(
        s,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/db",
            "--parent-id",
            "spiffe://example.org/nodes/web",
            "--selector",
            "unix:uid:999",
        ],
    );
    let db_id = db["results"][0]["entry"]["id"].as_str().unwrap().to_owned();
    assert_eq!(db_id.len(), 36, "a generated UUID");

    // Errors name the verb, the flag, the value and the rule.
    let err = fails(
        s,
        &[
            "entry",
            "create",
            "--spiffeID",
            "spiffe://Ex.org/a",
            "--parentID",
            "spiffe://example.org/x",
            "--selector",
            "unix:uid:1",
        ],
    );
    assert!(
        err.starts_with("entry create: --spiffeID \"spiffe://Ex.org/a\": trust domain characters are limited to lowercase letters, digits"),
        "{err}"
    );
    let err = fails(
        s,
        &[
            "entry",
            "create",
            "--spiffeID",
            "spiffe://example.org/a",
            "--parentID",
            "spiffe://example.org/x",
            "--selector",
            "nocolon",
        ],
    );
    assert!(
        err.starts_with("entry create: --selector \"nocolon\": "),
        "{err}"
    );
    let err = fails(
        s,
        &[
            "entry",
            "create",
            "--spiffeID",
            "spiffe://example.org/a",
            "--parentID",
            "spiffe://example.org/x",
        ],
    );
    assert!(err.contains("at least one --selector is required"), "{err}");
    let err = fails(
        s,
        &[
            "entry",
            "create",
            "--spiffeID",
            "spiffe://other.org/a",
            "--parentID",
            "spiffe://example.org/x",
            "--selector",
            "unix:uid:1",
        ],
    );
    assert!(
        err.starts_with("entry create: InvalidArgument: ") && err.contains("trust domain"),
        "{err}"
    );
    let err = fails(
        s,
        &[
            "entry",
            "create",
            "--spiffeID",
            "spiffe://example.org/web",
            "--parentID",
            "spiffe://example.org/spire/agent/x509pop/n1",
            "--selector",
            "unix:uid:1000",
            "--selector",
            "unix:gid:1000",
        ],
    );
    assert!(err.starts_with("entry create: AlreadyExists: "), "{err}");

    let shown = ok(s, &["entry", "show"]);
    assert!(shown.starts_with("Found 3 entries"), "{shown}");
    let one = ok(s, &["entry", "show", "--entryID", "web-entry"]);
    assert!(
        one.starts_with("Found 1 entry") && one.contains("Hint             : frontend"),
        "{one}"
    );
    let by_selector = ok_json(s, &["entry", "show", "--selector", "unix:uid:1000"]);
    assert_eq!(by_selector["entries"].as_array().unwrap().len(), 1);
    let by_parent = ok_json(
        s,
        &[
            "entry",
            "show",
            "--parentID",
            "spiffe://example.org/nodes/web",
        ],
    );
    assert_eq!(by_parent["entries"][0]["id"], db_id.as_str());
    let by_fed = ok_json(s, &["entry", "show", "--federatesWith", "partner.org"]);
    assert_eq!(by_fed["entries"][0]["id"], "web-entry");
    let err = fails(s, &["entry", "show", "--entryID", "missing"]);
    assert!(err.starts_with("entry show: NotFound: "), "{err}");

    let updated = ok(
        s,
        &[
            "entry",
            "update",
            "--entryID",
            "web-entry",
            "--hint",
            "backend",
            "--x509SVIDTTL",
            "2h",
        ],
    );
    assert!(
        updated.contains("Hint             : backend") && updated.contains("Revision         : 1"),
        "{updated}"
    );
    assert!(
        updated.contains("X509-SVID TTL    : 7200")
            && updated.contains("Selector         : unix:uid:1000"),
        "{updated}"
    );
    let err = fails(s, &["entry", "update", "--entryID", "web-entry"]);
    assert!(err.contains("nothing to update"), "{err}");

    assert_eq!(ok(s, &["entry", "count"]).trim(), "3 registration entries");
    assert_eq!(
        ok_json(s, &["entry", "count", "--selector", "unix:uid:999"])["count"],
        1
    );
    assert_eq!(
        ok(s, &["entry", "delete", "--entryID", &db_id]).trim(),
        format!("Deleted entry with ID: {db_id}")
    );
    assert_eq!(ok_json(s, &["entry", "count"])["count"], 2);
    let err = fails(s, &["entry", "delete", "--entryID", &db_id]);
    assert!(err.starts_with("entry delete: NotFound: "), "{err}");
    server.stop();
}

#[test]
fn a_missing_server_is_reported_with_the_socket_path() {
    let ws = Workspace::new();
    let err = fails(&ws.socket(), &["entry", "count"]);
    assert!(
        err.starts_with("entry count: cannot reach the server at "),
        "{err}"
    );
    assert!(err.contains(&ws.socket().display().to_string()), "{err}");
    let err = fails(&ws.socket(), &["healthcheck"]);
    assert!(
        err.starts_with("healthcheck: cannot reach the server"),
        "{err}"
    );
}
