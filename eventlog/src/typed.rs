//! Typed events over the byte log: serde + bincode 2 payloads inside the versioned envelope.
//!
//! Each aggregate has one event enum implementing [`Event`]. Stored variants are never changed
//! or reordered (bincode writes the variant index); new facts get new variants, and a payload
//! written under an older schema version is turned into today's type in one place,
//! [`Event::upcast`].

use std::sync::Arc;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::LogError;
use crate::log::{AppendCondition, AppendReceipt, EventLog};
use crate::record::{NewRecord, Record};

/// The bincode configuration of every payload. Part of the stored format: never change it.
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Most bytes bincode may claim while decoding, per byte of input. bincode claims the
/// in-memory size of each value before it reads it (8 for a `u64`, the length of a string)
/// and allocates strings and byte strings whole on the strength of that claim; every claim
/// is backed by at least one byte read, and no value claims more than 16 (`u128`). So a
/// valid input of `n` bytes claims at most `16 n`, and a corrupt length (a 12-byte payload
/// saying its string is 4 GB long: found by `eventlog/fuzz`) is refused as over the limit
/// instead of aborting the process on a failed allocation. `with_limit` only bounds decoding:
/// the stored format is unchanged.
const CLAIM_PER_INPUT_BYTE: usize = 16;

/// Decodes `T` from `read` (`len` bytes of input) under the smallest limit of a few fixed
/// tiers (limits are type parameters in bincode, and each tier is one more copy of `T`'s
/// decoder) that is at least [`CLAIM_PER_INPUT_BYTE`] times `len`. Beyond the last tier
/// (inputs over 256 MiB: only the largest snapshots) no limit is set.
fn decode_bounded<T: DeserializeOwned>(
    len: usize,
    read: impl DecodeWith<T>,
) -> Result<T, bincode::error::DecodeError> {
    const SMALL: usize = 1 << 20;
    const LARGE: usize = 1 << 28;
    const HUGE: usize = u32::MAX as usize;
    let claim = len.saturating_mul(CLAIM_PER_INPUT_BYTE);
    if claim <= SMALL {
        read.decode(config().with_limit::<SMALL>())
    } else if claim <= LARGE {
        read.decode(config().with_limit::<LARGE>())
    } else if claim <= HUGE {
        read.decode(config().with_limit::<HUGE>())
    } else {
        read.decode(config())
    }
}

/// bincode's message, with the limit of [`decode_bounded`] explained.
fn describe(e: bincode::error::DecodeError) -> String {
    match e {
        bincode::error::DecodeError::LimitExceeded => {
            "a length in the data is larger than the data itself could hold (damaged or not \
             written by this build; the decode limit is 16 bytes of values per byte of input)"
                .to_owned()
        }
        other => other.to_string(),
    }
}

/// A source bincode decodes from with any configuration: a slice, or a reader.
trait DecodeWith<T> {
    fn decode<C: bincode::config::Config>(
        self,
        config: C,
    ) -> Result<T, bincode::error::DecodeError>;
}

/// A slice, with the number of bytes used written to `.1`.
struct FromSlice<'a>(&'a [u8], &'a mut usize);

impl<T: DeserializeOwned> DecodeWith<T> for FromSlice<'_> {
    fn decode<C: bincode::config::Config>(
        self,
        config: C,
    ) -> Result<T, bincode::error::DecodeError> {
        let (value, used) = bincode::serde::decode_from_slice(self.0, config)?;
        *self.1 = used;
        Ok(value)
    }
}

struct FromRead<'a, R>(&'a mut R);

impl<T: DeserializeOwned, R: std::io::Read> DecodeWith<T> for FromRead<'_, R> {
    fn decode<C: bincode::config::Config>(
        self,
        config: C,
    ) -> Result<T, bincode::error::DecodeError> {
        bincode::serde::decode_from_std_read(self.0, config)
    }
}

/// An event type stored in the log.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Schema version written with new events.
    const SCHEMA_VERSION: u32;

    /// The variant's name, recorded as the record's kind (`EntryCreated`, ...).
    fn kind(&self) -> &'static str;

    /// Decodes a payload written under an older schema version. The default knows none.
    fn upcast(kind: &str, schema_version: u32, payload: &[u8]) -> Result<Self, CodecError> {
        let _ = payload;
        Err(CodecError::UnsupportedVersion {
            kind: kind.to_owned(),
            found: schema_version,
            current: Self::SCHEMA_VERSION,
        })
    }
}

