//! `[store]` and `server.server_id`: where the event log lives, and this server's name in a
//! log several servers share.

use std::path::Path;
use std::time::Duration;

use super::file::StoreSection;
use super::{invalid, ConfigError};

/// The event log's backend, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Embedded sled under `<data_dir>/log`: one server (the default).
    Sled,
    /// One log in PostgreSQL, shared by every server pointed at it.
    Postgres(PostgresStore),
}

/// `[store] backend = "postgres"`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresStore {
    /// The connection string (may hold a password: never printed, see [`redact`]).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest a statement may run.
    pub statement_timeout: Duration,
    /// How often to look for other servers' records without a notification.
    pub poll_interval: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl StoreConfig {
    /// Whether several servers may share this log.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// Validates `[store]`; `url_flag` (`--storeURL`) overrides `store.url` and selects
/// `postgres`.
pub(super) fn store(s: &StoreSection, url_flag: Option<&str>) -> Result<StoreConfig, ConfigError> {
    let backend = if url_flag.is_some() {
        "postgres"
    } else {
        s.backend.as_str()
    };
    match backend {
        "sled" => {
            if s.url.is_some() {
                return Err(invalid(
                    "store.url",
                    "(set)",
                    "is only used with store.backend = \"postgres\"; remove it or set the backend",
                ));
            }
            Ok(StoreConfig::Sled)
        }
        "postgres" => {
            let (key, url) = match (url_flag, &s.url) {
                (Some(url), _) => ("--storeURL", url.to_owned()),
                (None, Some(url)) => ("store.url", url.clone()),
                (None, None) => {
                    return Err(invalid(
                        "store.url",
                        "",
                        "is required with store.backend = \"postgres\" \
                         (e.g. \"postgres://tessera@db.example.org:5432/tessera\"), or pass --storeURL",
                    ))
                }
            };
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.contains("host="))
            {
                return Err(invalid(
                    key,
                    redact(&url),
                    "must be a PostgreSQL connection string: postgres://user@host:port/dbname",
                ));
            }
            if s.pool_size == 0 || s.pool_size > 1024 {
                return Err(invalid(
                    "store.pool_size",
                    s.pool_size,
                    "must be between 1 and 1024",
                ));
            }
            for (key, d) in [
                ("store.connect_timeout", s.connect_timeout),
                ("store.statement_timeout", s.statement_timeout),
                ("store.poll_interval", s.poll_interval),
            ] {
                if d.is_zero() {
                    return Err(invalid(key, "0", "must be longer than zero (e.g. \"5s\")"));
                }
            }
            Ok(StoreConfig::Postgres(PostgresStore {
                url,
                pool_size: s.pool_size,
                connect_timeout: s.connect_timeout,
                statement_timeout: s.statement_timeout,
                poll_interval: s.poll_interval,
            }))
        }
        other => Err(invalid(
            "store.backend",
            other,
            "must be \"sled\" (embedded, one server) or \"postgres\" (several servers)",
        )),
    }
}

/// A connection string with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _password)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_owned();
    }
    // key=value form: hide `password=...`.
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Longest server id, in bytes.
pub const MAX_SERVER_ID_LEN: usize = 64;

/// Checks a server id: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn check_server_id(key: &str, id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SERVER_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            id,
            "must be 1 to 64 letters, digits, '.', '_' or '-' (e.g. \"server-a\")",
        ))
    }
}

/// The file that keeps a generated server id in the data directory.
pub fn server_id_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("server_id")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(backend: &str, url: Option<&str>) -> StoreSection {
        StoreSection {
            backend: backend.into(),
            url: url.map(Into::into),
            ..StoreSection::default()
        }
    }

    #[test]
    fn sled_is_the_default_and_postgres_needs_a_url() {
        assert_eq!(
            store(&StoreSection::default(), None).unwrap(),
            StoreConfig::Sled
        );
        let e = store(&section("postgres", None), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url") && e.contains("--storeURL"), "{e}");
        let pg = store(&section("postgres", Some("postgres://t@127.0.0.1/x")), None).unwrap();
        assert!(pg.is_shared());
        let e = store(&section("mysql", None), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.backend") && e.contains("postgres"), "{e}");
        let e = store(&section("sled", Some("postgres://x")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only used with"), "{e}");
    }

    #[test]
    fn the_flag_selects_postgres_and_passwords_are_never_shown() {
        let pg = store(&StoreSection::default(), Some("postgres://u:hunter2@h/db")).unwrap();
        assert!(format!("{pg:?}").contains("u:***@h/db"));
        assert!(!format!("{pg:?}").contains("hunter2"));
        let e = store(&StoreSection::default(), Some("mysql://u:hunter2@h/db"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--storeURL") && !e.contains("hunter2"), "{e}");
        assert_eq!(
            redact("host=h password=s3cret dbname=d"),
            "host=h password=*** dbname=d"
        );
    }

    #[test]
    fn server_ids_are_short_and_plain() {
        assert!(check_server_id("server.server_id", "server-a.eu_1").is_ok());
        for bad in ["", "a b", "ä", &"x".repeat(65)] {
            let e = check_server_id("server.server_id", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("server.server_id"), "{e}");
        }
    }
}
