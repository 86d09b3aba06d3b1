//! `run`'s start-up errors: clear message, non-zero exit.

use std::process::{Command, Stdio};

use crate::support::{Workspace, BIN};

fn run(ws: &Workspace, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("run")
        .arg("--dataDir")
        .arg(ws.data_dir())
        .arg("--socketPath")
        .arg(ws.socket())
        .args(["--bindAddress", "127.0.0.1", "--serverPort", "0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_trust_domain_or_config_fails_clearly() {
    let ws = Workspace::new();
    let (code, err) = run(&ws, &["--trustDomain", "Ex.org"]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("run: --trustDomain \"Ex.org\": trust domain characters are limited to"),
        "{err}"
    );

    let conf = ws.path().join("server.toml");
    std::fs::write(&conf, "[server]\ntrust_domian = \"a.org\"\n").unwrap();
    let (code, err) = run(&ws, &["--config", conf.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("trust_domian"), "{err}");

    std::fs::write(&conf, "[server]\nca_ttl = \"soon\"\n").unwrap();
    let (code, err) = run(&ws, &["--config", conf.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("ca_ttl"), "{err}");

    let (code, err) = run(&ws, &["--config", "/nonexistent/server.toml"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot read config file /nonexistent/server.toml"),
        "{err}"
    );
    assert!(
        !ws.data_dir().exists(),
        "nothing is created before the config is valid"
    );
}

#[test]
fn a_second_server_on_the_same_socket_is_refused() {
    let ws = Workspace::new();
    let server = ws.start();
    let other = Workspace::new();
    let out = Command::new(BIN)
        .arg("run")
        .arg("--dataDir")
        .arg(other.data_dir())
        .arg("--socketPath")
        .arg(&server.socket)
        .args(["--bindAddress", "127.0.0.1", "--serverPort", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin socket") && err.contains("another process is listening on this socket"),
        "{err}"
    );
    server.stop();
}
