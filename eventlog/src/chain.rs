//! Walking the hash chain: the check run at open and by `verify()`.

use crate::error::{ChainFault, LogError};
use crate::log::{BadRecord, Head, VerifyReport};
use crate::record::Digest32;
use crate::store::Store;

/// Walks every stored record from seq 1, checking that seqs are dense, that each record's
/// hash matches its contents and that each `prev_hash` is the previous record's hash; then
/// that the store holds every record the log acknowledged. Stops at the first fault.
pub(crate) fn walk(store: &dyn Store) -> Result<VerifyReport, LogError> {
    walk_from(store, Head::EMPTY)
}

/// Like [`walk`], but trusts the chain up to `anchor` (a record whose hash is known, e.g. from
/// a snapshot) and checks only what follows it.
pub(crate) fn walk_from(store: &dyn Store, anchor: Head) -> Result<VerifyReport, LogError> {
    if anchor.seq > 0 && !matches_hash_at(store, anchor.seq, &anchor.hash)? {
        return Ok(VerifyReport {
            records_checked: 0,
            head: anchor,
            fault: Some(BadRecord {
                seq: anchor.seq,
                fault: ChainFault::Tampered {
                    stored: "(record at the snapshot's seq)".into(),
                    computed: format!("the snapshot's hash {}", anchor.hash),
                },
            }),
        });
    }
    let mut head = anchor;
    let mut fault: Option<BadRecord> = None;
    store.scan(anchor.seq + 1, &mut |(key, decoded)| {
        let expected = head.seq + 1;
        let bad = match decoded {
            Err(e) => Some(ChainFault::Undecodable(e)),
            Ok(r) if r.seq != expected || key != expected => Some(ChainFault::SeqGap {
                expected,
                found: if key != expected { key } else { r.seq },
            }),
            Ok(r) if r.prev_hash != head.hash => Some(ChainFault::BrokenLink {
                expected: head.hash.to_hex(),
                found: r.prev_hash.to_hex(),
            }),
            Ok(r) => {
                let computed = r.expected_hash();
                if computed != r.hash {
                    Some(ChainFault::Tampered {
                        stored: r.hash.to_hex(),
                        computed: computed.to_hex(),
                    })
                } else {
                    head = Head {
                        seq: r.seq,
                        hash: r.hash,
                    };
                    None
                }
            }
        };
        match bad {
            Some(f) => {
                fault = Some(BadRecord {
                    seq: expected,
                    fault: f,
                });
                false
            }
            None => true,
        }
    })?;
    if fault.is_none() {
        if let Some((acked, acked_hash)) = store.acknowledged_head()? {
            if acked > head.seq {
                fault = Some(BadRecord {
                    seq: head.seq + 1,
                    fault: ChainFault::Missing {
                        store_head: head.seq,
                        marker_head: acked,
                        first_missing: head.seq + 1,
                    },
                });
            } else if acked > 0 && !matches_hash_at(store, acked, &acked_hash)? {
                fault = Some(BadRecord {
                    seq: acked,
                    fault: ChainFault::Tampered {
                        stored: "(record at the acknowledged head)".into(),
                        computed: format!("acknowledged hash {acked_hash}"),
                    },
                });
            }
        }
    }
    Ok(VerifyReport {
        records_checked: head.seq - anchor.seq,
        head,
        fault,
    })
}

fn matches_hash_at(store: &dyn Store, seq: u64, hash: &Digest32) -> Result<bool, LogError> {
    Ok(store
        .read(seq, 1)?
        .first()
        .is_some_and(|r| r.seq == seq && r.hash == *hash && r.is_intact()))
}
