//! The `tessera-agent` binary's admin ergonomics (issue 14 §5): `healthcheck --verbose` and
//! `validate --config`.

use std::process::Output;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tessera-agent");

async fn agent_cli(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .kill_on_drop(true);
    within(&format!("tessera-agent {args:?}"), cmd.output())
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_verbose_says_what_it_checked() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let socket = agent.socket.to_str().unwrap().to_owned();

    let o = agent_cli(&["healthcheck", "--socketPath", &socket]).await;
    assert_eq!(text(&o.stdout), "Agent is healthy.\n", "unchanged");
    let o = agent_cli(&["healthcheck", "--verbose", "--socketPath", &socket]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        format!(
            "Checking agent health at {socket}\nSocket: {socket} is a Unix socket (from --socketPath)\nConnect: ok\nAgent (service \"\"): SERVING\nAgent is healthy.\n"
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let missing = missing.to_str().unwrap();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["healthcheck", "--verbose"])
        .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{missing}"))
        .kill_on_drop(true);
    let o = within("healthcheck", cmd.output()).await.unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!(
            "Socket: {missing}: No such file or directory (os error 2) (from $SPIFFE_ENDPOINT_SOCKET)"
        )) && out.contains("Connect: failed (healthcheck: cannot reach the agent at"),
        "{out}"
    );
    assert!(
        text(&o.stderr).starts_with("healthcheck: cannot reach the agent at"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test]
async fn validate_checks_the_config_as_run_does_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let socket = dir.path().join("public/api.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ntrust_domain = \"example.org\"\ndata_dir = {:?}\nsocket_path = {:?}\ninsecure_bootstrap = true\n",
            data.display().to_string(),
            socket.display().to_string()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let o = agent_cli(&["validate", "--config", c]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        format!("Configuration is valid: {c} (trust domain example.org)\n")
    );
    let o = agent_cli(&["validate", "--config", c, "--trustDomain", "Bad.Org"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr)
            .starts_with("validate: configuration is invalid: --trustDomain \"Bad.Org\""),
        "{}",
        text(&o.stderr)
    );
    std::fs::write(&config, "[agent]\nsocket_pth = \"/x\"\n").unwrap();
    let o = agent_cli(&["validate", "--config", c]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), "");
    let err = text(&o.stderr);
    assert!(
        err.starts_with("validate: configuration is invalid: config file")
            && err.contains("socket_pth"),
        "{err}"
    );
    assert!(!data.exists(), "validate creates no data dir");
    assert!(!socket.exists(), "validate binds no socket");
}
