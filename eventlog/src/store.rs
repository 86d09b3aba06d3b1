//! Storage backends under a [`LocalLog`](crate::LocalLog): a single writer's durable record
//! and snapshot storage. The backend knows nothing of hashes or group commit; it stores what
//! it is given and says when it is durable.

use std::path::Path;

use crate::error::{DecodeError, LogError};
use crate::record::{Digest32, Record};
use crate::snapshot::{Snapshot, SnapshotStream};

pub mod memory;
pub mod sled;
pub(crate) mod snapshot_file;

/// One stored record as read back: the key it was stored under, and its decoded bytes.
pub type StoredRecord = (u64, Result<Record, DecodeError>);

/// A durable home for records and snapshots, written by one writer at a time.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Where the store lives (a directory, or a name for in-memory stores), for messages.
    fn location(&self) -> &Path;

    /// Writes `records` (contiguous, following the current head) and returns once they are
    /// durable: after a crash they are all present or the call did not return `Ok`.
    fn write(&self, records: &[Record]) -> Result<(), LogError>;

    /// Up to `limit` records from seq `from` on, in order. Undecodable records are errors.
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Record>, LogError>;

    /// Visits every stored record from seq `from` on, in key order, without stopping at
    /// damage: the visitor returns `false` to stop.
    fn scan(&self, from: u64, visit: &mut dyn FnMut(StoredRecord) -> bool) -> Result<(), LogError>;

    /// The head the log last acknowledged, kept apart from the records so that a backend that
    /// silently drops a damaged tail is caught. `None` if the backend keeps no marker.
    fn acknowledged_head(&self) -> Result<Option<(u64, Digest32)>, LogError>;

    /// Durably stores a snapshot, replacing older ones beyond the retention count.
    fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), LogError>;

    /// The stored record with the highest seq, if any and decodable. The default scans.
    fn last_record(&self) -> Result<Option<Record>, LogError> {
        let mut last = None;
        self.scan(1, &mut |(_, decoded)| {
            if let Ok(r) = decoded {
                last = Some(r);
            }
            true
        })?;
        Ok(last)
    }

    /// The snapshot with the highest seq, if any.
    fn latest_snapshot(&self) -> Result<Option<Snapshot>, LogError>;

    /// The snapshot with the highest seq, its data to be read as a stream. The default reads
    /// it whole; backends that store snapshots as files override this.
    fn latest_snapshot_stream(&self) -> Result<Option<SnapshotStream>, LogError> {
        Ok(self.latest_snapshot()?.map(SnapshotStream::from))
    }

    /// The seq and record hash of the latest snapshot, without reading its data: where an
    /// open that checks the chain from the latest snapshot starts. Backends that keep snapshot
    /// heads apart from the (large) data override this.
    fn latest_snapshot_anchor(&self) -> Result<Option<(u64, Digest32)>, LogError> {
        Ok(self.latest_snapshot()?.map(|s| (s.seq, s.hash)))
    }
}

/// Snapshots kept by a backend; older ones are deleted when a new one is stored.
pub const SNAPSHOTS_RETAINED: usize = 2;
