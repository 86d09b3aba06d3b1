//! The embedded default backend: sled 0.34 (docs/adr/0002-sled-embedded-default.md).
//!
//! Layout under the log directory:
//!
//! ```text
//! <dir>/sled/        the sled database: tree `records` (key: seq as u64 BE, value: the
//!                    encoded record) and tree `snapshot_anchors` (key: seq BE, value: the
//!                    record hash the snapshot was taken at), read at open without loading
//!                    snapshot data; tree `snapshots` holds snapshots written before they
//!                    moved to files (read if no file is there, emptied by the next snapshot)
//! <dir>/snapshots/   one file per snapshot (see `snapshot_file`), written before its anchor
//! <dir>/ack-head     the last acknowledged head (seq, hash), rewritten after every commit
//! ```
//!
//! sled's own recovery stops at the first damaged log entry and serves what came before; the
//! `ack-head` marker lets the log notice when that dropped records it had acknowledged. It is
//! written after the flush, without its own fsync: it survives a killed process (page cache),
//! and after a power loss it can only lag, which weakens detection but never raises a false
//! alarm.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::error::{DecodeError, LogError};
use crate::record::{Digest32, Record};
use crate::snapshot::{Snapshot, SnapshotStream};
use crate::store::snapshot_file::{self, ReadError};
use crate::store::{Store, StoredRecord, SNAPSHOTS_RETAINED};

const MARKER_MAGIC: &[u8; 4] = b"TSAH";
const MARKER_LEN: usize = 4 + 8 + 32 + 8;

/// Records and snapshots in a sled database under one directory.
#[derive(Debug)]
pub struct SledStore {
    dir: PathBuf,
    snapshot_dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    snapshots: sled::Tree,
    snapshot_anchors: sled::Tree,
    marker: Mutex<File>,
}

/// sled's page cache. Its default (1 GiB) kept most of a large log resident after start-up;
/// 64 MiB made the second start-up pass over the log (chain check, then replay) read from
/// disk again (1 M-event replay 1.7 s -> 4.5 s). 256 MiB keeps that pass cached for a million
/// events while bounding what the log costs in memory.
const CACHE_BYTES: u64 = 256 * 1024 * 1024;

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let fail = |what: &str, e: &dyn std::fmt::Display| LogError::Storage {
            path: dir.clone(),
            message: format!("{what}: {e}"),
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail("cannot create the log directory", &e))?;
        let config = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput);
        // sled's threads release the directory lock a moment after the last handle is
        // dropped, so a reopen in the same process (a restart in tests, a tool) can find it
        // still held: retry that case for up to ten seconds; anything else fails at once.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports the held lock as an I/O error whose message says so.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && attempts < 200 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(fail(
                        "sled cannot open the database (is another process using it?)",
                        &e,
                    ))
                }
            }
        };
        let records = db
            .open_tree("records")
            .map_err(|e| fail("cannot open tree `records`", &e))?;
        let snapshots = db
            .open_tree("snapshots")
            .map_err(|e| fail("cannot open tree `snapshots`", &e))?;
        let snapshot_anchors = db
            .open_tree("snapshot_anchors")
            .map_err(|e| fail("cannot open tree `snapshot_anchors`", &e))?;
        let marker = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("ack-head"))
            .map_err(|e| fail("cannot open the ack-head marker", &e))?;
        Ok(Self {
            snapshot_dir: dir.join("snapshots"),
            dir,
            db,
            records,
            snapshots,
            snapshot_anchors,
            marker: Mutex::new(marker),
        })
    }

    /// The raw sled tree of records: for tests that simulate damage a sled checksum cannot see.
    pub fn raw_records(&self) -> &sled::Tree {
        &self.records
    }

    /// The `snapshots` tree where snapshots were stored before files: for tests of reading
    /// a store written by an older build.
    pub fn raw_legacy_snapshots(&self) -> &sled::Tree {
        &self.snapshots
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> LogError {
        LogError::Storage {
            path: self.dir.clone(),
            message: format!("{what}: {e}"),
        }
    }

    fn write_marker(&self, seq: u64, hash: &Digest32) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(MARKER_LEN);
        buf.extend_from_slice(MARKER_MAGIC);
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.extend_from_slice(&hash.0);
        buf.extend_from_slice(&marker_check(seq, hash));
        let file = self.marker.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all_at(&buf, 0)
            .map_err(|e| self.err("cannot write the ack-head marker", e))
    }
}

fn marker_check(seq: u64, hash: &Digest32) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(MARKER_MAGIC);
    h.update(seq.to_be_bytes());
    h.update(hash.0);
    let d = h.finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// Where a snapshot's data is.
