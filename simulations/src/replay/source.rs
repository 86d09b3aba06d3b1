//! Where replay reads records: a private copy of a server's sled log, or a PostgreSQL log read
//! in a read-only session. Neither path can write the server's log (see the charter of
//! [`super`]).

use std::path::{Path, PathBuf};

use tessera_actors::server::state::ServerState;
use tessera_eventlog::store::sled::SledStore;
use tessera_eventlog::store::Store;
use tessera_eventlog::{Digest32, LogError, Record};
use tessera_server::config::{Config, Overrides, StoreConfig};

use super::{ReplayArgs, ReplayError};

/// An open log to read.
#[derive(Debug)]
pub(super) enum Source {
    /// A copy of a sled log.
    Sled(SledCopy),
    /// A PostgreSQL log.
    Postgres(PgSource),
}

/// A sled log copied to a temporary directory, opened there.
#[derive(Debug)]
pub(super) struct SledCopy {
    /// Declared before `copy` so that sled is closed before its directory is removed.
    store: SledStore,
    /// The server's log directory (read only with `read_dir` and `copy`).
    original: PathBuf,
    copy: tempfile::TempDir,
}

impl Source {
    /// Opens the log `args` name: exactly one of `--dataDir`, `--databaseURL`, `--config`.
    pub(super) fn open(args: &ReplayArgs) -> Result<Source, ReplayError> {
        let given = [
            args.data_dir.is_some(),
            args.database_url.is_some(),
            args.config.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => {
                return Err(ReplayError::Usage(
                    "say which log to read: --dataDir DIR (a server's data_dir), \
                     --databaseURL postgres://... or --config server.toml"
                        .into(),
                ))
            }
            1 => {}
            _ => {
                return Err(ReplayError::Usage(
                    "--dataDir, --databaseURL and --config each name a log: pass only one".into(),
                ))
            }
        }
        if let Some(dir) = &args.data_dir {
            return Ok(Source::Sled(SledCopy::open(dir)?));
        }
        if let Some(url) = &args.database_url {
            return Ok(Source::Postgres(PgSource::open(url)?));
        }
        let path = args.config.as_deref().unwrap_or(Path::new(""));
        let config = Config::load(Some(path), &Overrides::default())
            .map_err(|e| ReplayError::Config(e.to_string()))?;
        match &config.store {
            StoreConfig::Sled => Ok(Source::Sled(SledCopy::open(&config.log_dir())?)),
            StoreConfig::Postgres(pg) => Ok(Source::Postgres(PgSource::open(&pg.url)?)),
        }
    }

    /// Where the log is, for messages (never a password).
    pub(super) fn location(&self) -> String {
        match self {
            Source::Sled(s) => s.original.display().to_string(),
            Source::Postgres(p) => p.location.clone(),
        }
    }

    /// The last record, if any.
    pub(super) fn last(&mut self) -> Result<Option<Record>, ReplayError> {
        match self {
            Source::Sled(s) => s.store.last_record().map_err(|e| s.error(e)),
            Source::Postgres(p) => p.last(),
        }
    }

    /// Up to `limit` records from `from` on.
    pub(super) fn read(&mut self, from: u64, limit: usize) -> Result<Vec<Record>, ReplayError> {
        match self {
            Source::Sled(s) => s.store.read(from, limit).map_err(|e| s.error(e)),
            Source::Postgres(p) => p.read(from, limit),
        }
    }

    /// The record at `seq`, if present.
    pub(super) fn record(&mut self, seq: u64) -> Result<Option<Record>, ReplayError> {
        Ok(self.read(seq, 1)?.into_iter().find(|r| r.seq == seq))
    }

