//! Snapshot files: one file per snapshot beside the sled database, read in one exact-size
//! read at start-up.
//!
//! sled keeps a large value as a blob that every read copies into memory several times (the
//! file into a buffer, the buffer into sled's value, the value into the snapshot), and a read
//! can leave the blob in sled's page cache; a million-entry registry's snapshot is 150 MB, so
//! start-up paid for half a gigabyte of fresh memory before decoding a byte. A plain file is
//! read once, into the buffer the snapshot keeps.
//!
//! File layout (`<seq, 20 digits>.snap`):
//!
//! ```text
//! magic "TSNP" | crc32 of the rest (BE u32) | length of the rest (BE u64) | rest
//! rest = Snapshot::header() | snapshot data
//! ```
//!
//! A file is written under a temporary name, synced, renamed into place and the directory
//! synced, so a crash leaves either the whole file or none under the final name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::snapshot::{Snapshot, SnapshotStream};

const MAGIC: &[u8; 4] = b"TSNP";
const PREFIX_LEN: usize = 4 + 4 + 8;
const SUFFIX: &str = "snap";

/// The file of the snapshot at `seq` in `dir`.
pub(crate) fn path_of(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SUFFIX}"))
}

/// The seqs of the snapshot files in `dir`, ascending (none if `dir` does not exist).
pub(crate) fn list(dir: &Path) -> std::io::Result<Vec<u64>> {
    let items = match std::fs::read_dir(dir) {
        Ok(items) => items,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut seqs = Vec::new();
    for item in items {
        let name = item?.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.strip_suffix('.'))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok());
        seqs.extend(seq);
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Durably writes `snapshot` into `dir` (created if needed).
pub(crate) fn write(dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let header = snapshot.header();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(&snapshot.data);
    let rest_len = (header.len() + snapshot.data.len()) as u64;
    let target = path_of(dir, snapshot.seq);
    let temporary = target.with_extension("tmp");
    {
        let mut file = File::create(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&crc.finalize().to_be_bytes())?;
        file.write_all(&rest_len.to_be_bytes())?;
        file.write_all(&header)?;
        file.write_all(&snapshot.data)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &target)?;
    File::open(dir)?.sync_all()
}

/// Why a snapshot file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The file is not there.
    #[error("missing")]
    Missing,
    /// Reading failed.
    #[error("cannot read it: {0}")]
    Io(std::io::Error),
    /// The bytes are not a whole, undamaged snapshot file.
    #[error("damaged: {0}")]
    Damaged(String),
}

/// The prefix and header of the file at `path`, checked for shape (not yet the checksum).
fn open_checked(path: &Path) -> Result<(File, u32, usize, Snapshot), ReadError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let file_len = file.metadata().map_err(ReadError::Io)?.len();
    let mut prefix = [0u8; PREFIX_LEN];
    let mut header = [0u8; Snapshot::HEADER_LEN];
    file.read_exact(&mut prefix)
        .and_then(|()| file.read_exact(&mut header))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ReadError::Damaged("shorter than a header".into()),
            _ => ReadError::Io(e),
        })?;
    if &prefix[..4] != MAGIC {
        return Err(ReadError::Damaged("not a snapshot file (bad magic)".into()));
    }
    let mut word = [0u8; 4];
    word.copy_from_slice(&prefix[4..8]);
    let mut long = [0u8; 8];
    long.copy_from_slice(&prefix[8..16]);
    let rest_len = u64::from_be_bytes(long);
    let actual = file_len.saturating_sub(PREFIX_LEN as u64);
    if rest_len != actual {
        return Err(ReadError::Damaged(format!(
            "holds {actual} bytes after its prefix, the prefix says {rest_len}"
        )));
    }
    let data_len = usize::try_from(rest_len - Snapshot::HEADER_LEN as u64)
        .map_err(|_| ReadError::Damaged("larger than this machine can address".into()))?;
    // The header, with the data still to read (an empty placeholder).
    let head = Snapshot::from_header(&header, Vec::new())
        .map_err(|e| ReadError::Damaged(e.to_string()))?;
    Ok((file, u32::from_be_bytes(word), data_len, head))
}

/// The seq and hash a snapshot file says it holds, reading only its first bytes: whether an
/// anchor's file is there and names the same snapshot.
pub(crate) fn peek(path: &Path) -> Result<(u64, crate::record::Digest32), ReadError> {
    open_checked(path).map(|(_, _, _, head)| (head.seq, head.hash))
}

/// Reads the snapshot file at `path`, checking its length and checksum.
pub(crate) fn read(path: &Path) -> Result<Snapshot, ReadError> {
    let (file, expected_crc, data_len, mut snapshot) = open_checked(path)?;
    // One exact-size buffer, filled straight from the file: the snapshot keeps it.
    let mut data = Vec::new();
    data.try_reserve_exact(data_len)
        .map_err(|e| ReadError::Io(std::io::Error::other(e)))?;
    file.take(data_len as u64)
        .read_to_end(&mut data)
        .map_err(ReadError::Io)?;
    if data.len() != data_len {
        return Err(ReadError::Damaged("shorter than its prefix says".into()));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&snapshot.header());
    crc.update(&data);
    if crc.finalize() != expected_crc {
        return Err(ReadError::Damaged("checksum mismatch".into()));
    }
    snapshot.data = data;
    Ok(snapshot)
}

