//! Reading checkpoints back out of the log: the latest one ([`find_latest`], read backwards
//! from a seq in chunks, so it costs the records since that checkpoint), and an audit of every
//! one in a range ([`audit`], forward, one read per checkpoint for the record it covers).

use std::collections::HashMap;

use tessera_eventlog::{typed, EventLog, LogError, Record};
use tessera_identity::TrustDomain;

use super::CheckpointRecord;
use crate::server::events::ServerEvent;

/// Records read from the log at a time.
const CHUNK: u64 = 1_024;

/// The `kind` of checkpoint records.
pub const KIND: &str = "CheckpointSigned";

/// Why the log could not be scanned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A checkpoint record does not decode.
    #[error("{0}")]
    Undecodable(#[from] typed::CodecError),
}

/// A checkpoint as found in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The seq of the record that holds it (after the seq it covers).
    pub record_seq: u64,
    /// When that record committed, nanoseconds since the Unix epoch.
    pub recorded_at: i64,
    /// The checkpoint.
    pub checkpoint: CheckpointRecord,
}

/// The outcome of [`audit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Checkpoints that passed.
    pub checked: u64,
    /// The first that failed: the seq of the record that holds it, and why.
    pub first_bad: Option<(u64, String)>,
}

/// The checkpoint in `record`, if it is one.
///
/// # Errors
/// [`ScanError::Undecodable`] if it is a checkpoint record that does not decode.
pub fn checkpoint_in(record: &Record) -> Result<Option<CheckpointRecord>, ScanError> {
    if record.kind != KIND {
        return Ok(None);
    }
    match typed::decode::<ServerEvent>(record)? {
        ServerEvent::CheckpointSigned(c) => Ok(Some(c)),
        _ => Ok(None),
    }
}

/// The latest checkpoint at or before seq `upto`, looking back at most `window` records
/// (`None`: to seq 1).
///
/// # Errors
/// A [`ScanError`] if the log cannot be read or the checkpoint does not decode.
pub async fn find_latest(
    log: &dyn EventLog,
    upto: u64,
    window: Option<u64>,
) -> Result<Option<Found>, ScanError> {
    let lowest = match window {
        Some(w) => upto.saturating_sub(w.saturating_sub(1)).max(1),
        None => 1,
    };
    let mut end = upto;
    while end >= lowest && end > 0 {
        let start = end.saturating_sub(CHUNK - 1).max(lowest);
        let want = usize::try_from(end - start + 1).unwrap_or(usize::MAX);
        let records = log.read(start, want).await?;
        for r in records.iter().rev().filter(|r| r.seq <= end) {
            if let Some(checkpoint) = checkpoint_in(r)? {
                return Ok(Some(Found {
                    record_seq: r.seq,
                    recorded_at: r.recorded_at,
                    checkpoint,
                }));
            }
        }
        end = start - 1;
    }
    Ok(None)
}

