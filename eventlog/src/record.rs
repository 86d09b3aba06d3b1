//! The record envelope, its stable byte encoding, and the hash chain.
//!
//! Every record carries the hash of the one before it, so the log is a chain: changing,
//! removing or reordering any committed record breaks every hash after it. The layout below is
//! a stored format (docs/adr/0003-record-envelope.md): it is never changed in place; a new
//! layout gets a new format byte and the old one keeps decoding.
//!
//! ```text
//! format  u8        = 1
//! seq     u64 BE    dense, from 1
//! at      i64 BE    recorded_at, nanoseconds since the Unix epoch
//! schema  u32 BE    schema version of the payload
//! kind    u16 BE length, then UTF-8 bytes
//! payload u32 BE length, then bytes
//! prev    [u8; 32]  hash of record seq-1 (zeros for seq 1)
//! hash    [u8; 32]  SHA-256 over the fields above (see `compute_hash`)
//! ```

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::DecodeError;

/// Format byte of the current record layout.
pub const FORMAT_V1: u8 = 1;
/// Longest event kind accepted, in bytes.
pub const MAX_KIND_LEN: usize = 255;
/// Largest payload accepted, in bytes. A single event is a fact about one thing; anything
/// larger is a bug in the caller, not a record.
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024 * 1024;
/// Domain separation tag mixed into every record hash.
const HASH_DOMAIN: &[u8] = b"tessera.eventlog.record.v1";

/// A SHA-256 digest in the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    /// The `prev_hash` of the first record.
    pub const GENESIS: Digest32 = Digest32([0; 32]);

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An event to be appended: the caller's part of a record. The log adds seq, time and hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    /// Event kind, e.g. `EntryCreated`. Used for filtering and audits.
    pub kind: String,
    /// Schema version of `payload`, so old payloads can be upcast.
    pub schema_version: u32,
    /// The encoded event.
    pub payload: Vec<u8>,
}

impl NewRecord {
    /// Checks the limits a record must meet before the log accepts it.
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.kind.is_empty() || self.kind.len() > MAX_KIND_LEN {
            return Err(DecodeError::KindLength(self.kind.len()));
        }
        if self.payload.len() > MAX_PAYLOAD_LEN {
            return Err(DecodeError::PayloadLength(self.payload.len()));
        }
        Ok(())
    }
}

/// A committed record.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log, dense from 1.
    pub seq: u64,
    /// When the log committed it, nanoseconds since the Unix epoch (from the log's `Clock`).
    pub recorded_at: i64,
    /// Event kind.
    pub kind: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// The encoded event.
    pub payload: Vec<u8>,
    /// Hash of the previous record (`Digest32::GENESIS` for seq 1).
    pub prev_hash: Digest32,
    /// Hash of this record, chained over `prev_hash`.
    pub hash: Digest32,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("seq", &self.seq)
            .field("recorded_at", &self.recorded_at)
            .field("kind", &self.kind)
            .field("schema_version", &self.schema_version)
            .field("payload_len", &self.payload.len())
            .field("prev_hash", &self.prev_hash)
            .field("hash", &self.hash)
            .finish()
    }
}

impl Record {
    /// Seals `new` as record `seq` after `prev_hash`.
    pub fn seal(new: NewRecord, seq: u64, recorded_at: i64, prev_hash: Digest32) -> Record {
        let hash = compute_hash(
            &prev_hash,
            seq,
            recorded_at,
            new.schema_version,
            &new.kind,
            &new.payload,
        );
        Record {
            seq,
            recorded_at,
            kind: new.kind,
            schema_version: new.schema_version,
            payload: new.payload,
            prev_hash,
            hash,
        }
    }

    /// The hash this record should have, recomputed from its fields.
    pub fn expected_hash(&self) -> Digest32 {
        compute_hash(
            &self.prev_hash,
            self.seq,
            self.recorded_at,
            self.schema_version,
            &self.kind,
            &self.payload,
        )
    }

    /// Whether the stored hash matches the record's contents.
    pub fn is_intact(&self) -> bool {
        self.expected_hash() == self.hash
    }

