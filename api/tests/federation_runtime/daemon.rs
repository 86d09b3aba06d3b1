//! Two `tessera-server run` processes configured for federation, end to end: A serves its
//! bundle endpoint (`https_web`, a test CA's certificate from files); B federates with A from
//! its config file and trusts the test CA through `SSL_CERT_FILE` (the system-roots path), so
//! A's bundle, with A's refresh hint, reaches B's federated bundles without any API call.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tessera_identity::{Bundle, TrustDomain};

use crate::support::WebFiles;

const BIN: &str = env!("CARGO_BIN_EXE_tessera-server");

/// A server process, killed when dropped.
struct Proc {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Proc {
    fn start(dir: &Path, name: &str, toml: &str, ssl_cert_file: Option<&Path>) -> Proc {
        let config = dir.join(format!("{name}.toml"));
        let socket = dir.join(format!("{name}/api.sock"));
        let log = dir.join(format!("{name}.log"));
        let text = format!(
            "[server]\ntrust_domain = \"{name}\"\ndata_dir = {:?}\nsocket_path = {:?}\nbind_address = \"127.0.0.1\"\nbind_port = 0\n[key_manager]\ntype = \"memory\"\n{toml}",
            dir.join(format!("{name}/data")).display().to_string(),
            socket.display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(file) = ssl_cert_file {
            cmd.env("SSL_CERT_FILE", file).env_remove("SSL_CERT_DIR");
        }
        Proc {
            child: cmd.spawn().unwrap(),
            socket,
            log,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--socketPath")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `args` until it succeeds with an output `ok` accepts; at most 300 tries 100 ms
    /// apart.
    fn until(&mut self, args: &[&str], what: &str, ok: impl Fn(&str) -> bool) -> String {
        for attempt in 1..=300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("server exited ({status}):\n{}", self.log_text());
            }
            let out = self.cli(args);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && ok(&stdout) {
                return stdout;
            }
            assert!(
                attempt < 300,
                "{what}: {}\n{stdout}\nlog:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        unreachable!("the last attempt asserts")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_configured_relationship_fetches_a_configured_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let files = WebFiles::new(&["127.0.0.1"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut a = Proc::start(
        dir.path(),
        "a.test",
        &format!(
            "[federation.bundle_endpoint]\naddress = \"127.0.0.1\"\nport = {port}\nrefresh_hint = \"2m\"\nprofile = \"https_web\"\n[federation.bundle_endpoint.https_web]\ncert_file_path = {:?}\nkey_file_path = {:?}\n",
            files.cert.display().to_string(),
            files.key.display().to_string(),
        ),
        None,
    );
    let own = a.until(
        &["bundle", "show", "--format", "spiffe"],
        "A's bundle",
        |_| true,
    );
    let own = Bundle::from_jwks(TrustDomain::new("a.test").unwrap(), own.as_bytes()).unwrap();

    let ca_file = dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, files.ca_pem.as_bytes()).unwrap();
    let mut b = Proc::start(
        dir.path(),
        "b.test",
        &format!(
            "[federation.federates_with.\"a.test\"]\nbundle_endpoint_url = \"https://127.0.0.1:{port}/\"\nbundle_endpoint_profile = \"https_web\"\n"
        ),
        Some(&ca_file),
    );
    let fetched = b.until(
        &[
            "bundle",
            "list",
            "--id",
            "spiffe://a.test",
            "--format",
            "spiffe",
        ],
        "A's bundle at B",
        |out| out.contains("spiffe_refresh_hint"),
    );
    let fetched =
        Bundle::from_jwks(TrustDomain::new("a.test").unwrap(), fetched.as_bytes()).unwrap();
    assert_eq!(fetched.x509_authorities(), own.x509_authorities());
    assert_eq!(fetched.refresh_hint(), Some(120));
    assert_eq!(fetched.sequence_number(), own.sequence_number());
    drop(b);
    drop(a);
}