/// Encoding or decoding an event failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// serde/bincode could not encode the event (a bug in the event type).
    #[error("cannot encode event {kind}: {message}")]
    Encode {
        /// The event's kind.
        kind: String,
        /// bincode's message.
        message: String,
    },
    /// A stored payload does not decode as the event type.
    #[error("record seq {seq} ({kind}, schema v{schema_version}) does not decode: {message}")]
    Decode {
        /// The record's seq.
        seq: u64,
        /// The record's kind.
        kind: String,
        /// The record's schema version.
        schema_version: u32,
        /// bincode's message.
        message: String,
    },
    /// The payload's schema version is newer than this build, or older than any upcaster.
    #[error(
        "event {kind} has schema v{found}; this build reads v{current} and has no upcaster for it"
    )]
    UnsupportedVersion {
        /// The record's kind.
        kind: String,
        /// The stored version.
        found: u32,
        /// The version this build writes.
        current: u32,
    },
}

/// Encodes `event` into a record for the log.
pub fn encode<E: Event>(event: &E) -> Result<NewRecord, CodecError> {
    let payload =
        bincode::serde::encode_to_vec(event, config()).map_err(|e| CodecError::Encode {
            kind: event.kind().to_owned(),
            message: e.to_string(),
        })?;
    Ok(NewRecord {
        kind: event.kind().to_owned(),
        schema_version: E::SCHEMA_VERSION,
        payload,
    })
}

/// Decodes the event in `record`, upcasting older schema versions.
pub fn decode<E: Event>(record: &Record) -> Result<E, CodecError> {
    if record.schema_version != E::SCHEMA_VERSION {
        return E::upcast(&record.kind, record.schema_version, &record.payload);
    }
    decode_payload(
        record.seq,
        &record.kind,
        record.schema_version,
        &record.payload,
    )
}

/// Decodes a payload of the current schema version exactly: trailing bytes are an error.
pub fn decode_payload<T: DeserializeOwned>(
    seq: u64,
    kind: &str,
    schema_version: u32,
    payload: &[u8],
) -> Result<T, CodecError> {
    let fail = |message: String| CodecError::Decode {
        seq,
        kind: kind.to_owned(),
        schema_version,
        message,
    };
    let mut used = 0;
    let value = decode_bounded(payload.len(), FromSlice(payload, &mut used))
        .map_err(|e| fail(describe(e)))?;
    if used != payload.len() {
        return Err(fail(format!("{} trailing bytes", payload.len() - used)));
    }
    Ok(value)
}

/// Encodes folded state for a snapshot with the same codec as events.
pub fn encode_state<S: Serialize>(state: &S) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(state, config()).map_err(|e| CodecError::Encode {
        kind: "snapshot".into(),
        message: e.to_string(),
    })
}

/// Encodes folded state like [`encode_state`], straight into `out`: no buffer of the
/// state's size (an agent's cache of 100,000 entries is ~20 MB, written every second while
/// it changes). Returns the bytes written.
///
/// # Errors
/// [`CodecError::Encode`] when the state does not encode or `out` fails.
pub fn encode_state_into<S: Serialize, W: std::io::Write>(
    state: &S,
    out: &mut W,
) -> Result<usize, CodecError> {
    bincode::serde::encode_into_std_write(state, out, config()).map_err(|e| CodecError::Encode {
        kind: "snapshot".into(),
        message: e.to_string(),
    })
}

/// Decodes folded state from a snapshot taken at `seq`.
pub fn decode_state<S: DeserializeOwned>(seq: u64, data: &[u8]) -> Result<S, CodecError> {
    decode_payload(seq, "snapshot", 0, data)
}

/// Decodes folded state from a snapshot stream as it is read (no buffer of the snapshot's
/// size), checking that the decoder took every byte.
///
/// # Errors
/// [`CodecError::Decode`] when the data does not decode as `S` or has bytes left over.
pub fn decode_state_stream<S: DeserializeOwned>(
    mut stream: crate::snapshot::SnapshotStream,
) -> Result<S, CodecError> {
    let seq = stream.seq;
    let fail = |message: String| CodecError::Decode {
        seq,
        kind: "snapshot".into(),
        schema_version: 0,
        message,
    };
    let len = usize::try_from(stream.len).unwrap_or(usize::MAX);
    let value = decode_bounded(len, FromRead(&mut stream)).map_err(|e| fail(describe(e)))?;
    stream.finish().map_err(fail)?;
    Ok(value)
}

/// Appending or replaying typed events failed.
#[derive(Debug, thiserror::Error)]
pub enum TypedError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An event did not encode or decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// A log of `E` events over any [`EventLog`].
#[derive(Debug)]
pub struct TypedLog<E> {
    log: Arc<dyn EventLog>,
    _events: std::marker::PhantomData<fn() -> E>,
}

impl<E> Clone for TypedLog<E> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            _events: std::marker::PhantomData,
        }
    }
}