/// Bytes read at a time when checking and streaming a file.
const STREAM_BUFFER: usize = 1 << 20;

/// Opens the snapshot file at `path` for streaming its data: the whole file is checked
/// (length, checksum) first, through one small buffer, so what the stream hands out is what
/// was written and a damaged file fails here, before anything is decoded.
pub(crate) fn open_stream(path: &Path) -> Result<SnapshotStream, ReadError> {
    let (mut file, expected_crc, data_len, head) = open_checked(path)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head.header());
    let mut buffer = vec![0u8; STREAM_BUFFER];
    let mut seen = 0usize;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        crc.update(&buffer[..n]);
        seen += n;
    }
    if seen != data_len {
        return Err(ReadError::Damaged(
            "its length changed while it was read".into(),
        ));
    }
    if crc.finalize() != expected_crc {
        return Err(ReadError::Damaged("checksum mismatch".into()));
    }
    let start = (PREFIX_LEN + Snapshot::HEADER_LEN) as u64;
    file.seek(SeekFrom::Start(start)).map_err(ReadError::Io)?;
    let data = std::io::BufReader::with_capacity(STREAM_BUFFER, file.take(data_len as u64));
    Ok(SnapshotStream::new(
        head.seq,
        head.hash,
        data_len as u64,
        Box::new(data),
    ))
}

/// Deletes temporaries a crash left behind in `dir` (one writer: none is being written).
pub(crate) fn remove_temporaries(dir: &Path) -> std::io::Result<()> {
    let items = match std::fs::read_dir(dir) {
        Ok(items) => items,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for item in items {
        let path = item?.path();
        if path.extension().is_some_and(|x| x == "tmp") {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Deletes the snapshot file at `seq` in `dir`, if present.
pub(crate) fn remove(dir: &Path, seq: u64) -> std::io::Result<()> {
    match std::fs::remove_file(path_of(dir, seq)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Digest32;

    fn snapshot(seq: u64, data: &[u8]) -> Snapshot {
        Snapshot {
            seq,
            hash: Digest32([seq as u8; 32]),
            data: data.to_vec(),
        }
    }

    #[test]
    fn written_files_read_back_and_list_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [30, 4, 1_000] {
            write(
                dir.path(),
                &snapshot(seq, format!("state {seq}").as_bytes()),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a snapshot").unwrap();
        std::fs::write(dir.path().join("00000000000000000050.tmp"), "torn").unwrap();
        remove_temporaries(dir.path()).unwrap();
        assert!(!dir.path().join("00000000000000000050.tmp").exists());
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(list(dir.path()).unwrap(), [4, 30, 1_000]);
        assert_eq!(
            read(&path_of(dir.path(), 30)).unwrap(),
            snapshot(30, b"state 30")
        );
        remove(dir.path(), 30).unwrap();
        remove(dir.path(), 30).unwrap();
        assert_eq!(list(dir.path()).unwrap(), [4, 1_000]);
        assert!(matches!(
            read(&path_of(dir.path(), 30)),
            Err(ReadError::Missing)
        ));
        assert!(list(&dir.path().join("absent")).unwrap().is_empty());
        assert_eq!(
            peek(&path_of(dir.path(), 4)).unwrap(),
            (4, Digest32([4; 32]))
        );
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snapshot(7, b"some folded state")).unwrap();
        let path = path_of(dir.path(), 7);
        let good = std::fs::read(&path).unwrap();
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(
                matches!(read(&path), Err(ReadError::Damaged(_))),
                "cut at {cut}"
            );
            assert!(
                matches!(open_stream(&path), Err(ReadError::Damaged(_))),
                "stream, cut at {cut}"
            );
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(&path).is_err(), "flipped byte {at}");
            assert!(open_stream(&path).is_err(), "stream, flipped byte {at}");
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(read(&path).unwrap(), snapshot(7, b"some folded state"));
    }

    #[test]
    fn streams_hand_out_the_data_and_count_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than the stream's buffer, so the checksum pass and the reads go round.
        let data: Vec<u8> = (0..STREAM_BUFFER * 2 + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        write(dir.path(), &snapshot(9, &data)).unwrap();
        let path = path_of(dir.path(), 9);

        let mut stream = open_stream(&path).unwrap();
        assert_eq!(
            (stream.seq, stream.hash, stream.len),
            (9, Digest32([9; 32]), data.len() as u64)
        );
        let mut read_back = Vec::new();
        stream.read_to_end(&mut read_back).unwrap();
        assert_eq!(read_back, data);
        stream.finish().unwrap();

        // A reader that stops early is told how much it left.
        let mut stream = open_stream(&path).unwrap();
        let mut first = [0u8; 10];
        stream.read_exact(&mut first).unwrap();
        assert_eq!(first[..], data[..10]);
        let left = stream.finish().unwrap_err();
        assert!(
            left.contains(&format!("{} trailing bytes", data.len() - 10)),
            "{left}"
        );

        // Snapshots held in memory stream the same way.
        let mut stream = SnapshotStream::from(snapshot(9, b"abc"));
        let mut all = String::new();
        stream.read_to_string(&mut all).unwrap();
        assert_eq!(all, "abc");
        stream.finish().unwrap();
    }
}