enum Place {
    /// A snapshot file.
    File(PathBuf),
    /// The `snapshots` tree, as snapshots were stored before files (the value as stored).
    Database(sled::IVec),
}

impl SledStore {
    /// The newest snapshot whose data is there: anchors newest first, each with its file (its
    /// header naming the same seq and hash) or, from before files, its value in the
    /// `snapshots` tree. A store from before anchors: the tree's last value.
    fn latest_stored(&self) -> Result<Option<(u64, Digest32, Place)>, LogError> {
        let mut anchored = false;
        for item in self.snapshot_anchors.iter().rev() {
            anchored = true;
            let (key, value) = item.map_err(|e| self.err("cannot read snapshot anchors", e))?;
            let (Some(seq), Ok(hash)) = (decode_key(&key), <[u8; 32]>::try_from(&value[..])) else {
                return Err(LogError::SnapshotMismatch {
                    seq: decode_key(&key).unwrap_or(0),
                    reason: "stored snapshot anchor is malformed".into(),
                });
            };
            let hash = Digest32(hash);
            let path = snapshot_file::path_of(&self.snapshot_dir, seq);
            match snapshot_file::peek(&path) {
                Ok(found) if found == (seq, hash) => {
                    return Ok(Some((seq, hash, Place::File(path))))
                }
                Ok(_) | Err(ReadError::Damaged(_)) => {
                    tracing::warn!(path = %path.display(), seq, "snapshot file does not match its anchor; trying an older snapshot");
                }
                Err(ReadError::Io(e)) => {
                    return Err(self.err(&format!("cannot read {}", path.display()), e))
                }
                Err(ReadError::Missing) => {}
            }
            let legacy = self
                .snapshots
                .get(key)
                .map_err(|e| self.err("cannot read snapshots", e))?;
            if let Some(value) = legacy {
                return Ok(Some((seq, hash, Place::Database(value))));
            }
        }
        if anchored {
            return Ok(None);
        }
        let legacy = self
            .snapshots
            .last()
            .map_err(|e| self.err("cannot read snapshots", e))?;
        let Some((key, value)) = legacy else {
            return Ok(None);
        };
        let seq = decode_key(&key).unwrap_or(0);
        // The header alone (the data is decoded once, by `latest_snapshot`).
        let head = value
            .get(..Snapshot::HEADER_LEN)
            .ok_or(crate::error::DecodeError::Truncated)
            .and_then(|header| Snapshot::from_header(header, Vec::new()))
            .map_err(|e| LogError::SnapshotMismatch {
                seq,
                reason: format!("stored snapshot is undecodable: {e}"),
            })?;
        Ok(Some((head.seq, head.hash, Place::Database(value))))
    }
}

/// A snapshot file that fails its checks: start-up stops and says how to go on.
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

