//! Logs of real `tessera-server run` and `tessera-agent run` processes (issue 14):
//!
//! - a clean stop (SIGTERM) exits 0 and logs no ERROR in either process, with the agent
//!   stopped while it serves an open Workload API stream and the server still runs, and with
//!   the server stopped while the agent's sync stream is open;
//! - `log_format = "json"`: every line either process writes on stderr is one JSON object
//!   with `timestamp`, `level`, `target` and `fields.message`;
//! - a `log_format` other than "text" or "json" is refused at start, naming the key and the
//!   values allowed.
//!
//! The binaries are the workspace's own (`cargo build -p tessera-server -p tessera-agent`
//! first). Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(dead_code)] // Only `bin`, `wait_until` and `my_uid` are used here.
#[path = "e2e/processes.rs"]
mod processes;

use processes::{bin, my_uid, wait_until};

/// Longest wait for a stopped process to exit (the graceful stop's own grace is 30 s).
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Text,
    Json,
}

impl Format {
    fn key(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// A running process whose stderr goes to a file.
struct Proc {
    child: Child,
    log: PathBuf,
    format: Format,
}

impl Proc {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of field `field` of the first line whose message is `message`.
    fn field_of(&self, message: &str, field: &str) -> Option<String> {
        self.text().lines().find_map(|line| match self.format {
            Format::Json => {
                let v: Value = serde_json::from_str(line).ok()?;
                let fields = v.get("fields")?;
                (fields.get("message")?.as_str()? == message)
                    .then(|| fields.get(field)?.as_str().map(str::to_owned))?
            }
            Format::Text => {
                let rest = line.split_once(&format!(": {message} "))?.1;
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
                    .map(str::to_owned)
            }
        })
    }

    fn logged(&self, message: &str) -> bool {
        self.text().lines().any(|line| match self.format {
            Format::Json => serde_json::from_str::<Value>(line).is_ok_and(|v| {
                v.pointer("/fields/message").and_then(Value::as_str) == Some(message)
            }),
            Format::Text => line.contains(message),
        })
    }

    /// SIGTERM (std only sends SIGKILL, and the workspace denies the `unsafe` of `libc::kill`),
    /// then the exit status (bounded).
    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {}", self.child.id());
        exit_status(&mut self.child).unwrap_or_else(|| {
            panic!(
                "no exit within {EXIT_TIMEOUT:?} of SIGTERM:\n{}",
                self.text()
            )
        })
    }
}

/// `child`'s exit status, if it exits within [`EXIT_TIMEOUT`].
fn exit_status(child: &mut Child) -> Option<ExitStatus> {
    #[allow(clippy::disallowed_methods)] // Real processes run in real time.
    let start = Instant::now();
    while start.elapsed() < EXIT_TIMEOUT {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `bin run --config <dir>/<name>.toml args...`, the config holding `[section]` and `keys`,
/// stderr to `<dir>/<name>.log`; the environment cannot change the level or colours.
fn spawn(dir: &Path, name: &str, section: &str, keys: &str, args: &[&str]) -> Child {
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(&conf, format!("[{section}]\n{keys}\n")).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(bin(&format!("tessera-{name}")))
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .args(args)
        .env_remove("TESSERA_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// `tessera-server <args> --socketPath <sock>`, which must succeed; its stdout.
fn server_cli(sock: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(bin("tessera-server"))
        .args(args)
        .arg("--socketPath")
        .arg(sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A server and an attested agent with one entry for this test's uid, both logging in
/// `format`.
struct Pair {
    dir: tempfile::TempDir,
    server: Proc,
    agent: Proc,
    spiffe_id: String,
}

fn start_pair(format: Format) -> Pair {
    // Short: Unix socket paths are limited to ~100 bytes.
    let dir = tempfile::Builder::new()
        .prefix("tsd")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    let sock = d.join("server.sock");
    let keys = format!("log_format = \"{}\"", format.key());
    let child = spawn(
        d,
        "server",
        "server",
        &keys,
        &[
            "--trustDomain",
            "example.org",
            "--bindAddress",
            "127.0.0.1",
            "--serverPort",
            "0",
            "--dataDir",
            d.join("server-data").to_str().unwrap(),
            "--socketPath",
            sock.to_str().unwrap(),
        ],
    );
    let mut server = Proc {
        child,
        log: d.join("server.log"),
        format,
    };
    let mut addr = None;
    wait_until("the server's agent API", || {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("server exited ({status}):\n{}", server.text());
        }
        addr = server.field_of("agent API listening", "addr");
        addr.is_some()
    });
    let addr = addr.unwrap();
    let mut bundle = None;
    wait_until("the server's bundle", || {
        bundle = server_cli(&sock, &["bundle", "show"]);
        bundle.is_some()
    });
    let bundle_path = d.join("bundle.pem");
    std::fs::write(&bundle_path, bundle.unwrap()).unwrap();
    let token = server_cli(&sock, &["token", "generate"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Token: ").map(|t| t.trim().to_owned()))
        .expect("Token: line");
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let spiffe_id = "spiffe://example.org/shutdown/workload".to_owned();
    let selector = format!("unix:uid:{}", my_uid());
    server_cli(
        &sock,
        &[
            "entry",
            "create",
            "--spiffeID",
            &spiffe_id,
            "--parentID",
            &agent_id,
            "--selector",
            &selector,
        ],
    )
    .expect("entry create");

    let child = spawn(
        d,
        "agent",
        "agent",
        &keys,
        &[
            "--trustDomain",
            "example.org",
            "--serverAddress",
            &addr,
            "--dataDir",
            d.join("agent-data").to_str().unwrap(),
            "--socketPath",
            d.join("agent.sock").to_str().unwrap(),
            "--trustBundle",
            bundle_path.to_str().unwrap(),
            "--joinToken",
            &token,
        ],
    );
    let mut agent = Proc {
        child,
        log: d.join("agent.log"),
        format,
    };
    wait_until("the agent's sync and Workload API", || {
        if let Some(status) = agent.child.try_wait().unwrap() {
            panic!("agent exited ({status}):\n{}", agent.text());
        }
        agent.logged("sync started from a snapshot") && agent.logged("Workload API listening")
    });
    Pair {
        dir,
        server,
        agent,
        spiffe_id,
    }
}

/// `tessera-agent api watch`: an open FetchX509SVID stream, once it has the entry's SVID.
fn watch(p: &Pair) -> Child {
    let out = p.dir.path().join("watch.out");
    let mut child = Command::new(bin("tessera-agent"))
        .args(["api", "watch", "--socketPath"])
        .arg(p.dir.path().join("agent.sock"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the workload's SVID on an open stream", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("api watch exited ({status})");
        }
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains(&p.spiffe_id))
    });
    child
}

/// The lines of `proc`'s log at `level` (in its format).
fn at_level(proc: &Proc, level: &str) -> Vec<String> {
    let text_marker = format!(" {level} ");
    proc.text()
        .lines()
        .filter(|line| match proc.format {
            Format::Json => serde_json::from_str::<Value>(line)
                .is_ok_and(|v| v.get("level").and_then(Value::as_str) == Some(level)),
            Format::Text => line.contains(&text_marker),
        })
        .map(str::to_owned)
        .collect()
}

/// Exit 0, and no ERROR line (nor WARN, when `no_warn`).
fn assert_clean(what: &str, proc: &Proc, status: ExitStatus, no_warn: bool) {
    let log = proc.text();
    assert!(
        status.success(),
        "{what} exited {status} on SIGTERM:\n{log}"
    );
    assert_eq!(
        at_level(proc, "ERROR"),
        Vec::<String>::new(),
        "{what}:\n{log}"
    );
    if no_warn {
        assert_eq!(
            at_level(proc, "WARN"),
            Vec::<String>::new(),
            "{what}:\n{log}"
        );
    }
}

/// Every line is one JSON object with timestamp, level, target and fields.message.
fn assert_json_lines(what: &str, proc: &Proc) {
    let log = proc.text();
    let mut lines = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line:?}\n{log}"));
        for key in ["timestamp", "level", "target"] {
            assert!(
                v.get(key).is_some_and(Value::is_string),
                "{what}: no {key}: {line}"
            );
        }
        assert!(
            v.pointer("/fields/message").is_some_and(Value::is_string),
            "{what}: no fields.message: {line}"
        );
        lines += 1;
    }
    assert!(lines >= 3, "{what} logged {lines} lines:\n{log}");
}

#[test]
fn sigterm_stops_the_agent_then_the_server_cleanly_in_text() {
    let mut p = start_pair(Format::Text);
    let mut workload = watch(&p);

    // The agent, while it serves an open stream and its server runs.
    let status = p.agent.terminate();
    assert_clean("tessera-agent", &p.agent, status, true);
    let _ = workload.kill();
    let _ = workload.wait();
    // Then the server, which has just seen its agent go.
    let status = p.server.terminate();
    assert_clean("tessera-server", &p.server, status, true);
    assert!(p.server.logged("server stopped"), "{}", p.server.text());

    // Text is text: readable lines, not JSON.
    let text = p.server.text();
    let first = text.lines().next().unwrap_or_default();
    assert!(first.contains(" INFO "), "{first}");
    assert!(serde_json::from_str::<Value>(first).is_err(), "{first}");
}

#[test]
fn sigterm_stops_the_server_then_the_agent_cleanly_in_json() {
    let mut p = start_pair(Format::Json);
    let mut workload = watch(&p);

    // The server, while the agent's sync stream is open.
    let status = p.server.terminate();
    assert_clean("tessera-server", &p.server, status, true);
    assert!(p.server.logged("server stopped"), "{}", p.server.text());
    // The agent then stops while it tries to reach the server again: losing its server is
    // a WARN, stopping is not an ERROR.
    let status = p.agent.terminate();
    assert_clean("tessera-agent", &p.agent, status, false);
    let _ = workload.kill();
    let _ = workload.wait();

    assert_json_lines("tessera-server", &p.server);
    assert_json_lines("tessera-agent", &p.agent);
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_key_and_the_values() {
    let dir = tempfile::Builder::new()
        .prefix("tsd")
        .tempdir_in("/tmp")
        .unwrap();
    for (name, section) in [("server", "server"), ("agent", "agent")] {
        let mut child = spawn(
            dir.path(),
            name,
            section,
            "log_format = \"xml\"",
            &["--dataDir", dir.path().join(name).to_str().unwrap()],
        );
        let status = exit_status(&mut child);
        let _ = child.kill();
        let _ = child.wait();
        let stderr = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        let status = status.unwrap_or_else(|| panic!("{name} started anyway:\n{stderr}"));
        assert_eq!(status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{section}.log_format \"xml\""))
                && stderr.contains("\"text\" or \"json\""),
            "{name}: {stderr}"
        );
    }
}
