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
    /// Encodes the snapshot for storage: format byte, seq, hash, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + 32 + self.data.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.hash.0);
        out.extend_from_slice(&self.data);
        out
    }

    /// Decodes a stored snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let (&format, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        if format != FORMAT_V1 {
            return Err(DecodeError::UnknownFormat(format));
        }
        if rest.len() < 40 {
            return Err(DecodeError::Truncated);
        }
        let (seq, rest) = rest.split_at(8);
        let (hash, data) = rest.split_at(32);
        let mut seq_bytes = [0; 8];
        seq_bytes.copy_from_slice(seq);
        let mut hash_bytes = [0; 32];
        hash_bytes.copy_from_slice(hash);
        Ok(Snapshot {
            seq: u64::from_be_bytes(seq_bytes),
            hash: Digest32(hash_bytes),
            data: data.to_vec(),
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
    }
}
