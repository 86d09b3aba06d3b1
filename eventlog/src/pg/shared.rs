//! What the writer, the tailer, subscriptions and the handle share: the pool, the head watch,
//! the recent records, and the mapping of driver errors to [`LogError`].

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

use crate::error::{ChainFault, DecodeError, LogError};
use crate::log::{BadRecord, Head};
use crate::record::{Digest32, Record};

use super::cache::RecentRecords;
use super::{schema, PgConfig, PgStats};

/// One row of `tessera_log` as read back: its seq column and its decoded `record` column.
pub(crate) type Row = (u64, Result<Record, DecodeError>);

pub(crate) struct Shared {
    pub(crate) config: PgConfig,
    /// The parsed connection settings, with the timeouts applied.
    pub(crate) pg: tokio_postgres::Config,
    /// `PostgreSQL at host:port/dbname`: for messages, never with a password.
    pub(crate) location: String,
    pub(crate) pool: Pool,
    head_tx: watch::Sender<Head>,
    pub(crate) head: watch::Receiver<Head>,
    shutdown: watch::Sender<bool>,
    pub(crate) recent: Mutex<RecentRecords>,
    /// The first damaged record the tailer found, if any: it stops there.
    pub(crate) fault: Mutex<Option<BadRecord>>,
    pub(crate) stats: Counters,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("location", &self.location)
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

/// `PostgreSQL at host:port/dbname` for `url`, without user or password.
pub(crate) fn describe_url(url: &str) -> String {
    match tokio_postgres::Config::from_str(url) {
        Ok(pg) => describe(&pg),
        Err(_) => "PostgreSQL at (an unparsable URL)".into(),
    }
}

fn describe(pg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = pg
                .get_ports()
                .get(i)
                .or(pg.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    let db = pg.get_dbname().or(pg.get_user()).unwrap_or("postgres");
    format!("PostgreSQL at {hosts}/{db}")
}

impl Shared {
    /// Parses the URL, builds the pool, migrates the schema and reads the last row's head.
    pub(crate) async fn connect(config: PgConfig) -> Result<(Shared, Head), LogError> {
        let location = describe_url(&config.url);
        let mut pg = tokio_postgres::Config::from_str(&config.url).map_err(|e| {
            // The driver's message names the bad part; the URL itself may hold a password.
            LogError::Storage {
                path: location.clone().into(),
                message: format!("the PostgreSQL URL is not valid: {e}"),
            }
        })?;
        pg.connect_timeout(config.connect_timeout)
            .tcp_user_timeout(config.statement_timeout + config.connect_timeout)
            .options(format!(
                "-c statement_timeout={}",
                config.statement_timeout.as_millis().max(1)
            ));
        if pg.get_application_name().is_none() {
            pg.application_name("tessera");
        }
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| LogError::Storage {
                path: location.clone().into(),
                message: format!("cannot build the connection pool: {e}"),
            })?;
        let (head_tx, head) = watch::channel(Head::EMPTY);
        let (shutdown, _) = watch::channel(false);
        let recent = RecentRecords::new(config.recent_records);
        let shared = Shared {
            config,
            pg,
            location,
            pool,
            head_tx,
            head,
            shutdown,
            recent: Mutex::new(recent),
            fault: Mutex::new(None),
            stats: Counters::default(),
        };
        let mut client = shared.client().await?;
        schema::migrate(&shared, &mut client).await?;
        let head = shared.last_head(&**client).await?;
        Ok((shared, head))
    }

    /// A pooled connection, or `Unavailable`.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, LogError> {
        use deadpool_postgres::PoolError;
        match self.pool.get().await {
            Ok(client) => Ok(client),
            Err(PoolError::Backend(e)) => Err(self.pg_error("connecting", &e)),
            Err(PoolError::Timeout(_)) => Err(self.unavailable(format!(
                "no connection within {:?} (connect_timeout)",
                self.config.connect_timeout
            ))),
            Err(PoolError::Closed) => Err(LogError::Closed { reason: None }),
            Err(e) => Err(self.unavailable(format!("connecting: {e}"))),
        }
    }

