//! In-memory store, for tests and the simulator. "Durable" means "in this process".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use crate::error::LogError;
use crate::record::{Digest32, Record};
use crate::snapshot::Snapshot;
use crate::store::{Store, StoredRecord, SNAPSHOTS_RETAINED};

/// Records and snapshots in memory.
#[derive(Debug)]
pub struct MemoryStore {
    name: PathBuf,
    records: RwLock<Vec<Record>>,
    snapshots: RwLock<BTreeMap<u64, Snapshot>>,
}

impl MemoryStore {
    /// An empty store; `name` appears in messages in place of a path.
    pub fn new(name: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            records: RwLock::new(Vec::new()),
            snapshots: RwLock::new(BTreeMap::new()),
        }
    }

    /// Replaces a stored record, bypassing every check: for tests of tamper detection.
    pub fn tamper(&self, seq: u64, edit: impl FnOnce(&mut Record)) {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = seq.checked_sub(1).and_then(|i| records.get_mut(i as usize)) {
            edit(r);
        }
    }
}

impl Store for MemoryStore {
    fn location(&self) -> &Path {
        &self.name
    }

    fn write(&self, records: &[Record]) -> Result<(), LogError> {
        let mut stored = self.records.write().unwrap_or_else(PoisonError::into_inner);
        stored.extend_from_slice(records);
        Ok(())
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        let stored = self.records.read().unwrap_or_else(PoisonError::into_inner);
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        Ok(stored.iter().skip(start).take(limit).cloned().collect())
    }

    fn scan(&self, from: u64, visit: &mut dyn FnMut(StoredRecord) -> bool) -> Result<(), LogError> {
        let stored = self.records.read().unwrap_or_else(PoisonError::into_inner);
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        for (i, r) in stored.iter().enumerate().skip(start) {
            if !visit((i as u64 + 1, Ok(r.clone()))) {
                break;
            }
        }
        Ok(())
    }

    fn acknowledged_head(&self) -> Result<Option<(u64, Digest32)>, LogError> {
        Ok(None)
    }

    fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), LogError> {
        let mut snaps = self
            .snapshots
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        snaps.insert(snapshot.seq, snapshot.clone());
        while snaps.len() > SNAPSHOTS_RETAINED {
            snaps.pop_first();
        }
        Ok(())
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>, LogError> {
        let snaps = self
            .snapshots
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(snaps.last_key_value().map(|(_, s)| s.clone()))
    }
}
