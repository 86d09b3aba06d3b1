//! [`PgLog`]: the event log in PostgreSQL, shared by several Tessera servers
//! (docs/adr/0010-postgresql-event-log.md).
//!
//! ```text
//!  appenders ──(bounded queue)──▶ writer task ──▶ one INSERT statement per group
//!                                    │             (checks the head row, pg_notify)
//!                                    │ unique violation: another server appended first
//!                                    ▼
//!                               head (watch) ◀── tailer task ◀── LISTEN tessera_log
//!                                    │             + a poll every `poll_interval`
//!                                    ▼
//!                  subscriptions: recent records in memory, older ones from the table
//! ```
//!
//! Rows of `tessera_log` hold exactly [`Record::encode`](crate::Record::encode), so the bytes
//! and hashes are the same as sled's; `seq` is the primary key, so two servers can never
//! commit the same seq, and each group's statement checks that the row at the head it sealed
//! on has the hash its first record chains to, so a commit always extends the chain. There
//! are no sequences: seqs are dense by construction.
//!
//! A database outage is not fail-stop: appends get [`LogError::Unavailable`] promptly
//! (bounded by the connect and statement timeouts) and work again once the database is back;
//! subscriptions wait through it. Snapshots are local files of each server.

mod cache;
mod follow;
mod import;
mod schema;
mod shared;
mod snapshots;
#[cfg(feature = "pg-test-support")]
pub mod testing;
mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::error::LogError;
use crate::local::OpenCheck;
use crate::log::{AppendCondition, AppendReceipt, EventLog, Head, Subscription, VerifyReport};
use crate::record::{NewRecord, Record};
use crate::snapshot::{Snapshot, SnapshotStream};

use self::shared::Shared;
use self::writer::Request;

pub use self::schema::SCHEMA_VERSION;

/// How to reach the database, and the bounds of a [`PgLog`].
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// A libpq-style connection string, `postgres://user[:password]@host:port/dbname` or
    /// `host=... dbname=...`. The password never appears in messages.
    pub url: String,
    /// Connections in the pool used by appends, reads and snapshots (the tailer has its own).
    pub pool_size: usize,
    /// Longest wait for a new connection.
    pub connect_timeout: Duration,
    /// Longest a statement may run, on the server (`statement_timeout`) and as the client's
    /// wait for an answer.
    pub statement_timeout: Duration,
    /// How often the tailer reads new records even without a notification (one may be lost
    /// while its connection is down).
    pub poll_interval: Duration,
    /// Where this server keeps its snapshots (local files, one per snapshot).
    pub snapshot_dir: PathBuf,
    /// How much of the chain to check when opening; a damaged log refuses to open.
    pub open_check: OpenCheck,
    /// Most records in one `append` call.
    pub max_batch_records: usize,
    /// Most records the writer puts in one transaction; more waiting requests go in the next.
    pub max_group_records: usize,
    /// Append requests that may wait for the writer; further appenders wait for room.
    pub queue_depth: usize,
    /// Records a subscription, the tailer or `verify` reads from the database at a time.
    pub subscription_chunk: usize,
    /// Most recent records kept in memory for subscriptions and reads on this server.
    pub recent_records: usize,
}

impl PgConfig {
    /// The defaults, for the database at `url` and snapshots in `snapshot_dir`.
    pub fn new(url: impl Into<String>, snapshot_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            snapshot_dir: snapshot_dir.into(),
            open_check: OpenCheck::FullChain,
            max_batch_records: 10_000,
            max_group_records: 20_000,
            queue_depth: 4_096,
            subscription_chunk: 1_024,
            recent_records: 16_384,
        }
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &shared::describe_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("open_check", &self.open_check)
            .field("max_batch_records", &self.max_batch_records)
            .field("max_group_records", &self.max_group_records)
            .field("queue_depth", &self.queue_depth)
            .field("subscription_chunk", &self.subscription_chunk)
            .field("recent_records", &self.recent_records)
            .finish()
    }
}

/// Counters of a [`PgLog`] since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgStats {
    /// Append requests answered `Ok`.
    pub appends: u64,
    /// Records those appends committed.
    pub records: u64,
    /// Transactions that committed records (group commit: fewer than `appends`).
    pub transactions: u64,
    /// Transactions that lost the race for the head to another server and were retried.
    pub lost_races: u64,
    /// Appends answered `Conflict`.
    pub conflicts: u64,
    /// Appends answered `Unavailable`.
    pub unavailable: u64,
}