    /// Runs `op` on the database within the statement timeout (plus the connect timeout, for
    /// a slow network): a hung connection answers `Unavailable`, never hangs the caller.
    pub(crate) async fn within<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, LogError> {
        match tokio::time::timeout(self.op_timeout(), op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.pg_error(what, &e)),
            Err(_) => {
                Err(self.unavailable(format!("{what}: no answer within {:?}", self.op_timeout())))
            }
        }
    }

    /// The longest the client waits for one statement.
    pub(crate) fn op_timeout(&self) -> Duration {
        self.config.statement_timeout + self.config.connect_timeout
    }

    pub(crate) fn unavailable(&self, message: String) -> LogError {
        LogError::Unavailable {
            location: self.location.clone(),
            message,
        }
    }

    pub(crate) fn storage(&self, message: String) -> LogError {
        LogError::Storage {
            path: self.location.clone().into(),
            message,
        }
    }

    pub(crate) fn corrupt(&self, seq: u64, fault: ChainFault) -> LogError {
        LogError::Corrupt {
            path: self.location.clone().into(),
            seq,
            fault,
        }
    }

    /// A driver error as `Unavailable` (the server is unreachable, restarting, overloaded, or
    /// cancelled the statement) or `Storage` (anything a retry will not fix).
    pub(crate) fn pg_error(&self, what: &str, e: &tokio_postgres::Error) -> LogError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let message = format!("{what}: {} (SQLSTATE {code})", db.message());
            // 08 connection, 40 rollback (serialization, deadlock), 53 resources,
            // 57 operator intervention (shutdown, statement timeout), 58 system error.
            return match code.get(..2) {
                Some("08" | "40" | "53" | "57" | "58") => self.unavailable(message),
                _ => self.storage(message),
            };
        }
        let mut message = format!("{what}: {e}");
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        self.unavailable(message)
    }

    /// Moves the head forward (never back) and wakes subscriptions.
    pub(crate) fn publish(&self, head: Head) {
        self.head_tx.send_if_modified(|current| {
            if head.seq > current.seq {
                *current = head;
                true
            } else {
                false
            }
        });
    }

    /// Wakes subscriptions without moving the head (a fault was recorded).
    pub(crate) fn wake(&self) {
        self.head_tx.send_modify(|_| {});
    }

    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Keeps `records` (contiguous, committed) in memory for subscriptions and reads.
    pub(crate) fn remember(&self, records: &[Record]) {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(records);
    }

    /// The head of the last row in the table (by seq), or the empty head.
    pub(crate) async fn last_head(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<Head, LogError> {
        let row = self
            .within(
                "reading the head",
                client.query_opt(
                    "SELECT seq, hash FROM tessera_log ORDER BY seq DESC LIMIT 1",
                    &[],
                ),
            )
            .await?;
        let Some(row) = row else {
            return Ok(Head::EMPTY);
        };
        let seq: i64 = row
            .try_get(0)
            .map_err(|e| self.pg_error("reading the head", &e))?;
        let hash: &[u8] = row
            .try_get(1)
            .map_err(|e| self.pg_error("reading the head", &e))?;
        Ok(Head {
            seq: from_sql_seq(seq),
            hash: digest(hash),
        })
    }

    /// Up to `limit` rows from seq `from` on, in seq order, decoded (not yet checked).
    pub(crate) async fn rows(
        &self,
        client: &tokio_postgres::Client,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Row>, LogError> {
        let rows = self
            .within(
                "reading records",
                client.query(
                    "SELECT seq, record FROM tessera_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
                    &[&to_sql_seq(from), &to_sql_limit(limit)],
                ),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row
                    .try_get(0)
                    .map_err(|e| self.pg_error("reading records", &e))?;
                let bytes: &[u8] = row
                    .try_get(1)
                    .map_err(|e| self.pg_error("reading records", &e))?;
                Ok((from_sql_seq(seq), Record::decode(bytes)))
            })
            .collect()
    }

    /// Up to `limit` committed records from `from` on: from memory when it holds them all,
    /// otherwise from the table (so records this server has not seen yet are read too).
    pub(crate) async fn read(&self, from: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cached = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .range(from, limit);
        if cached.len() == limit {
            return Ok(cached);
        }
        let client = self.client().await?;
        let rows = self.rows(&client, from, limit).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, decoded) in rows {
            let expected = from + out.len() as u64;
            let record = decoded.map_err(|e| self.corrupt(seq, ChainFault::Undecodable(e)))?;
            if seq != expected || record.seq != expected {
                return Err(self.corrupt(
                    expected,
                    ChainFault::SeqGap {
                        expected,
                        found: if seq != expected { seq } else { record.seq },
                    },
                ));
            }
            out.push(record);
        }
        Ok(out)
    }
}

/// Counters behind [`PgStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) transactions: AtomicU64,
    pub(crate) lost_races: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) unavailable: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PgStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PgStats {
            appends: get(&self.appends),
            records: get(&self.records),
            transactions: get(&self.transactions),
            lost_races: get(&self.lost_races),
            conflicts: get(&self.conflicts),
            unavailable: get(&self.unavailable),
        }
    }
}

/// A seq as the `BIGINT` column stores it. Seqs never reach 2^63; saturate rather than wrap.
pub(crate) fn to_sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A `BIGINT` seq read back; a negative one (never written by Tessera) reads as 0, which
/// every chain check rejects.
pub(crate) fn from_sql_seq(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

pub(crate) fn to_sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A `BYTEA` hash column as a digest; a wrong length reads as zeros, which never matches.
pub(crate) fn digest(bytes: &[u8]) -> Digest32 {
    <[u8; 32]>::try_from(bytes)
        .map(Digest32)
        .unwrap_or(Digest32::GENESIS)
}
