//! Runs `examples/outside-inside/run` (the tutorial's one command) on the workspace's built
//! binaries and checks each step's outcome in its output: the inside service up, the device
//! agent attested by x509pop, rotations under held connections (Workload API and SDS), the
//! refusals, the revocation, the federated partner let in, and that the script left no
//! process behind.
//!
//! The script runs in its own process group, killed (TERM, then KILL) if the test ends early,
//! and is given at most [`LIMIT`].

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);

/// The scenario's process group; killed on drop.
struct Scenario {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Scenario {
    fn start(bin_dir: &Path) -> Scenario {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("outside-inside/run");
        let mut child = Command::new("bash")
            .arg(script)
            .env("TESSERA_BIN_DIR", bin_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Scenario { child, output }
    }

    /// Waits for the script to exit (at most `LIMIT`); its success and everything it printed.
    fn finish(&mut self) -> (bool, String) {
        let mut status = None;
        for _ in 0..LIMIT.as_millis() / 100 {
            if let Some(s) = self.child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The reader thread may still be copying the last lines.
        std::thread::sleep(Duration::from_millis(200));
        let out = self.output.lock().unwrap().clone();
        let status = status.unwrap_or_else(|| panic!("the scenario ran past {LIMIT:?}:\n{out}"));
        (status.success(), out)
    }

    fn group_alive(&self) -> bool {
        signal(self.child.id(), "-0")
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() || self.group_alive() {
            signal(self.child.id(), "-TERM");
            for _ in 0..50 {
                if !self.group_alive() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            signal(self.child.id(), "-KILL");
            let _ = self.child.wait();
        }
    }
}

/// `kill <sig> -- -<pgid>` (no unsafe code for libc::kill); whether it succeeded.
fn signal(pgid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `target/<profile>`: where cargo put this package's binaries and, once the workspace is
/// built, the server's and the agent's.
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_caller"))
        .parent()
        .unwrap()
        .to_owned();
    for b in ["tessera-server", "tessera-agent"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: build it first (cargo build --workspace --bins)",
            dir.join(b).display()
        );
    }
    dir
}

fn step(out: &str, n: u32) -> &str {
    let start = out
        .find(&format!("\n== {n}. "))
        .unwrap_or_else(|| panic!("no step {n} in:\n{out}"));
    let rest = &out[start + 1..];
    let end = rest[1..].find("\n== ").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

#[test]
fn outside_inside_scenario() {
    let mut scenario = Scenario::start(&bin_dir());
    let (ok, out) = scenario.finish();
    assert!(ok, "the scenario failed:\n{out}");
    assert!(out.contains("\nall steps passed\n"), "{out}");
    assert!(!out.contains("   FAIL: "), "{out}");

    let inside = step(&out, 1);
    assert!(
        inside.contains("inside-service: listening on 127.0.0.1:")
            && inside.contains("as spiffe://platform.example/inside/service"),
        "{inside}"
    );
    let device = step(&out, 2);
    assert!(
        device.contains("attested as spiffe://platform.example/spire/agent/x509pop/"),
        "{device}"
    );
    let refused = step(&out, 4);
    assert!(
        refused.contains(
            "stranger: FAILED: the held connection: refused: spiffe://platform.example/device/\
             stranger is not on this service's allow-list"
        ),
        "{refused}"
    );
    assert!(
        refused.contains("inside-service: refused spiffe://platform.example/device/stranger"),
        "{refused}"
    );
    assert!(refused.contains("nobody: FAILED: no identity"), "{refused}");
    let rotation = step(&out, 5);
    assert!(
        rotation.contains("device-caller: rotated: serial "),
        "{rotation}"
    );
    assert!(
        rotation.contains("device-caller: OK: one connection held for 25 s"),
        "{rotation}"
    );
    for line in [
        "device-sidecar: SDS secrets \"default\" and \"ROOTCA\" received",
        "device-sidecar: rotated: serial ",
        "device-sidecar: OK: one connection held for 25 s",
    ] {
        assert!(rotation.contains(line), "{line:?} not in:\n{rotation}");
    }
    let revoked = step(&out, 6);
    assert!(
        revoked.contains("honest-caller: FAILED: the agent withdrew"),
        "{revoked}"
    );
    assert!(
        revoked.contains("stale-caller: FAILED: a fresh connection"),
        "{revoked}"
    );
    assert!(
        revoked
            .contains("inside-service: refused spiffe://platform.example/device/caller (serial ")
            && revoked.contains("SVID expired"),
        "{revoked}"
    );

    let partner = step(&out, 7);
    for line in [
        "Last successful refresh",
        "inside-service: now trusting partner.example, platform.example",
        "partner-caller: SDS secrets \"default\" and \"ALL\" received; trusting partner.example, \
         platform.example",
        "partner-caller: connected as serial ",
        "partner-caller: OK: one connection held",
        "inside-service: accepted spiffe://partner.example/caller (serial ",
    ] {
        assert!(partner.contains(line), "{line:?} not in:\n{partner}");
    }

    // The script's trap stopped everything it started.
    assert!(
        !scenario.group_alive(),
        "processes of the scenario are still running"
    );
}