/// A log in PostgreSQL; clones share one writer, one tailer and one pool.
#[derive(Clone, Debug)]
pub struct PgLog {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl PgLog {
    /// Connects, creates or migrates the schema, checks the chain as `config.open_check`
    /// says, and starts the writer and the tailer. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// `Unavailable` when the database cannot be reached, `Storage` for a bad URL or a schema
    /// newer than this build, `Corrupt` when the chain check finds damage.
    pub async fn open(config: PgConfig, clock: Arc<dyn Clock>) -> Result<PgLog, LogError> {
        let (shared, head) = Shared::connect(config).await?;
        let head = match snapshots::open_anchor(&shared)? {
            Some(anchor) => verify::check_chain(&shared, anchor).await?,
            None => head,
        };
        let shared = Arc::new(shared);
        shared.publish(head);
        let (queue_tx, queue_rx) = mpsc::channel(shared.config.queue_depth.max(1));
        let writer = tokio::spawn(writer::Writer::new(shared.clone(), clock, head).run(queue_rx));
        let tailer = tokio::spawn(follow::tail(shared.clone()));
        Ok(PgLog {
            inner: Arc::new(Handle {
                shared,
                queue: Mutex::new(Some(queue_tx)),
                tasks: Mutex::new(vec![writer, tailer]),
            }),
        })
    }

    /// Stops accepting appends, lets queued ones finish, stops the tailer and waits for both
    /// tasks. Subscriptions end once they have delivered every record this handle has seen.
    pub async fn close(&self) {
        drop(
            self.inner
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        self.inner.shared.shut_down();
        let tasks: Vec<_> = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a PostgreSQL event log task failed");
            }
        }
        self.inner.shared.pool.close();
    }

    /// Counters since open.
    pub fn stats(&self) -> PgStats {
        self.inner.shared.stats.snapshot()
    }

    /// Copies every record of `source` (e.g. a sled [`LocalLog`](crate::LocalLog)) into this
    /// log, which must be empty, keeping seqs, times and hashes byte for byte, in one
    /// transaction; then verifies the copy. Returns the number of records copied.
    ///
    /// # Errors
    /// `Storage` if this log is not empty, `Corrupt` if the source's chain is damaged,
    /// `Unavailable` if the database cannot be reached.
    pub async fn import(&self, source: &dyn EventLog) -> Result<u64, LogError> {
        import::import(&self.inner.shared, source).await
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The tasks hold the shared state, not the handle: tell them to stop.
        self.shared.shut_down();
    }
}

impl EventLog for PgLog {
    fn append(
        &self,
        batch: Vec<NewRecord>,
        condition: AppendCondition,
    ) -> BoxFuture<'_, Result<AppendReceipt, LogError>> {
        async move {
            let limit = self.inner.shared.config.max_batch_records;
            if batch.len() > limit {
                return Err(LogError::BatchTooLarge {
                    len: batch.len(),
                    limit,
                });
            }
            for record in &batch {
                record.check().map_err(LogError::InvalidRecord)?;
            }
            let queue = self
                .inner
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .ok_or(LogError::Closed { reason: None })?;
            let (reply, answer) = oneshot::channel();
            queue
                .send(Request {
                    records: batch,
                    condition,
                    reply,
                })
                .await
                .map_err(|_| LogError::Closed { reason: None })?;
            answer
                .await
                .map_err(|_| LogError::Closed { reason: None })?
        }
        .boxed()
    }

    fn read(&self, from_seq: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Record>, LogError>> {
        async move { self.inner.shared.read(from_seq.max(1), limit).await }.boxed()
    }

    fn subscribe(&self, from_seq: u64) -> Subscription {
        follow::subscribe(self.inner.shared.clone(), from_seq.max(1))
    }

    fn head(&self) -> Head {
        *self.inner.shared.head.borrow()
    }

    fn verify(&self) -> BoxFuture<'_, Result<VerifyReport, LogError>> {
        async move { verify::verify(&self.inner.shared).await }.boxed()
    }

    fn save_snapshot(&self, seq: u64, data: Vec<u8>) -> BoxFuture<'_, Result<(), LogError>> {
        async move { snapshots::save(&self.inner.shared, seq, data).await }.boxed()
    }

    fn latest_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, LogError>> {
        async move { snapshots::latest(&self.inner.shared).await }.boxed()
    }

    fn latest_snapshot_stream(&self) -> BoxFuture<'_, Result<Option<SnapshotStream>, LogError>> {
        async move { snapshots::latest_stream(&self.inner.shared).await }.boxed()
    }

    fn location(&self) -> PathBuf {
        PathBuf::from(&self.inner.shared.location)
    }
}