    /// The seq of the last record committed at or before `t` (Unix nanoseconds), by binary
    /// search over `1..=head`: commit times do not decrease along the log (each group takes
    /// the clock once, in order); `None` if the first record is later than `t`.
    pub(super) fn last_at_or_before(
        &mut self,
        t: i64,
        head: u64,
    ) -> Result<Option<u64>, ReplayError> {
        let (mut lo, mut hi) = (1u64, head);
        let mut found = None;
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let Some(record) = self.record(mid)? else {
                return Err(ReplayError::Damaged {
                    location: self.location(),
                    seq: mid,
                    before: mid.saturating_sub(1),
                    reason: "the record is missing".into(),
                });
            };
            if record.recorded_at <= t {
                found = Some(mid);
                lo = mid + 1;
            } else if mid == 1 {
                break;
            } else {
                hi = mid - 1;
            }
        }
        Ok(found)
    }

    /// The server's latest snapshot at or before `target`, checked against the record at its
    /// seq: `(seq, hash, state)`. `None` when there is none (PostgreSQL: snapshots are each
    /// server's local files, not read here) or it cannot be used (then the log is folded from
    /// the start, as the server does).
    pub(super) fn snapshot_at_or_before(
        &mut self,
        target: u64,
    ) -> Result<Option<(u64, Digest32, ServerState)>, ReplayError> {
        let Source::Sled(copy) = self else {
            return Ok(None);
        };
        let Some(seq) = copy.stage_snapshot(target)? else {
            return Ok(None);
        };
        let stream = match copy.store.latest_snapshot_stream() {
            Ok(Some(stream)) if stream.seq == seq && stream.seq <= target => stream,
            Ok(_) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, seq, "snapshot unusable; folding the log from the start");
                return Ok(None);
            }
        };
        let hash = stream.hash;
        match self.record(seq)? {
            Some(r) if r.hash == hash => {}
            _ => {
                tracing::warn!(
                    seq,
                    "snapshot does not match the log's record at its seq; folding from the start"
                );
                return Ok(None);
            }
        }
        match tessera_eventlog::typed::decode_state_stream::<ServerState>(stream) {
            Ok(mut state) => {
                // As the server's start-up: the nodes aggregate's copy of pending tokens is
                // not stored twice.
                state.nodes.seed_tokens(state.tokens.clone());
                Ok(Some((seq, hash, state)))
            }
            Err(e) => {
                tracing::warn!(error = %e, seq, "snapshot undecodable by this build; folding the log from the start");
                Ok(None)
            }
        }
    }
}

// === impl SledCopy ===

impl SledCopy {
    /// Finds the sled log under `dir`, copies it to a temporary directory and opens the copy.
    fn open(dir: &Path) -> Result<SledCopy, ReplayError> {
        let fail = |reason: String| ReplayError::DataDir {
            path: dir.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail("does not exist".into()),
            _ => fail(format!("cannot be read: {e}")),
        })?;
        if !meta.is_dir() {
            return Err(fail("is not a directory".into()));
        }
        let original = if dir.join("log").join("sled").is_dir() {
            dir.join("log")
        } else if dir.join("sled").is_dir() {
            dir.to_owned()
        } else {
            let mut items =
                std::fs::read_dir(dir).map_err(|e| fail(format!("cannot be read: {e}")))?;
            return Err(match items.next() {
                None => fail("is empty".into()),
                Some(_) => ReplayError::NotALog {
                    path: dir.to_owned(),
                    reason: "it holds neither log/sled/ (a server's data_dir) nor sled/ (a log \
                             directory); pass the directory the server's data_dir names"
                        .into(),
                },
            });
        };
        let copy = tempfile::Builder::new()
            .prefix("tessera-replay-")
            .tempdir()
            .map_err(|e| ReplayError::Read {
                location: original.display().to_string(),
                reason: format!("cannot make a temporary directory for the copy: {e}"),
            })?;
        copy_dir(&original.join("sled"), &copy.path().join("sled")).map_err(|e| {
            ReplayError::Read {
                location: original.display().to_string(),
                reason: format!(
                    "cannot copy sled/ to {} (replay reads a copy, never the server's own files): {e}",
                    copy.path().display()
                ),
            }
        })?;
        let store = SledStore::open(copy.path()).map_err(|e| ReplayError::NotALog {
            path: original.clone(),
            reason: format!("its sled/ does not open as a sled database: {e}"),
        })?;
        Ok(SledCopy {
            store,
            original,
            copy,
        })
    }

    /// Copies into the copy's `snapshots/` the server's newest snapshot file at or before
    /// `target`, so that the store's own snapshot reader (anchors, checksum) finds it and no
    /// newer one; its seq.
    fn stage_snapshot(&self, target: u64) -> Result<Option<u64>, ReplayError> {
        let dir = self.original.join("snapshots");
        let items = match std::fs::read_dir(&dir) {
            Ok(items) => items,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("cannot list snapshots/", e)),
        };
        let mut best: Option<(u64, PathBuf)> = None;
        for item in items {
            let path = item
                .map_err(|e| self.io("cannot list snapshots/", e))?
                .path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".snap"))
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(seq) = seq.filter(|s| *s <= target && *s > 0) {
                if best.as_ref().is_none_or(|(b, _)| seq > *b) {
                    best = Some((seq, path));
                }
            }
        }
        let Some((seq, path)) = best else {
            return Ok(None);
        };
        let staged = self.copy.path().join("snapshots");
        std::fs::create_dir_all(&staged).map_err(|e| self.io("cannot stage a snapshot", e))?;
        let name = path.file_name().unwrap_or_default();
        std::fs::copy(&path, staged.join(name))
            .map_err(|e| self.io("cannot copy a snapshot", e))?;
        Ok(Some(seq))
    }

    fn io(&self, what: &str, e: std::io::Error) -> ReplayError {
        ReplayError::Read {
            location: self.original.display().to_string(),
            reason: format!("{what}: {e}"),
        }
    }

    fn error(&self, e: LogError) -> ReplayError {
        let location = self.original.display().to_string();
        match e {
            LogError::Corrupt { seq, fault, .. } => ReplayError::Damaged {
                location,
                seq,
                before: seq.saturating_sub(1),
                reason: fault.to_string(),
            },
            other => ReplayError::Read {
                location,
                reason: other.to_string(),
            },
        }
    }
}