fn decode_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl Store for SledStore {
    fn location(&self) -> &Path {
        &self.dir
    }

    fn write(&self, records: &[Record]) -> Result<(), LogError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for r in records {
            batch.insert(&r.seq.to_be_bytes(), r.encode());
        }
        self.records
            .apply_batch(batch)
            .map_err(|e| self.err("sled write failed", e))?;
        self.db
            .flush()
            .map_err(|e| self.err("sled flush (fsync) failed", e))?;
        self.write_marker(last.seq, &last.hash)
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::with_capacity(limit.min(16_384));
        for item in self.records.range(from.to_be_bytes()..).take(limit) {
            let (key, value) = item.map_err(|e| self.err("sled read failed", e))?;
            let seq = decode_key(&key).unwrap_or(0);
            let record = Record::decode(&value).map_err(|fault| LogError::Corrupt {
                path: self.dir.clone(),
                seq,
                fault: crate::error::ChainFault::Undecodable(fault),
            })?;
            out.push(record);
        }
        Ok(out)
    }

    fn scan(&self, from: u64, visit: &mut dyn FnMut(StoredRecord) -> bool) -> Result<(), LogError> {
        for item in self.records.range(from.to_be_bytes()..) {
            let (key, value) = item.map_err(|e| self.err("sled read failed", e))?;
            let stored = match decode_key(&key) {
                Some(seq) => (seq, Record::decode(&value)),
                None => (0, Err(DecodeError::Truncated)),
            };
            if !visit(stored) {
                break;
            }
        }
        Ok(())
    }

    fn acknowledged_head(&self) -> Result<Option<(u64, Digest32)>, LogError> {
        let mut buf = [0u8; MARKER_LEN];
        let file = self.marker.lock().unwrap_or_else(PoisonError::into_inner);
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| self.err("cannot read the ack-head marker", e))?;
        if n < MARKER_LEN || &buf[..4] != MARKER_MAGIC {
            // Absent (new log) or torn by a power loss: no claim either way.
            return Ok(None);
        }
        let mut seq = [0; 8];
        seq.copy_from_slice(&buf[4..12]);
        let mut hash = [0; 32];
        hash.copy_from_slice(&buf[12..44]);
        let (seq, hash) = (u64::from_be_bytes(seq), Digest32(hash));
        if buf[44..52] != marker_check(seq, &hash) {
            return Ok(None);
        }
        Ok(Some((seq, hash)))
    }

    fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), LogError> {
        snapshot_file::write(&self.snapshot_dir, snapshot).map_err(|e| {
            self.err(
                &format!(
                    "cannot write snapshot file {}",
                    snapshot_file::path_of(&self.snapshot_dir, snapshot.seq).display()
                ),
                e,
            )
        })?;
        // The anchor goes in after the file is durable: an anchor never names a snapshot that
        // is not stored (a crash in between leaves the previous anchor, an older valid start).
        self.snapshot_anchors
            .insert(snapshot.seq.to_be_bytes(), &snapshot.hash.0[..])
            .map_err(|e| self.err("cannot store the snapshot anchor", e))?;
        let anchors: Vec<sled::IVec> = self
            .snapshot_anchors
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.err("cannot list snapshot anchors", e))?;
        for key in anchors
            .iter()
            .take(anchors.len().saturating_sub(SNAPSHOTS_RETAINED))
        {
            self.snapshot_anchors
                .remove(key)
                .map_err(|e| self.err("cannot delete an old snapshot anchor", e))?;
        }
        // Snapshots from before files: superseded by this one.
        self.snapshots
            .clear()
            .map_err(|e| self.err("cannot delete old in-database snapshots", e))?;
        self.db
            .flush()
            .map_err(|e| self.err("sled flush (fsync) failed", e))?;
        // Files go after their anchors (an anchor without its file is skipped at open), with
        // any temporary a crash left mid-write.
        snapshot_file::remove_temporaries(&self.snapshot_dir)
            .map_err(|e| self.err("cannot delete a leftover snapshot temporary", e))?;
        let files = snapshot_file::list(&self.snapshot_dir)
            .map_err(|e| self.err("cannot list snapshot files", e))?;
        for seq in files
            .iter()
            .take(files.len().saturating_sub(SNAPSHOTS_RETAINED))
        {
            snapshot_file::remove(&self.snapshot_dir, *seq)
                .map_err(|e| self.err("cannot delete an old snapshot file", e))?;
        }
        Ok(())
    }

    fn last_record(&self) -> Result<Option<Record>, LogError> {
        let last = self
            .records
            .last()
            .map_err(|e| self.err("sled read failed", e))?;
        match last {
            None => Ok(None),
            Some((key, value)) => {
                let seq = decode_key(&key).unwrap_or(0);
                Record::decode(&value)
                    .map(Some)
                    .map_err(|fault| LogError::Corrupt {
                        path: self.dir.clone(),
                        seq,
                        fault: crate::error::ChainFault::Undecodable(fault),
                    })
            }
        }
    }

    fn latest_snapshot_stream(&self) -> Result<Option<SnapshotStream>, LogError> {
        let Some((seq, hash, place)) = self.latest_stored()? else {
            return Ok(None);
        };
        match place {
            Place::File(path) => {
                let stream =
                    snapshot_file::open_stream(&path).map_err(|e| unusable(seq, &path, e))?;
                if (stream.seq, stream.hash) != (seq, hash) {
                    return Err(LogError::SnapshotMismatch {
                        seq,
                        reason: format!(
                            "the stored snapshot is of seq {}, not the one its anchor names",
                            stream.seq
                        ),
                    });
                }
                Ok(Some(stream))
            }
            Place::Database(_) => Ok(self.latest_snapshot()?.map(SnapshotStream::from)),
        }
    }

    fn latest_snapshot_anchor(&self) -> Result<Option<(u64, Digest32)>, LogError> {
        Ok(self.latest_stored()?.map(|(seq, hash, _)| (seq, hash)))
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>, LogError> {
        let Some((seq, hash, place)) = self.latest_stored()? else {
            return Ok(None);
        };
        let snapshot = match place {
            Place::File(path) => snapshot_file::read(&path).map_err(|e| unusable(seq, &path, e))?,
            Place::Database(value) => {
                Snapshot::decode(&value).map_err(|e| LogError::SnapshotMismatch {
                    seq,
                    reason: format!("stored snapshot is undecodable: {e}"),
                })?
            }
        };
        if (snapshot.seq, snapshot.hash) != (seq, hash) {
            return Err(LogError::SnapshotMismatch {
                seq,
                reason: format!(
                    "the stored snapshot is of seq {}, not the one its anchor names",
                    snapshot.seq
                ),
            });
        }
        Ok(Some(snapshot))
    }
}