impl<E: Event> TypedLog<E> {
    /// Typed access to `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            _events: std::marker::PhantomData,
        }
    }

    /// The untyped log.
    pub fn raw(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Appends `events` as one batch; returns once durable.
    pub async fn append(
        &self,
        events: &[E],
        condition: AppendCondition,
    ) -> Result<AppendReceipt, TypedError> {
        let batch = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        Ok(self.log.append(batch, condition).await?)
    }

    /// Folds every committed event after `after_seq` into `apply`, in order, and returns the
    /// seq of the last one folded (`after_seq` if none). With a snapshot taken at seq N, pass
    /// N: replay = snapshot + tail.
    pub async fn replay(
        &self,
        after_seq: u64,
        mut apply: impl FnMut(u64, E),
    ) -> Result<u64, TypedError> {
        const CHUNK: usize = 8_192;
        // The next chunk is read and decoded on another task while this one is folded, so on
        // a multi-threaded runtime storage, decoding and folding overlap.
        let read_ahead = |from: u64| {
            let log = self.log.clone();
            tokio::spawn(async move {
                let records = log.read(from, CHUNK).await?;
                // Sized up front: a collect through `Result` starts small and doubles, and
                // each doubling of a multi-megabyte buffer is fresh memory to fault in.
                let mut events = Vec::with_capacity(records.len());
                for r in &records {
                    events.push((r.seq, decode::<E>(r)?));
                }
                Ok::<_, TypedError>(events)
            })
        };
        let mut next = read_ahead(after_seq + 1);
        let mut last = after_seq;
        loop {
            let events = next.await.map_err(|e| {
                TypedError::Log(LogError::Closed {
                    reason: Some(format!("replay read task failed: {e}")),
                })
            })??;
            let Some(&(tail, _)) = events.last() else {
                return Ok(last);
            };
            next = read_ahead(tail + 1);
            for (seq, event) in events {
                apply(seq, event);
                last = seq;
            }
        }
    }

    /// Committed events from `from_seq` on, then live ones, each with its record's seq.
    pub fn subscribe(
        &self,
        from_seq: u64,
    ) -> futures::stream::BoxStream<'static, Result<(u64, E), TypedError>> {
        self.log
            .subscribe(from_seq)
            .map(|item| {
                let record = item?;
                Ok((record.seq, decode(&record)?))
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Digest32;
    use crate::snapshot::{Snapshot, SnapshotStream};

    /// Found by `eventlog/fuzz` (target `record`): a payload whose string claims a length no
    /// input backs made bincode allocate it whole (4 GB here; a `u64` length panicked with
    /// "capacity overflow" or aborted). Now a typed decode error, from a slice and a stream.
    #[test]
    fn a_corrupt_length_is_a_decode_error_not_an_allocation() {
        let fuzz_found = [0x00, 0x01, 0x00, 0x02, 0x00, 0xfc, 0x01, 0xff, 0xff, 0xed];
        let huge = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        for bytes in [&fuzz_found[5..], &huge[..]] {
            let err = decode_payload::<String>(3, "Fuzz", 1, bytes).unwrap_err();
            assert!(matches!(&err, CodecError::Decode { seq: 3, .. }), "{err}");
            let err = decode_state::<String>(4, bytes).unwrap_err();
            assert!(err.to_string().contains("larger than the data"), "{err}");
            let stream = SnapshotStream::from(Snapshot {
                seq: 5,
                hash: Digest32::GENESIS,
                data: bytes.to_vec(),
            });
            let err = decode_state_stream::<String>(stream).unwrap_err();
            assert!(err.to_string().contains("larger than the data"), "{err}");
        }
        assert!(decode_payload::<(u8, String)>(1, "Fuzz", 1, &fuzz_found[4..]).is_err());
    }

    /// The limit is a bound valid inputs never reach, even at the worst ratio of claimed to
    /// encoded bytes (a `u128` in one byte), on each side of the first tier.
    #[test]
    fn valid_inputs_decode_under_the_limit_whatever_their_shape() {
        for n in [10, 65_535, 65_536, 70_000] {
            let values = vec![0u128; n];
            let bytes = encode_state(&values).unwrap();
            assert_eq!(decode_state::<Vec<u128>>(1, &bytes).unwrap(), values);
            let stream = SnapshotStream::from(Snapshot {
                seq: 1,
                hash: Digest32::GENESIS,
                data: bytes,
            });
            assert_eq!(decode_state_stream::<Vec<u128>>(stream).unwrap(), values);
        }
        let text = vec!["x".repeat(300); 5_000];
        let bytes = encode_state(&text).unwrap();
        assert_eq!(decode_state::<Vec<String>>(1, &bytes).unwrap(), text);
    }
}
