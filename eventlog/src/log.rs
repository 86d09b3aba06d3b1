//! The [`EventLog`] trait: what every backend offers, and the types it speaks.

use std::fmt;
use std::path::PathBuf;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::error::{ChainFault, LogError};
use crate::record::{Digest32, NewRecord, Record};
use crate::snapshot::{Snapshot, SnapshotStream};

/// The last committed record's seq and hash (`seq` 0 and zero hash for an empty log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Head {
    /// Seq of the last committed record.
    pub seq: u64,
    /// Its hash.
    pub hash: Digest32,
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: Digest32::GENESIS,
    };
}

/// When an append may commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AppendCondition {
    /// Whatever the head is (the single-writer case).
    #[default]
    Any,
    /// Only if the head is still this seq: optimistic concurrency for several writers, who
    /// decided on state as of that seq. Otherwise `LogError::Conflict`.
    ExpectHead(u64),
}

/// What an append committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Seq of the first record of the batch.
    pub first_seq: u64,
    /// Seq of the last record of the batch (`first_seq - 1` for an empty batch).
    pub last_seq: u64,
    /// Commit time given to the batch, nanoseconds since the Unix epoch.
    pub recorded_at: i64,
}

/// The first record that fails the chain check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    /// Its seq.
    pub seq: u64,
    /// What is wrong.
    pub fault: ChainFault,
}

/// The outcome of walking the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records that passed, from seq 1.
    pub records_checked: u64,
    /// The last record that passed.
    pub head: Head,
    /// The first fault, if any.
    pub fault: Option<BadRecord>,
}

impl VerifyReport {
    /// Whether the whole chain verified.
    pub fn is_ok(&self) -> bool {
        self.fault.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fault {
            None => write!(
                f,
                "ok: {} records, head seq {} hash {}",
                self.records_checked, self.head.seq, self.head.hash
            ),
            Some(bad) => write!(
                f,
                "FAILED at seq {}: {} ({} records before it verified)",
                bad.seq, bad.fault, self.records_checked
            ),
        }
    }
}

/// Committed records from some seq on: first those already in the log, then each new one as
/// it commits; never a gap, never a duplicate. Ends when the log closes.
pub type Subscription = BoxStream<'static, Result<Record, LogError>>;

/// An append-only, hash-chained log of records. Implementations: [`LocalLog`](crate::LocalLog)
/// over an embedded [`Store`](crate::store::Store) (sled, memory); PostgreSQL later, with
/// several writers using [`AppendCondition::ExpectHead`].
pub trait EventLog: Send + Sync + fmt::Debug + 'static {
    /// Appends `batch` as consecutive records. Returns only once they are durable; concurrent
    /// appends share one flush (group commit). A batch commits entirely or not at all.
    fn append(
        &self,
        batch: Vec<NewRecord>,
        condition: AppendCondition,
    ) -> BoxFuture<'_, Result<AppendReceipt, LogError>>;

    /// Up to `limit` committed records from `from_seq` on.
    fn read(&self, from_seq: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Record>, LogError>>;

    /// Committed records from `from_seq` on, then live ones as they commit.
    fn subscribe(&self, from_seq: u64) -> Subscription;

    /// The last head this handle has seen committed.
    fn head(&self) -> Head;

    /// Walks the whole chain and reports the first bad record, if any.
    fn verify(&self) -> BoxFuture<'_, Result<VerifyReport, LogError>>;

    /// Stores `data` as the folded state after record `seq` (which must be committed).
    fn save_snapshot(&self, seq: u64, data: Vec<u8>) -> BoxFuture<'_, Result<(), LogError>>;

    /// The latest snapshot, checked against the log's hash at its seq.
    fn latest_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, LogError>>;

    /// The latest snapshot as [`EventLog::latest_snapshot`], its data read as a stream (see
    /// [`SnapshotStream`]). The default reads it whole.
    fn latest_snapshot_stream(&self) -> BoxFuture<'_, Result<Option<SnapshotStream>, LogError>> {
        Box::pin(async move { Ok(self.latest_snapshot().await?.map(SnapshotStream::from)) })
    }

    /// Where the log lives, for messages.
    fn location(&self) -> PathBuf;

    /// Resolves once the check the log ran at open has passed (at once when it ran before
    /// open returned, or was off); an error naming the first fault if it failed.
    fn opened(&self) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async { Ok(()) })
    }
}
