//! Snapshots: an opaque fold of the log at a seq, so start-up replays only the tail.

use crate::error::DecodeError;
use crate::record::Digest32;

const FORMAT_V1: u8 = 1;

/// The state of some fold of the log after record `seq`, in the folder's own encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last record folded into `data`.
    pub seq: u64,
    /// That record's hash, so a snapshot is never applied to a different history.
    pub hash: Digest32,
    /// The folded state, opaque to the log.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("seq", &self.seq)
            .field("hash", &self.hash)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl Snapshot {
    /// Bytes before the data in [`Snapshot::encode`]: format byte, seq, hash.
    pub const HEADER_LEN: usize = 1 + 8 + 32;

    /// The encoding's header (format byte, seq, hash), for writers that stream the data after
    /// it instead of building one buffer.
    pub fn header(&self) -> [u8; Self::HEADER_LEN] {
        let mut out = [0; Self::HEADER_LEN];
        out[0] = FORMAT_V1;
        out[1..9].copy_from_slice(&self.seq.to_be_bytes());
        out[9..].copy_from_slice(&self.hash.0);
        out
    }

    /// Encodes the snapshot for storage: format byte, seq, hash, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER_LEN + self.data.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.data);
        out
    }

    /// Decodes a stored snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        if bytes.len() < Self::HEADER_LEN {
            return match bytes.first() {
                Some(&format) if format != FORMAT_V1 => Err(DecodeError::UnknownFormat(format)),
                _ => Err(DecodeError::Truncated),
            };
        }
        let (header, data) = bytes.split_at(Self::HEADER_LEN);
        Self::from_header(header, data.to_vec())
    }

    /// The snapshot of a [`Snapshot::header`] and the data read after it (not copied).
    pub fn from_header(header: &[u8], data: Vec<u8>) -> Result<Snapshot, DecodeError> {
        let (&format, rest) = header.split_first().ok_or(DecodeError::Truncated)?;
        if format != FORMAT_V1 {
            return Err(DecodeError::UnknownFormat(format));
        }
        let (Ok(seq), Ok(hash)) = (
            <[u8; 8]>::try_from(rest.get(..8).ok_or(DecodeError::Truncated)?),
            <[u8; 32]>::try_from(rest.get(8..).ok_or(DecodeError::Truncated)?),
        ) else {
            return Err(DecodeError::Truncated);
        };
        Ok(Snapshot {
            seq: u64::from_be_bytes(seq),
            hash: Digest32(hash),
            data,
        })
    }
}

/// A snapshot whose data is read as a stream rather than held in one buffer: a million-entry
/// state is a 150 MB snapshot, and a reader that decodes as it reads needs only a little of it
/// in memory at once. Its source was checked whole (checksum) before it is handed out.
pub struct SnapshotStream {
    /// The last record folded into the data.
    pub seq: u64,
    /// That record's hash.
    pub hash: Digest32,
    /// The data's length in bytes.
    pub len: u64,
    data: Box<dyn std::io::BufRead + Send>,
}

impl std::fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStream")
            .field("seq", &self.seq)
            .field("hash", &self.hash)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl SnapshotStream {
    /// A stream over `len` bytes of checked data from `data`.
    pub fn new(seq: u64, hash: Digest32, len: u64, data: Box<dyn std::io::BufRead + Send>) -> Self {
        Self {
            seq,
            hash,
            len,
            data,
        }
    }

    /// Whether the reader took every byte of the data: a decoder that stops early has read
    /// a different state than was written.
    ///
    /// # Errors
    /// A message saying how many bytes were left, or that reading failed.
    pub fn finish(mut self) -> Result<(), String> {
        let mut left = 0u64;
        loop {
            let n = match self.data.fill_buf() {
                Ok(buf) => buf.len(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("cannot read the snapshot's end: {e}")),
            };
            if n == 0 {
                break;
            }
            left += n as u64;
            self.data.consume(n);
        }
        match left {
            0 => Ok(()),
            n => Err(format!("{n} trailing bytes")),
        }
    }
}

impl std::io::Read for SnapshotStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.data.read(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.data.read_exact(buf)
    }
}

impl std::io::BufRead for SnapshotStream {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.data.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.data.consume(amount);
    }
}

impl From<Snapshot> for SnapshotStream {
    fn from(snapshot: Snapshot) -> Self {
        let len = snapshot.data.len() as u64;
        Self::new(
            snapshot.seq,
            snapshot.hash,
            len,
            Box::new(std::io::Cursor::new(snapshot.data)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_short_input() {
        let s = Snapshot {
            seq: 42,
            hash: Digest32([7; 32]),
            data: b"state".to_vec(),
        };
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
        let bytes = s.encode();
        for cut in 0..41 {
            assert!(Snapshot::decode(&bytes[..cut]).is_err());
        }
        assert_eq!(
            Snapshot::from_header(&s.header(), b"state".to_vec()).unwrap(),
            s
        );
        let mut other = s.header();
        other[0] = 9;
        assert!(matches!(
            Snapshot::from_header(&other, vec![]),
            Err(DecodeError::UnknownFormat(9))
        ));
    }
}
