//! Snapshots of a PostgreSQL log: files in this server's `snapshot_dir` (the same file
//! format as the sled backend's), each checked against the table's row at its seq.
//!
//! Snapshots stay local: each server folds the log itself, and a snapshot is only a shortcut
//! for its own start-up. The table stays the one shared truth.

use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::local::OpenCheck;
use crate::log::Head;
use crate::record::Digest32;
use crate::snapshot::{Snapshot, SnapshotStream};
use crate::store::snapshot_file::{self, ReadError};
use crate::store::SNAPSHOTS_RETAINED;

use super::shared::Shared;

/// Where the open check starts, from `config.open_check`; `None` for no check.
pub(crate) fn open_anchor(shared: &Shared) -> Result<Option<Head>, LogError> {
    match shared.config.open_check {
        OpenCheck::FullChain => Ok(Some(Head::EMPTY)),
        OpenCheck::Off => Ok(None),
        OpenCheck::FromLatestSnapshot => {
            let dir = &shared.config.snapshot_dir;
            let seqs = snapshot_file::list(dir).map_err(|e| io_error(shared, dir, "list", &e))?;
            // The newest file that is whole enough to name its seq and hash.
            for seq in seqs.into_iter().rev() {
                if let Ok((seq, hash)) = snapshot_file::peek(&snapshot_file::path_of(dir, seq)) {
                    return Ok(Some(Head { seq, hash }));
                }
            }
            Ok(Some(Head::EMPTY))
        }
    }
}

/// Stores `data` as the state after record `seq`, which must be in the table.
pub(crate) async fn save(shared: &Shared, seq: u64, data: Vec<u8>) -> Result<(), LogError> {
    let hash = hash_at(shared, seq)
        .await?
        .ok_or_else(|| LogError::SnapshotMismatch {
            seq,
            reason: "the log has no record at that seq".into(),
        })?;
    let dir = shared.config.snapshot_dir.clone();
    let written = tokio::task::spawn_blocking(move || {
        let snapshot = Snapshot { seq, hash, data };
        snapshot_file::write(&dir, &snapshot).map_err(|e| (dir.clone(), "write", e))?;
        snapshot_file::remove_temporaries(&dir).map_err(|e| (dir.clone(), "clean", e))?;
        let seqs = snapshot_file::list(&dir).map_err(|e| (dir.clone(), "list", e))?;
        for old in seqs
            .iter()
            .take(seqs.len().saturating_sub(SNAPSHOTS_RETAINED))
        {
            snapshot_file::remove(&dir, *old).map_err(|e| (dir.clone(), "delete old", e))?;
        }
        Ok::<(), (PathBuf, &'static str, std::io::Error)>(())
    })
    .await
    .map_err(|e| shared.storage(format!("the snapshot task failed: {e}")))?;
    written.map_err(|(dir, what, e)| io_error(shared, &dir, what, &e))
}

/// The newest snapshot file, checked against the table.
pub(crate) async fn latest(shared: &Shared) -> Result<Option<Snapshot>, LogError> {
    let Some(seq) = newest(shared)? else {
        return Ok(None);
    };
    let path = snapshot_file::path_of(&shared.config.snapshot_dir, seq);
    let read_path = path.clone();
    let snapshot = tokio::task::spawn_blocking(move || snapshot_file::read(&read_path))
        .await
        .map_err(|e| shared.storage(format!("the snapshot task failed: {e}")))?
        .map_err(|e| unusable(seq, &path, e))?;
    check_anchor(shared, snapshot.seq, snapshot.hash).await?;
    Ok(Some(snapshot))
}

/// The newest snapshot file as a stream, checked against the table.
pub(crate) async fn latest_stream(shared: &Shared) -> Result<Option<SnapshotStream>, LogError> {
    let Some(seq) = newest(shared)? else {
        return Ok(None);
    };
    let path = snapshot_file::path_of(&shared.config.snapshot_dir, seq);
    let read_path = path.clone();
    let stream = tokio::task::spawn_blocking(move || snapshot_file::open_stream(&read_path))
        .await
        .map_err(|e| shared.storage(format!("the snapshot task failed: {e}")))?
        .map_err(|e| unusable(seq, &path, e))?;
    check_anchor(shared, stream.seq, stream.hash).await?;
    Ok(Some(stream))
}

fn newest(shared: &Shared) -> Result<Option<u64>, LogError> {
    let dir = &shared.config.snapshot_dir;
    let seqs = snapshot_file::list(dir).map_err(|e| io_error(shared, dir, "list", &e))?;
    Ok(seqs.last().copied())
}

/// Whether a snapshot taken after `seq` with `hash` belongs to the table's history.
async fn check_anchor(shared: &Shared, seq: u64, hash: Digest32) -> Result<(), LogError> {
    match hash_at(shared, seq).await? {
        Some(found) if found == hash => Ok(()),
        Some(found) => Err(LogError::SnapshotMismatch {
            seq,
            reason: format!("snapshot was taken after record hash {hash}, the log has {found}"),
        }),
        None => Err(LogError::SnapshotMismatch {
            seq,
            reason: "the log has no record at that seq".into(),
        }),
    }
}

/// The hash of the intact record at `seq`, if the table has one.
async fn hash_at(shared: &Shared, seq: u64) -> Result<Option<Digest32>, LogError> {
    if seq == 0 {
        return Ok(None);
    }
    let client = shared.client().await?;
    let rows = shared.rows(&client, seq, 1).await?;
    Ok(rows.into_iter().next().and_then(|(found, decoded)| {
        decoded
            .ok()
            .filter(|r| found == seq && r.seq == seq && r.is_intact())
            .map(|r| r.hash)
    }))
}

fn unusable(seq: u64, path: &Path, e: ReadError) -> LogError {
    LogError::SnapshotMismatch {
        seq,
        reason: format!(
            "snapshot file {} is unusable ({e}); move it out of the directory and restart: \
             start-up then uses the previous snapshot or replays the log",
            path.display()
        ),
    }
}

fn io_error(shared: &Shared, dir: &Path, what: &str, e: &std::io::Error) -> LogError {
    LogError::Storage {
        path: dir.to_path_buf(),
        message: format!(
            "{}: cannot {what} snapshot files in {}: {e}",
            shared.location,
            dir.display()
        ),
    }
}
