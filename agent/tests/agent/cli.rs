//! The `tessera-agent` binary: client verbs against the running Workload API, and config
//! errors of `run`.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use tessera_identity::X509Authority;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tessera-agent");

async fn agent_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    within(&format!("tessera-agent {args:?}"), cmd.output())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_x509_prints_and_writes_svid_key_and_bundle() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let out_dir = tempfile::tempdir().unwrap();
    let socket = agent.socket.to_str().unwrap().to_owned();
    let o = agent_cli(
        &[
            "api",
            "fetch",
            "x509",
            "--socketPath",
            &socket,
            "--write",
            out_dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let text = stdout(&o);
    assert!(text.contains("Received 1 svid after"), "{text}");
    assert!(
        text.contains(&format!("SPIFFE ID:\t\t{WORKLOAD}")),
        "{text}"
    );
    assert!(text.contains("CA #1 Valid Until:"), "{text}");

    let held = world.source.current().identities[0].svid.clone().unwrap();
    let cert = std::fs::read_to_string(out_dir.path().join("svid.0.pem")).unwrap();
    assert_eq!(
        pem::parse(&cert).unwrap().contents(),
        held.cert_chain[0].as_slice()
    );
    let key_path = out_dir.path().join("svid.0.key");
    let key = std::fs::read_to_string(&key_path).unwrap();
    let key = pem::parse(&key).unwrap();
    assert_eq!(key.tag(), "PRIVATE KEY");
    assert_eq!(key.contents(), held.key_pkcs8.as_slice());
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bundle = std::fs::read_to_string(out_dir.path().join("bundle.0.pem")).unwrap();
    assert_eq!(
        X509Authority::parse_pem(&bundle).unwrap()[0].der(),
        world.ca.der.as_slice()
    );

    // --output json: the response's fields, DER in base64, nothing else on stdout.
    let o = agent_cli(
        &[
            "api",
            "fetch",
            "x509",
            "--output",
            "json",
            "--socketPath",
            &socket,
            "--write",
            out_dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let b64 = |v: &serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let svid = &json["svids"][0];
    assert_eq!(svid["spiffe_id"], WORKLOAD);
    assert_eq!(b64(&svid["x509_svid"]), held.cert_chain.concat());
    assert_eq!(
        b64(&svid["x509_svid_key"]).as_slice(),
        held.key_pkcs8.as_slice()
    );
    assert_eq!(b64(&svid["bundle"]), world.ca.der);
    assert_eq!(json["crl"], serde_json::json!([]));
    assert_eq!(json["federated_bundles"], serde_json::json!({}));

    // `api fetch` alone is `api fetch x509`; SPIFFE_ENDPOINT_SOCKET finds the socket.
    let o = agent_cli(
        &["api", "fetch"],
        &[("SPIFFE_ENDPOINT_SOCKET", &agent.endpoint())],
    )
    .await;
    assert!(stdout(&o).contains(WORKLOAD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_validate_jwt_and_healthcheck() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let socket = agent.socket.to_str().unwrap().to_owned();
    let o = agent_cli(
        &[
            "api",
            "fetch",
            "jwt",
            "-audience",
            "db",
            "-socketPath",
            &socket,
        ],
        &[],
    )
    .await;
    let text = stdout(&o);
    assert!(
        text.starts_with(&format!("token({WORKLOAD}):\n\t")),
        "{text}"
    );
    assert!(text.contains("bundle(spiffe://example.org):"), "{text}");
    let token = text.lines().nth(1).unwrap().trim().to_owned();

    let o = agent_cli(
        &[
            "api",
            "validate",
            "jwt",
            "--audience",
            "db",
            "--svid",
            &token,
            "--socket-path",
            &socket,
        ],
        &[],
    )
    .await;
    let text = stdout(&o);
    assert!(text.starts_with("SVID is valid.\n"), "{text}");
    assert!(text.contains(&format!("SPIFFE ID : {WORKLOAD}")), "{text}");
    assert!(text.contains("\"aud\":[\"db\"]"), "{text}");

    let o = agent_cli(
        &[
            "api",
            "validate",
            "jwt",
            "--audience",
            "other",
            "--svid",
            &token,
            "--socketPath",
            &socket,
        ],
        &[],
    )
    .await;
    let err = stderr(&o);
    assert!(
        err.starts_with("api validate jwt: InvalidArgument: expected audience \"other\""),
        "{err}"
    );

    // --output json for both.
    let o = agent_cli(
        &[
            "api",
            "fetch",
            "jwt",
            "--audience",
            "db",
            "--output",
            "json",
            "--socketPath",
            &socket,
        ],
        &[],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["svids"][0]["spiffe_id"], WORKLOAD);
    let fresh = json["svids"][0]["svid"].as_str().unwrap().to_owned();
    assert!(
        json["bundles"]["spiffe://example.org"]["keys"].is_array(),
        "the JWKS as a document: {json}"
    );
    let o = agent_cli(
        &[
            "api",
            "validate",
            "jwt",
            "--audience",
            "db",
            "--svid",
            &fresh,
            "--output",
            "json",
            "--socketPath",
            &socket,
        ],
        &[],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["spiffe_id"], WORKLOAD);
    assert_eq!(json["claims"]["aud"], serde_json::json!(["db"]));

    let o = agent_cli(&["healthcheck", "--socketPath", &socket], &[]).await;
    assert_eq!(stdout(&o).trim(), "Agent is healthy.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_name_the_verb_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let o = agent_cli(
        &["healthcheck", "--socketPath", missing.to_str().unwrap()],
        &[],
    )
    .await;
    let err = stderr(&o);
    assert!(
        err.starts_with("healthcheck: cannot reach the agent at"),
        "{err}"
    );

    let world = World::new();
    world.source.update(|s| s.identities.clear());
    let agent = TestAgent::start(world.source.clone()).await;
    let o = agent_cli(
        &[
            "api",
            "fetch",
            "x509",
            "--socketPath",
            agent.socket.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(
        stderr(&o).starts_with("api fetch x509: PermissionDenied: no identity issued"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn run_refuses_unknown_config_keys_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[agent]\nsocket_pth = \"/x\"\n").unwrap();
    let o = agent_cli(&["run", "--config", config.to_str().unwrap()], &[]).await;
    let err = stderr(&o);
    assert!(
        err.starts_with("run: config file") && err.contains("socket_pth"),
        "{err}"
    );
    let o = agent_cli(&["run", "--trustDomain", "Bad.Org"], &[]).await;
    assert!(
        stderr(&o).starts_with("run: --trustDomain \"Bad.Org\""),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_every_update_until_stopped() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "api",
            "watch",
            "--socketPath",
            agent.socket.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for (needle, then_add) in [
        ("Received 1 svid", true),
        ("Received 2 svid", false),
        ("spiffe://example.org/second", false),
    ] {
        within(needle, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains(needle) {
                    return;
                }
            }
            panic!("api watch ended before printing {needle:?}");
        })
        .await;
        if then_add {
            world.add("entry-2", "spiffe://example.org/second", &[&my_selector()]);
        }
    }
    child.start_kill().unwrap();
    within("api watch to exit", child.wait()).await.unwrap();
}
