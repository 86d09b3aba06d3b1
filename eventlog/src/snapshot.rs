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
