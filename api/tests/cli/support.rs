//! A `tessera-server run` child process on a temp socket and data dir, and the CLI run as
//! child processes against it. Every wait is bounded.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_actors::server::events::{AttestedAgent, ServerEvent};
use tessera_eventlog::{AppendCondition, LocalLog, SystemClock, TypedLog};
use tessera_identity::{SelectorSet, SpiffeId};

pub const BIN: &str = env!("CARGO_BIN_EXE_tessera-server");
pub const TD: &str = "example.org";
/// Longest wait for the server to come up or go down.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A bound on a wait for a real child process (the one use of the wall clock in these tests:
/// processes run in real time).
pub struct Deadline(Instant);

impl Deadline {
    /// `limit` from now.
    #[allow(clippy::disallowed_methods)]
    pub fn after(limit: Duration) -> Self {
        Self(Instant::now() + limit)
    }

    /// Whether it has passed.
    #[allow(clippy::disallowed_methods)]
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// A test's directory: data dir, socket, server log.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            // Short path: Unix socket paths are limited to ~100 bytes.
            dir: tempfile::Builder::new()
                .prefix("tsr")
                .tempdir_in("/tmp")
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("private/api.sock")
    }

    /// Appends attested agents to the (stopped) server's log, as if they had attested.
    pub fn seed_agents(&self, names: &[&str]) {
        let log_dir = self.data_dir().join("log");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let log = Arc::new(LocalLog::open_sled(&log_dir, Arc::new(SystemClock)).unwrap());
            let typed = TypedLog::<ServerEvent>::new(log.clone());
            let events: Vec<ServerEvent> = names
                .iter()
                .map(|n| {
                    ServerEvent::AgentAttested(AttestedAgent {
                        id: SpiffeId::new(&format!("spiffe://{TD}/spire/agent/x509pop/{n}"))
                            .unwrap(),
                        attestation_type: "x509pop".into(),
                        selectors: SelectorSet::parse_all([
                            format!("x509pop:subject:cn:{n}").as_str()
                        ])
                        .unwrap(),
                        svid_serial: format!("0{n}"),
                        svid_expires_at: 4_000_000_000,
                        attested_at: 1_700_000_000,
                        can_reattest: true,
                    })
                })
                .collect();
            typed.append(&events, AppendCondition::Any).await.unwrap();
            log.close();
        });
    }

    /// Starts `tessera-server run` with no config file.
    pub fn start(&self) -> ServerProc {
        self.start_with(&[])
    }

    /// Starts `tessera-server run` with extra flags.
    pub fn start_with(&self, extra: &[&str]) -> ServerProc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("server.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args([
                "run",
                "--trustDomain",
                TD,
                "--bindAddress",
                "127.0.0.1",
                "--serverPort",
                "0",
            ])
            .arg("--dataDir")
            .arg(self.data_dir())
            .arg("--socketPath")
            .arg(self.socket())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = ServerProc {
            child,
            socket: self.socket(),
            log: self.path().join("server.log"),
        };
        server.wait_ready();
        server
    }
}

/// A running server process.
pub struct ServerProc {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl ServerProc {
    fn wait_ready(&mut self) {
        let deadline = Deadline::after(PROCESS_TIMEOUT);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "server exited during start-up ({status}):\n{}",
                    self.log_text()
                );
            }
            if self.socket.exists() && cli(&self.socket, &["healthcheck"]).status.success() {
                break;
            }
            assert!(!deadline.passed(), "server not ready:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        // The authority prepares its first CA on its first tick, right after start.
        loop {
            if cli(&self.socket, &["bundle", "show"]).status.success() {
                return;
            }
            assert!(!deadline.passed(), "no bundle:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit; the socket file must be gone.
    pub fn stop(mut self) {
        send_signal(self.child.id(), "TERM");
        let status = self.wait_exit();
        assert!(
            status.success(),
            "exit {status} after SIGTERM:\n{}",
            self.log_text()
        );
        assert!(!self.socket.exists(), "the socket is removed at shutdown");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.wait_exit();
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Deadline::after(PROCESS_TIMEOUT);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if deadline.passed() {
                let _ = self.child.kill();
                panic!("server did not exit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends a signal to our child. std only sends SIGKILL, and the workspace denies `unsafe`
/// (so no `libc::kill`): the `kill` command it is.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Runs a CLI verb against `socket`.
pub fn cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--socketPath")
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs a CLI verb that must succeed; returns its stdout.
pub fn ok(socket: &Path, args: &[&str]) -> String {
    let out = cli(socket, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a CLI verb that must fail with exit code 1; returns its stderr.
pub fn fails(socket: &Path, args: &[&str]) -> String {
    let out = cli(socket, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Runs a CLI verb with `--output json` that must succeed; returns the parsed output.
pub fn ok_json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_str(&ok(socket, &all)).unwrap()
}
