//! A throw-away PostgreSQL database per test (feature `pg-test-support`; dev only).
//!
//! ```ignore
//! let Some(db) = TestDatabase::create().await? else { return Ok(()) }; // skipped: no server
//! let log = PgLog::open(db.config(dir.path()), clock).await?;
//! ```
//!
//! The server is `TESSERA_TEST_PG_URL` (default [`DEFAULT_URL`]). Each call creates a database
//! named `tessera_t_<pid>_<counter>_<random>` there and drops it (`WITH (FORCE)`) on
//! [`TestDatabase::cleanup`] or drop. Without a reachable server the test is skipped with one
//! line on stderr, unless `CI=true`, where that is an error.
//!
//! A test that must stop and restart the database (an outage) cannot do it to a shared
//! server: [`PrivatePostgres`] runs an instance of its own, from PostgreSQL's binaries.
//!
//! ```ignore
//! let Some(mut pg) = PrivatePostgres::start()? else { return Ok(()) }; // skipped: no binaries
//! pg.stop()?;    // the outage
//! pg.restart()?; // same port, same data
//! ```

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::NoTls;

use super::PgConfig;

/// The variable naming the server tests create their databases on.
pub const URL_VAR: &str = "TESSERA_TEST_PG_URL";
/// The server used when [`URL_VAR`] is unset.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a test database could not be made.
#[derive(Debug, thiserror::Error)]
#[error("test database: {0}")]
pub struct TestDatabaseError(String);

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    dropped: bool,
}

impl TestDatabase {
    /// Creates a uniquely named database on the test server. `Ok(None)` (after one line on
    /// stderr) when the server cannot be reached and `CI` is not `true`.
    ///
    /// # Errors
    /// The server is unreachable under `CI=true`, or refuses to create the database.
    pub async fn create() -> Result<Option<TestDatabase>, TestDatabaseError> {
        let admin_url = std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_string());
        let where_ = super::shared::describe_url(&admin_url);
        let client = match admin(&admin_url).await {
            Ok(client) => client,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                return Err(TestDatabaseError(format!(
                    "{where_} is not reachable ({e}); CI=true makes this a failure (set \
                     {URL_VAR} to the test server)"
                )));
            }
            Err(e) => {
                eprintln!(
                    "skipping: {where_} is not reachable ({e}); set {URL_VAR} to a server, or \
                     CI=true to make this a failure"
                );
                return Ok(None);
            }
        };
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!(
            "tessera_t_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            random as u32
        );
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(|e| TestDatabaseError(format!("CREATE DATABASE {name} on {where_}: {e}")))?;
        let url = with_dbname(&admin_url, &name);
        Ok(Some(TestDatabase {
            name,
            url,
            admin_url,
            dropped: false,
        }))
    }

    /// The connection URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A [`PgConfig`] for this database with snapshots in `snapshot_dir`, and short
    /// timeouts and a quick poll suited to tests.
    pub fn config(&self, snapshot_dir: impl AsRef<Path>) -> PgConfig {
        let mut config = PgConfig::new(self.url.clone(), snapshot_dir.as_ref());
        config.connect_timeout = Duration::from_secs(5);
        config.poll_interval = Duration::from_millis(200);
        config
    }

    /// Drops the database (closing its remaining connections).
    ///
    /// # Errors
    /// The server refused or could not be reached.
    pub async fn cleanup(mut self) -> Result<(), TestDatabaseError> {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop may run inside a runtime, which cannot block on itself: a thread of its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(drop_database(&admin_url, &name)),
                Err(e) => Err(TestDatabaseError(format!("no runtime to drop {name}: {e}"))),
            }
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("{e}"),
            Err(_) => eprintln!("test database: dropping {} panicked", self.name),
        }
    }
}

async fn admin(url: &str) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|e| match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), TestDatabaseError> {
    let client = admin(admin_url)
        .await
        .map_err(|e| TestDatabaseError(format!("dropping {name}: {e}")))?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map_err(|e| TestDatabaseError(format!("DROP DATABASE {name}: {e}")))
}