/// Checks every checkpoint in records `from..=to`: its signature (for `trust_domain`); that it
/// covers an earlier record whose stored hash is the one it signed; and that its public key
/// is the one the log recorded for its `kid` when the key was prepared, and that the key was
/// not retired, tainted or revoked before it (keys are followed from seq 1, whatever the
/// range). Stops at the first that fails. Without an anchor kept outside the server, this
/// proves the checkpoints were signed by keys the log itself introduced: someone who can
/// rewrite the log and has a key of their own can forge both; `events verify --anchor`
/// closes that.
///
/// # Errors
/// [`ScanError::Log`] if the log cannot be read (a checkpoint that does not decode is a
/// failed checkpoint, not an error).
pub async fn audit(
    log: &dyn EventLog,
    trust_domain: &TrustDomain,
    from: u64,
    to: u64,
) -> Result<Audit, ScanError> {
    // Keys are learnt from seq 1 whatever the range, so a narrower range never turns the key
    // check off; a key stops being trusted once retired, tainted or revoked.
    let mut keys = Keys::default();
    let mut audit = Audit::default();
    let mut next = 1;
    while next <= to {
        let want = usize::try_from((to - next + 1).min(CHUNK)).unwrap_or(1);
        let records = log.read(next, want).await?;
        let Some(last) = records.last() else {
            break;
        };
        next = last.seq + 1;
        for r in records.iter().filter(|r| r.seq <= to) {
            match r.kind.as_str() {
                KIND if r.seq >= from => {
                    let fault = match checkpoint_in(r) {
                        Ok(Some(c)) => check_one(log, trust_domain, &keys, r.seq, &c).await?,
                        Ok(None) => None,
                        Err(e) => Some(format!("the checkpoint does not decode: {e}")),
                    };
                    if let Some(reason) = fault {
                        audit.first_bad = Some((r.seq, reason));
                        return Ok(audit);
                    }
                    audit.checked += 1;
                }
                KIND => {}
                kind if Keys::follows(kind) => {
                    // Not ours to judge if it does not decode: the chain check covers it.
                    if let Ok(event) = typed::decode::<ServerEvent>(r) {
                        keys.fold(event, r.seq);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(audit)
}

/// The JWT keys the log has prepared, and those it no longer trusts to sign.
#[derive(Debug, Default)]
struct Keys {
    trusted: HashMap<String, Vec<u8>>,
    /// kid → why and from which seq it is no longer trusted.
    ended: HashMap<String, String>,
}

impl Keys {
    fn follows(kind: &str) -> bool {
        matches!(
            kind,
            "JwtKeyPrepared"
                | "ServerJwtKeyPrepared"
                | "JwtKeyRetired"
                | "ServerJwtKeyRetired"
                | "JwtAuthorityTainted"
                | "JwtAuthorityRevoked"
        )
    }

    fn fold(&mut self, event: ServerEvent, seq: u64) {
        let (kid, why) = match event {
            ServerEvent::JwtKeyPrepared(k)
            | ServerEvent::ServerJwtKeyPrepared { record: k, .. } => {
                self.ended.remove(&k.kid);
                self.trusted.insert(k.kid, k.public_key_der);
                return;
            }
            ServerEvent::JwtKeyRetired { kid } | ServerEvent::ServerJwtKeyRetired { kid, .. } => {
                (kid, "retired")
            }
            ServerEvent::JwtAuthorityTainted { kid, .. } => (kid, "tainted"),
            ServerEvent::JwtAuthorityRevoked { kid, .. } => (kid, "revoked"),
            _ => return,
        };
        if self.trusted.remove(&kid).is_some() {
            self.ended.insert(kid, format!("{why} in record {seq}"));
        }
    }
}

/// Why the checkpoint `c` in record `record_seq` fails, if it does.
async fn check_one(
    log: &dyn EventLog,
    trust_domain: &TrustDomain,
    keys: &Keys,
    record_seq: u64,
    c: &CheckpointRecord,
) -> Result<Option<String>, ScanError> {
    if c.seq == 0 || c.seq >= record_seq {
        return Ok(Some(format!(
            "the checkpoint covers seq {}, which is not before its own record",
            c.seq
        )));
    }
    if let Err(e) = c.verify(trust_domain) {
        return Ok(Some(e.to_string()));
    }
    match (keys.trusted.get(&c.kid), keys.ended.get(&c.kid)) {
        (Some(key), _) if *key != c.public_key_der => {
            return Ok(Some(format!(
                "the checkpoint's public key is not the one the log recorded for kid {:?}",
                c.kid
            )))
        }
        (Some(_), _) => {}
        (None, Some(ended)) => {
            return Ok(Some(format!(
                "the checkpoint is signed with kid {:?}, which the log no longer trusted: {ended}",
                c.kid
            )))
        }
        (None, None) => {
            return Ok(Some(format!(
                "the checkpoint is signed with kid {:?}, which the log never prepared before it",
                c.kid
            )))
        }
    }
    let covered = log.read(c.seq, 1).await?;
    Ok(match covered.first() {
        Some(r) if r.seq == c.seq && r.hash.0[..] == c.hash[..] => None,
        Some(r) if r.seq == c.seq => Some(format!(
            "the checkpoint signed hash {} for seq {}, but the log's record there has hash {}: \
             the log was rewritten at or before seq {}",
            hex::encode(&c.hash),
            c.seq,
            r.hash,
            c.seq
        )),
        _ => Some(format!(
            "the checkpoint covers seq {}, which the log does not have",
            c.seq
        )),
    })
}
