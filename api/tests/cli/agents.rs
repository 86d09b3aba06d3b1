//! `agent list|show|evict|ban|count` and `token generate`.

use crate::support::{fails, ok, ok_json, Workspace};

#[test]
fn agent_and_token_verbs_against_a_running_server() {
    let ws = Workspace::new();
    // Agents as if they had attested (the agent API is tested in `agent_api.rs`).
    ws.seed_agents(&["n1", "n2"]);
    let server = ws.start();
    let s = server.socket.as_path();
    let n1 = "spiffe://example.org/spire/agent/x509pop/n1";

    let list = ok(s, &["agent", "list"]);
    assert!(list.starts_with("Found 2 attested agents:"), "{list}");
    assert!(
        list.contains(&format!("SPIFFE ID         : {n1}"))
            && list.contains("Attestation type  : x509pop"),
        "{list}"
    );
    assert_eq!(ok(s, &["agent", "count"]).trim(), "2 attested agents");
    let shown = ok(s, &["agent", "show", "--spiffeID", n1]);
    assert!(
        shown.contains("Selectors         : x509pop:subject:cn:n1")
            && shown.contains("Can re-attest     : true"),
        "{shown}"
    );
    let json = ok_json(s, &["agent", "show", "--spiffe-id", n1]);
    assert_eq!(json["x509svid_serial_number"], "0n1");

    assert_eq!(
        ok(s, &["agent", "ban", "--spiffeID", n1]).trim(),
        "Agent banned successfully"
    );
    let banned = ok_json(s, &["agent", "list", "--banned"]);
    assert_eq!(banned["agents"].as_array().unwrap().len(), 1);
    assert_eq!(banned["agents"][0]["banned"], true);
    assert_eq!(
        ok_json(s, &["agent", "count", "--banned=false"])["count"],
        1
    );
    assert_eq!(
        ok_json(
            s,
            &["agent", "count", "--selector", "x509pop:subject:cn:n2"]
        )["count"],
        1
    );

    assert_eq!(
        ok(s, &["agent", "evict", "--spiffeID", n1]).trim(),
        "Agent evicted successfully"
    );
    assert_eq!(ok(s, &["agent", "count"]).trim(), "1 attested agents");
    let err = fails(s, &["agent", "show", "--spiffeID", n1]);
    assert!(err.starts_with("agent show: NotFound: "), "{err}");
    let err = fails(s, &["agent", "evict", "--spiffeID", "spiffe://Bad/x"]);
    assert!(
        err.starts_with("agent evict: --spiffeID \"spiffe://Bad/x\": "),
        "{err}"
    );

    let token = ok(
        s,
        &[
            "token",
            "generate",
            "--spiffeID",
            "spiffe://example.org/nodes/web",
            "--ttl",
            "300",
        ],
    );
    let value = token
        .trim()
        .strip_prefix("Token: ")
        .unwrap_or_else(|| panic!("{token}"));
    assert_eq!(value.len(), 36);
    let other = ok_json(s, &["token", "generate"]);
    assert_ne!(other["value"], value);
    assert!(other["expires_at"].as_i64().unwrap() > 0);
    let err = fails(s, &["token", "generate", "--ttl", "0"]);
    assert!(
        err.starts_with("token generate: --ttl \"0\": must be at least 1 second"),
        "{err}"
    );
    // Only its hash reached the log.
    let log = ok(s, &["events", "tail", "--output", "json"]);
    assert!(
        log.contains("JoinTokenCreated") && !log.contains(value),
        "the token itself is in the log"
    );
    server.stop();
}