/// `url` pointing at database `name` instead: the path of a `postgres://` URL, or a
/// `dbname=` appended to a key-value string (later keys win).
fn with_dbname(url: &str, name: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (body, query) = match rest.split_once('?') {
                Some((body, query)) => (body, Some(query)),
                None => (rest, None),
            };
            let authority = body.split_once('/').map_or(body, |(a, _)| a);
            let mut out = format!("{scheme}{authority}/{name}");
            if let Some(query) = query {
                out.push('?');
                out.push_str(query);
            }
            return out;
        }
    }
    format!("{url} dbname={name}")
}

// === impl PrivatePostgres ===

/// The variable naming the directory of PostgreSQL's server binaries for [`PrivatePostgres`].
pub const BIN_DIR_VAR: &str = "TESSERA_TEST_PG_BIN";
/// Debian's PostgreSQL 15 binaries, used when [`BIN_DIR_VAR`] is unset.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The database [`PrivatePostgres::url`] names (created at start).
pub const PRIVATE_DATABASE: &str = "tessera";

/// The user the binaries run as when the test runs as root: initdb and postgres refuse root.
const ROOT_RUNS_AS: &str = "postgres";
/// How often every wait of [`PrivatePostgres`] looks again.
const POLL: Duration = Duration::from_millis(100);
/// Longest a start or a stop may take (pg_ctl's own `-t`; our wait for it adds a little).
const PG_CTL_WAIT: Duration = Duration::from_secs(30);
/// Longest initdb or createdb may take.
const TOOL_WAIT: Duration = Duration::from_secs(60);
/// Ports tried at the first start: another process may take a free port between our probe and
/// the postmaster's bind.
const PORT_ATTEMPTS: usize = 3;

/// Why a private PostgreSQL instance could not be started, stopped or restarted.
#[derive(Debug, thiserror::Error)]
#[error("private PostgreSQL: {0}")]
pub struct PrivatePostgresError(String);

/// A PostgreSQL instance of one test's own, which the test may stop and restart (an outage):
/// a data directory in a fresh temp directory, a free port on 127.0.0.1 only, its Unix
/// socket in that temp directory, trust authentication, `fsync = off`, and a database
/// [`PRIVATE_DATABASE`]. The binaries are [`BIN_DIR_VAR`] (default [`DEFAULT_BIN_DIR`]); under
/// root they run as user `postgres`. Dropping it stops the instance and removes the directory.
#[derive(Debug)]
pub struct PrivatePostgres {
    root: PathBuf,
    bin: PathBuf,
    /// `Some(user)` when the test runs as root.
    run_as: Option<&'static str>,
    port: u16,
    /// Started by us and not stopped since.
    running: bool,
}

