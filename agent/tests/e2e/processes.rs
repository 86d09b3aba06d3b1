//! Real `tessera-server` and `tessera-agent` processes on loopback and temp sockets, stopped
//! (SIGKILL) when dropped. The binaries are the workspace's own, next to this test binary.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/<name>`: the workspace builds every binary before running its tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --workspace --all-targets)",
        path.display()
    );
    path
}

/// A running server.
pub struct ServerProc {
    pub child: Child,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
    /// Addresses of its federation bundle endpoint, as logged when it listens.
    endpoint: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl ServerProc {
    /// Starts a server with its data under `dir`, on an ephemeral port, and waits until its
    /// agent API is listening (bounded: 30 s).
    pub fn start(dir: &Path, port: u16) -> ServerProc {
        Self::start_with(dir, port, None)
    }

    /// Like [`ServerProc::start`], with a config file.
    pub fn start_with(dir: &Path, port: u16, config: Option<&Path>) -> ServerProc {
        Self::spawn("example.org", dir, port, config, &[])
    }

    /// A server of trust domain `td` on an ephemeral port, with a config file and more
    /// environment variables (`SSL_CERT_FILE` for a test Web PKI).
    pub fn start_in(
        td: &str,
        dir: &Path,
        config: Option<&Path>,
        env: &[(&str, &Path)],
    ) -> ServerProc {
        Self::spawn(td, dir, 0, config, env)
    }

    fn spawn(
        td: &str,
        dir: &Path,
        port: u16,
        config: Option<&Path>,
        env: &[(&str, &Path)],
    ) -> ServerProc {
        let sock = dir.join("server.sock");
        let mut log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut cmd = Command::new(bin("tessera-server"));
        cmd.arg("run");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(["--trustDomain", td, "--bindAddress", "127.0.0.1"])
            .arg("--serverPort")
            .arg(port.to_string())
            .arg("--dataDir")
            .arg(dir.join("server"))
            .arg("--socketPath")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The server logs to stderr; copy it to server.log and catch the agent API's address.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (endpoint_tx, endpoint_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(addr) = line.split("agent API listening addr=").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                if let Some(rest) = line.split("bundle endpoint listening addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = endpoint_tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server's agent API came up within 30 s");
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the log line");
        let s = ServerProc {
            child,
            dir: dir.to_owned(),
            sock,
            port,
            endpoint: std::sync::Mutex::new(endpoint_rx),
        };
        wait_until("the server's admin socket", || {
            s.cli(&["healthcheck"]).status.success()
        });
        s
    }

    /// Starts a server on the shared PostgreSQL log at `url`, named `server_id`, with its own
    /// data dir, socket and key manager under `dir`; `server` is more keys of its `[server]`
    /// section (e.g. `default_x509_svid_ttl = "20s"`), one per line.
    pub fn start_pg(dir: &Path, url: &str, server_id: &str, server: &str) -> ServerProc {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("server.toml");
        std::fs::write(
            &conf,
            format!(
                "[server]\nserver_id = \"{server_id}\"\n{server}\n\
                 [store]\nbackend = \"postgres\"\nurl = \"{url}\"\npoll_interval = \"200ms\"\n\
                 connect_timeout = \"2s\"\nstatement_timeout = \"5s\"\n"
            ),
        )
        .unwrap();
        Self::start_with(dir, 0, Some(&conf))
    }

    /// The port of its federation bundle endpoint (configured with `port = 0`), once it listens
    /// (bounded: 30 s).
    pub fn bundle_endpoint_port(&self) -> u16 {
        let addr = self
            .endpoint
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30))
            .expect("the bundle endpoint came up within 30 s");
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the log line")
    }

    /// Runs `tessera-server <args> --socketPath <sock>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("tessera-server"))
            .args(args)
            .arg("--socketPath")
            .arg(&self.sock)
            .output()
            .unwrap()
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "tessera-server {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A join token.
    pub fn token(&self) -> String {
        let out = self.ok(&["token", "generate"]);
        out.lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .expect("Token: line")
            .trim()
            .to_owned()
    }

    /// Writes `bundle show` to `<dir>/bundle.pem`.
    pub fn bundle_file(&self) -> PathBuf {
        let path = self.dir.join("bundle.pem");
        std::fs::write(&path, self.ok(&["bundle", "show"])).unwrap();
        path
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running agent.
pub struct AgentProc {
    pub child: Child,
    pub sock: PathBuf,
}

impl AgentProc {
    /// Starts an agent against `port`, with data under `dir`.
    pub fn start(dir: &Path, port: u16, bundle: &Path, token: Option<&str>) -> AgentProc {
        Self::start_with(dir, port, bundle, token, None)
    }

    /// Like [`AgentProc::start`], with a config file.
    pub fn start_with(
        dir: &Path,
        port: u16,
        bundle: &Path,
        token: Option<&str>,
        config: Option<&Path>,
    ) -> AgentProc {
        let server = format!("127.0.0.1:{port}");
        Self::start_servers(dir, &[server.as_str()], bundle, token, config)
    }

    /// Starts an agent with one `--serverAddress` flag per item of `servers` (each item may
    /// hold several comma-separated addresses), with data under `dir`.
    pub fn start_servers(
        dir: &Path,
        servers: &[&str],
        bundle: &Path,
        token: Option<&str>,
        config: Option<&Path>,
    ) -> AgentProc {
        let sock = dir.join("agent.sock");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .unwrap();
        let mut cmd = Command::new(bin("tessera-agent"));
        cmd.arg("run");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(["--trustDomain", "example.org"]);
        for server in servers {
            cmd.args(["--serverAddress", server]);
        }
        cmd.arg("--dataDir")
            .arg(dir.join("agent"))
            .arg("--socketPath")
            .arg(&sock)
            .arg("--trustBundle")
            .arg(bundle)
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(t) = token {
            cmd.args(["--joinToken", t]);
        }
        let child = cmd.spawn().unwrap();
        AgentProc { child, sock }
    }

    /// The Workload API endpoint for clients.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// Kills the agent (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `ok` every 100 ms for at most 30 s.
pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not within 30 s");
}

/// The calling process's uid, for `unix:uid:` selectors.
pub fn my_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
