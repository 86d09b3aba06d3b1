//! Errors of the event log.

use std::path::PathBuf;

/// A stored record's bytes do not have the record layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte names a layout this build does not know.
    #[error("unknown record format byte {0}; the log was written by a newer Tessera")]
    UnknownFormat(u8),
    /// The bytes end before the record does.
    #[error("record is truncated")]
    Truncated,
    /// Bytes remain after the record's last field.
    #[error("{0} unexpected bytes after the record")]
    TrailingBytes(usize),
    /// The kind is empty or longer than `MAX_KIND_LEN`.
    #[error("event kind length {0} is outside 1..=255 bytes")]
    KindLength(usize),
    /// The kind is not UTF-8.
    #[error("event kind is not UTF-8")]
    KindNotUtf8,
    /// The payload is longer than `MAX_PAYLOAD_LEN`.
    #[error("payload of {0} bytes exceeds the 16 MiB record limit")]
    PayloadLength(usize),
}

/// Why a record fails the chain check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    /// The record's bytes could not be decoded.
    #[error("undecodable: {0}")]
    Undecodable(DecodeError),
    /// A seq is missing or out of order.
    #[error("expected seq {expected} here, found seq {found}")]
    SeqGap {
        /// The seq that should come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// `prev_hash` is not the hash of the record before.
    #[error("prev_hash {found} does not match the previous record's hash {expected}")]
    BrokenLink {
        /// Hash of the previous record.
        expected: String,
        /// `prev_hash` stored in this record.
        found: String,
    },
    /// The stored hash does not match the record's contents.
    #[error("stored hash {stored} does not match its contents (recomputed {computed})")]
    Tampered {
        /// Hash stored in the record.
        stored: String,
        /// Hash recomputed from the fields.
        computed: String,
    },
    /// Records the log acknowledged are absent from the store.
    #[error("the store ends at seq {store_head} but seq {marker_head} was acknowledged; records {first_missing}..={marker_head} are missing")]
    Missing {
        /// Last seq present in the store.
        store_head: u64,
        /// Last seq the head marker says was acknowledged.
        marker_head: u64,
        /// First missing seq.
        first_missing: u64,
    },
}

/// Errors of the event log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// Opening found a damaged, missing or altered record: the log refuses to start rather
    /// than serve a history with a hole in it. Restore the directory from a backup, or
    /// investigate with `events verify`.
    #[error("event log at {path}: seq {seq}: {fault}; refusing to open a damaged log (restore {path} from backup, or inspect it with `events verify`)")]
    Corrupt {
        /// The log's location.
        path: PathBuf,
        /// The first bad seq.
        seq: u64,
        /// What is wrong with it.
        fault: ChainFault,
    },
    /// An `append` with `AppendCondition::ExpectHead` found another head: another writer
    /// appended first. Re-read, re-decide, retry.
    #[error("append conflict: expected head seq {expected}, log is at {actual}")]
    Conflict {
        /// The head the caller expected.
        expected: u64,
        /// The actual head.
        actual: u64,
    },
    /// A record to append breaks a limit.
    #[error("record rejected: {0}")]
    InvalidRecord(DecodeError),
    /// An append batch holds more records than `LogLimits::max_batch_records`.
    #[error(
        "append batch of {len} records exceeds the limit of {limit} (LogLimits::max_batch_records)"
    )]
    BatchTooLarge {
        /// Records in the batch.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A snapshot refers to a seq the log does not have, or with a different hash.
    #[error("snapshot at seq {seq} does not match the log: {reason}")]
    SnapshotMismatch {
        /// The snapshot's seq.
        seq: u64,
        /// What does not match.
        reason: String,
    },
    /// The storage backend failed. The log stops accepting appends after a failed write
    /// (fail-stop): what was acknowledged is durable, what was not is unknown until reopen.
    #[error("event log storage at {path}: {message}")]
    Storage {
        /// The log's location.
        path: PathBuf,
        /// The backend's error.
        message: String,
    },
    /// The storage is unreachable (a PostgreSQL log whose database is down, restarting or
    /// too slow to answer within its timeouts): nothing was written, the log stays open, and
    /// the same append may be retried later. Unlike `Storage`, not fail-stop.
    #[error(
        "event log storage unavailable: {location}: {message}; nothing was written, retry later"
    )]
    Unavailable {
        /// Where the storage lives, e.g. `PostgreSQL at 127.0.0.1:5432/tessera` (never with a
        /// password).
        location: String,
        /// What failed, e.g. `connection refused`.
        message: String,
    },
    /// The log was shut down, or stopped after a storage failure.
    #[error("event log is closed{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed {
        /// Why, if it stopped on a failure.
        reason: Option<String>,
    },
}