impl PrivatePostgres {
    /// Makes, starts and fills (one database) a new instance. `Ok(None)` (after one line on
    /// stderr) when the binaries are missing and `CI` is not `true`.
    ///
    /// # Errors
    /// The binaries are missing under `CI=true`; initdb, the start or createdb failed (the
    /// message holds their output and the end of the server's log).
    pub fn start() -> Result<Option<PrivatePostgres>, PrivatePostgresError> {
        let bin = std::env::var_os(BIN_DIR_VAR)
            .map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from);
        let missing: Vec<&str> = ["initdb", "pg_ctl", "postgres", "createdb"]
            .into_iter()
            .filter(|name| !bin.join(name).is_file())
            .collect();
        if !missing.is_empty() {
            let what = format!(
                "{} not found in {} (install PostgreSQL 15's server package, or set {BIN_DIR_VAR} \
                 to the directory of initdb and pg_ctl)",
                missing.join(", "),
                bin.display()
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                return Err(PrivatePostgresError(format!(
                    "{what}; CI=true makes this a failure"
                )));
            }
            eprintln!("skipping: {what}; set CI=true to make this a failure");
            return Ok(None);
        }
        let run_as = (id(&["-u"])? == 0).then_some(ROOT_RUNS_AS);
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let root = std::env::temp_dir().join(format!(
            "tessera-pg-{}-{}-{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            random as u32
        ));
        std::fs::create_dir(&root)
            .map_err(|e| PrivatePostgresError(format!("creating {}: {e}", root.display())))?;
        // From here on, dropping `pg` removes the directory, whatever fails next.
        let mut pg = PrivatePostgres {
            root,
            bin,
            run_as,
            port: 0,
            running: false,
        };
        let sockets = pg.socket_dir();
        std::fs::create_dir(&sockets)
            .map_err(|e| PrivatePostgresError(format!("creating {}: {e}", sockets.display())))?;
        if let Some(user) = run_as {
            let (uid, gid) = (id(&["-u", user])?, id(&["-g", user])?);
            for dir in [&pg.root, &sockets] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
                    PrivatePostgresError(format!("chown {} to {user}: {e}", dir.display()))
                })?;
            }
        }
        pg.initdb()?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            pg.port = free_port()?;
            // The last `port` line of postgresql.conf wins.
            pg.append_conf(&format!("port = {}\n", pg.port))?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        let mut createdb = pg.command("createdb");
        createdb
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(PRIVATE_DATABASE)
            .env("PGCONNECT_TIMEOUT", "5");
        pg.run("createdb", createdb, TOOL_WAIT)?;
        Ok(Some(pg))
    }

    /// The connection URL of the instance's database (trust authentication: no password).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{PRIVATE_DATABASE}",
            self.port
        )
    }

    /// The instance's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the instance (fast shutdown: open sessions are ended) and returns once its port
    /// refuses connections.
    ///
    /// # Errors
    /// pg_ctl failed or timed out, or the port still answers.
    pub fn stop(&mut self) -> Result<(), PrivatePostgresError> {
        self.pg_ctl_stop("fast")
    }

    /// Starts the instance again, on the same port with the same data (stopping it first
    /// if it runs), and returns once it accepts connections.
    ///
    /// # Errors
    /// The stop or the start failed, e.g. the port was taken meanwhile.
    pub fn restart(&mut self) -> Result<(), PrivatePostgresError> {
        if self.running {
            self.stop()?;
        }
        self.pg_ctl_start()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("sockets")
    }

    fn server_log(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn initdb(&self) -> Result<(), PrivatePostgresError> {
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        self.run("initdb", initdb, TOOL_WAIT)?;
        self.append_conf(&format!(
            "\n# PrivatePostgres (a test's own instance)\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = '16MB'\n",
            self.socket_dir().display()
        ))
    }

    fn append_conf(&self, text: &str) -> Result<(), PrivatePostgresError> {
        let path = self.data_dir().join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| PrivatePostgresError(format!("writing {}: {e}", path.display())))
    }

    fn pg_ctl_start(&mut self) -> Result<(), PrivatePostgresError> {
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.server_log())
            .args(["-w", "-t", &PG_CTL_WAIT.as_secs().to_string(), "start"]);
        let what = format!("starting on 127.0.0.1:{}", self.port);
        self.run(&what, start, PG_CTL_WAIT + Duration::from_secs(5))?;
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> Result<(), PrivatePostgresError> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D").arg(self.data_dir()).args([
            "-m",
            mode,
            "-w",
            "-t",
            &PG_CTL_WAIT.as_secs().to_string(),
            "stop",
        ]);
        let what = format!("stopping ({mode}) on 127.0.0.1:{}", self.port);
        self.run(&what, stop, PG_CTL_WAIT + Duration::from_secs(5))?;
        self.running = false;
        // pg_ctl returns when the postmaster is gone; the port is closed by then, but a test
        // relies on it, so it is checked.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        for _ in 0..(PG_CTL_WAIT.as_millis() / POLL.as_millis()) {
            if TcpStream::connect_timeout(&addr, POLL).is_err() {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        Err(PrivatePostgresError(format!(
            "{addr} still accepts connections {PG_CTL_WAIT:?} after pg_ctl stopped the server"
        )))
    }

    /// One of the binaries, as the user that may run it, in the instance's directory.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        };
        cmd.current_dir(&self.root).stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` to its end, killed after `limit`. Its output goes to a file, not a pipe: the
    /// postmaster that `pg_ctl start` leaves behind would hold a pipe open for ever.
    fn run(
        &self,
        what: &str,
        mut cmd: Command,
        limit: Duration,
    ) -> Result<(), PrivatePostgresError> {
        let out_path = self.root.join("command.out");
        let io_error = |e: std::io::Error| PrivatePostgresError(format!("{what}: {e}"));
        let out = File::create(&out_path).map_err(io_error)?;
        let err = out.try_clone().map_err(io_error)?;
        let mut child = cmd.stdout(out).stderr(err).spawn().map_err(io_error)?;
        for _ in 0..=(limit.as_millis() / POLL.as_millis()) {
            match child.try_wait().map_err(io_error)? {
                Some(status) if status.success() => return Ok(()),
                Some(status) => return Err(self.failed(what, &status.to_string())),
                None => std::thread::sleep(POLL),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(self.failed(what, &format!("no end within {limit:?}")))
    }

    /// An error for a command that failed, with its output and the end of the server's log.
    fn failed(&self, what: &str, why: &str) -> PrivatePostgresError {
        let tail = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        PrivatePostgresError(format!(
            "{what} ({}): {why}\n{}\n--- {}:\n{}",
            self.root.display(),
            tail(&self.root.join("command.out")),
            self.server_log().display(),
            tail(&self.server_log())
        ))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running || self.data_dir().join("postmaster.pid").exists() {
            if let Err(e) = self.pg_ctl_stop("fast") {
                eprintln!("{e}");
                if let Err(e) = self.pg_ctl_stop("immediate") {
                    eprintln!("{e}");
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            eprintln!("private PostgreSQL: removing {}: {e}", self.root.display());
        }
    }
}

/// `id <args>`: a uid or gid.
fn id(args: &[&str]) -> Result<u32, PrivatePostgresError> {
    let out = Command::new("id")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PrivatePostgresError(format!("id {}: {e}", args.join(" "))))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse() {
        Ok(n) if out.status.success() => Ok(n),
        _ => Err(PrivatePostgresError(format!(
            "id {}: {}{}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, PrivatePostgresError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| PrivatePostgresError(format!("finding a free port on 127.0.0.1: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_replaces_the_one_in_the_url() {
        assert_eq!(
            with_dbname("postgres://postgres@127.0.0.1:5432/test", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_dbname("postgresql://u:p@h/db?sslmode=disable", "t2"),
            "postgresql://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://h", "t3"), "postgres://h/t3");
        assert_eq!(
            with_dbname("host=h user=u dbname=x", "t4"),
            "host=h user=u dbname=x dbname=t4"
        );
    }

    /// A stopped instance refuses connections; restarted, it has the same port and data; its
    /// directory is gone after drop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_instance_stops_and_restarts_with_its_data() {
        let Some(mut pg) = PrivatePostgres::start().unwrap() else {
            return;
        };
        let (url, root) = (pg.url(), pg.root.clone());
        let client = admin(&url).await.unwrap();
        client
            .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
            .await
            .unwrap();
        drop(client);

        pg.stop().unwrap();
        let refused = admin(&url).await.expect_err("the instance is stopped");
        assert!(refused.contains("refused"), "{refused}");

        pg.restart().unwrap();
        assert_eq!(pg.url(), url, "same port");
        let client = admin(&url).await.unwrap();
        let n: i32 = client
            .query_one("SELECT n FROM kept", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 7);
        drop(client);

        drop(pg);
        assert!(!root.exists(), "{} is removed", root.display());
    }
}