/// Copies the directory tree at `from` to `to` (regular files and directories; sled keeps
/// nothing else).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        let kind = item.file_type()?;
        let target = to.join(item.file_name());
        if kind.is_dir() {
            copy_dir(&item.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(item.path(), &target)?;
        }
    }
    Ok(())
}

// === PostgreSQL ===

/// A PostgreSQL log, read through one connection whose session is read-only.
#[derive(Debug)]
pub(super) struct PgSource {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    location: String,
}

impl PgSource {
    fn open(url: &str) -> Result<PgSource, ReplayError> {
        let location = tessera_server::config::store::redact(url);
        let fail = |reason: String| ReplayError::Read {
            location: location.clone(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start a runtime: {e}")))?;
        let client = block(&runtime, async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .map_err(|e| {
                    fail(format!(
                        "cannot connect (is the database up, the URL right?): {e}"
                    ))
                })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            // Every statement of this session runs in a read-only transaction: the database
            // refuses any write, whatever this code does.
            client
                .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                .await
                .map_err(|e| fail(format!("cannot make the session read-only: {e}")))?;
            Ok::<_, ReplayError>(client)
        })?;
        Ok(PgSource {
            runtime,
            client,
            location,
        })
    }

    fn rows_to_records(&self, rows: Vec<tokio_postgres::Row>) -> Result<Vec<Record>, ReplayError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get(0).map_err(|e| self.fail(e))?;
            let bytes: Vec<u8> = row.try_get(1).map_err(|e| self.fail(e))?;
            let seq = u64::try_from(seq).unwrap_or(0);
            let record = Record::decode(&bytes).map_err(|e| ReplayError::Damaged {
                location: self.location.clone(),
                seq,
                before: seq.saturating_sub(1),
                reason: format!("the stored record does not decode: {e}"),
            })?;
            out.push(record);
        }
        Ok(out)
    }

    fn fail(&self, e: impl std::fmt::Display) -> ReplayError {
        ReplayError::Read {
            location: self.location.clone(),
            reason: e.to_string(),
        }
    }

    /// A failed query, with the database's own message (the client's `Display` says only
    /// "db error"); a missing table means this is not a Tessera log.
    fn query_failed(&self, e: &tokio_postgres::Error) -> ReplayError {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            return ReplayError::NotALog {
                path: PathBuf::from(&self.location),
                reason: "the database has no tessera_log table; point --databaseURL at the \
                         database the servers' [store] url names"
                    .into(),
            };
        }
        match e.as_db_error() {
            Some(db) => self.fail(format!("{e}: {}", db.message())),
            None => self.fail(e),
        }
    }

    fn last(&mut self) -> Result<Option<Record>, ReplayError> {
        let rows = block(
            &self.runtime,
            self.client.query(
                "SELECT seq, record FROM tessera_log ORDER BY seq DESC LIMIT 1",
                &[],
            ),
        )
        .map_err(|e| self.query_failed(&e))?;
        Ok(self.rows_to_records(rows)?.pop())
    }

    fn read(&mut self, from: u64, limit: usize) -> Result<Vec<Record>, ReplayError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = block(
            &self.runtime,
            self.client.query(
                "SELECT seq, record FROM tessera_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&from, &limit],
            ),
        )
        .map_err(|e| self.query_failed(&e))?;
        self.rows_to_records(rows)
    }
}

/// Runs `fut` to completion on `runtime`: here, or, when the caller is itself inside a tokio
/// runtime (where `block_on` would panic), on a scoped thread of its own.
fn block<F>(runtime: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(fut);
    }
    std::thread::scope(|s| s.spawn(|| runtime.block_on(fut)).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