    /// Encodes the record in the current stored layout.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(1 + 8 + 8 + 4 + 2 + self.kind.len() + 4 + self.payload.len() + 64);
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.recorded_at.to_be_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        // Lengths were bounded by `NewRecord::check` before sealing.
        out.extend_from_slice(&(self.kind.len() as u16).to_be_bytes());
        out.extend_from_slice(self.kind.as_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&self.prev_hash.0);
        out.extend_from_slice(&self.hash.0);
        out
    }

    /// Decodes a stored record. Checks the layout only; callers check the hash and the chain.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let format = r.u8()?;
        if format != FORMAT_V1 {
            return Err(DecodeError::UnknownFormat(format));
        }
        let seq = u64::from_be_bytes(r.array()?);
        let recorded_at = i64::from_be_bytes(r.array()?);
        let schema_version = u32::from_be_bytes(r.array()?);
        let kind_len = usize::from(u16::from_be_bytes(r.array()?));
        if kind_len == 0 || kind_len > MAX_KIND_LEN {
            return Err(DecodeError::KindLength(kind_len));
        }
        let kind = std::str::from_utf8(r.take(kind_len)?)
            .map_err(|_| DecodeError::KindNotUtf8)?
            .to_owned();
        let payload_len = u32::from_be_bytes(r.array()?) as usize;
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(DecodeError::PayloadLength(payload_len));
        }
        let payload = r.take(payload_len)?.to_vec();
        let prev_hash = Digest32(r.array()?);
        let hash = Digest32(r.array()?);
        if r.pos != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - r.pos));
        }
        Ok(Record {
            seq,
            recorded_at,
            kind,
            schema_version,
            payload,
            prev_hash,
            hash,
        })
    }
}

/// SHA-256 over a domain tag, the previous hash and every field of the record, each
/// length-prefixed or fixed-width so that no two different records hash the same input.
pub fn compute_hash(
    prev_hash: &Digest32,
    seq: u64,
    recorded_at: i64,
    schema_version: u32,
    kind: &str,
    payload: &[u8],
) -> Digest32 {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(prev_hash.0);
    h.update(seq.to_be_bytes());
    h.update(recorded_at.to_be_bytes());
    h.update(schema_version.to_be_bytes());
    h.update((kind.len() as u64).to_be_bytes());
    h.update(kind.as_bytes());
    h.update((payload.len() as u64).to_be_bytes());
    h.update(payload);
    Digest32(h.finalize().into())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64, prev: Digest32) -> Record {
        Record::seal(
            NewRecord {
                kind: "EntryCreated".into(),
                schema_version: 1,
                payload: vec![1, 2, 3, seq as u8],
            },
            seq,
            1_700_000_000_000_000_000,
            prev,
        )
    }

    #[test]
    fn encode_decode_round_trips() {
        let r = sample(7, Digest32([9; 32]));
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert!(r.is_intact());
    }

    #[test]
    fn any_changed_field_changes_the_hash() {
        let r = sample(1, Digest32::GENESIS);
        let mut variants = vec![r.clone(); 6];
        variants[0].seq = 2;
        variants[1].recorded_at += 1;
        variants[2].kind = "EntryDeleted".into();
        variants[3].schema_version = 2;
        variants[4].payload.push(0);
        variants[5].prev_hash = Digest32([1; 32]);
        for v in variants {
            assert!(!v.is_intact(), "{v:?} should not verify");
        }
    }

    #[test]
    fn length_prefixes_keep_kind_and_payload_apart() {
        let a = compute_hash(&Digest32::GENESIS, 1, 0, 1, "ab", b"c");
        let b = compute_hash(&Digest32::GENESIS, 1, 0, 1, "a", b"bc");
        assert_ne!(a, b);
    }

    #[test]
    fn decode_rejects_truncation_and_garbage_without_panicking() {
        let bytes = sample(3, Digest32::GENESIS).encode();
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(Record::decode(&extra), Err(DecodeError::TrailingBytes(1)));
        let mut wrong_format = bytes;
        wrong_format[0] = 9;
        assert_eq!(
            Record::decode(&wrong_format),
            Err(DecodeError::UnknownFormat(9))
        );
    }

    #[test]
    fn new_record_limits_are_checked() {
        let mut r = NewRecord {
            kind: String::new(),
            schema_version: 1,
            payload: vec![],
        };
        assert!(r.check().is_err());
        r.kind = "k".repeat(MAX_KIND_LEN + 1);
        assert!(r.check().is_err());
        r.kind = "k".into();
        r.payload = vec![0; MAX_PAYLOAD_LEN + 1];
        assert!(r.check().is_err());
    }
}
