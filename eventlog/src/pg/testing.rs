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

use std::hash::{BuildHasher, Hasher};
use std::path::Path;
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
}
