//! Walking the hash chain: the check run at open and by `verify()`.
//!
//! [`ChainWalker`] checks records one at a time in seq order, whatever they come from (a
//! [`Store`]'s scan, rows of a PostgreSQL table); [`walk_from`] drives it over a store.

use crate::error::{ChainFault, DecodeError, LogError};
use crate::log::{BadRecord, Head, VerifyReport};
use crate::record::{Digest32, Record};
use crate::store::Store;

/// Walks every stored record from seq 1, checking that seqs are dense, that each record's
/// hash matches its contents and that each `prev_hash` is the previous record's hash; then
/// that the store holds every record the log acknowledged. Stops at the first fault.
pub(crate) fn walk(store: &dyn Store) -> Result<VerifyReport, LogError> {
    walk_from(store, Head::EMPTY)
}

/// The state of a walk along the chain: the last record that passed, and the first fault.
#[derive(Debug)]
pub(crate) struct ChainWalker {
    anchor: Head,
    head: Head,
    fault: Option<BadRecord>,
}

impl ChainWalker {
    /// A walk that trusts the chain up to `anchor` and checks what follows it.
    pub(crate) fn new(anchor: Head) -> Self {
        Self {
            anchor,
            head: anchor,
            fault: None,
        }
    }

    /// A walk that starts with a fault at the anchor itself: its record is absent, or has
    /// another hash than the anchor says.
    pub(crate) fn anchor_mismatch(anchor: Head) -> Self {
        let mut walker = Self::new(anchor);
        walker.fail(
            anchor.seq,
            ChainFault::Tampered {
                stored: "(record at the snapshot's seq)".into(),
                computed: format!("the snapshot's hash {}", anchor.hash),
            },
        );
        walker
    }

    /// The seq the next record must have.
    pub(crate) fn expected(&self) -> u64 {
        self.head.seq + 1
    }

    /// The last record that passed.
    pub(crate) fn head(&self) -> Head {
        self.head
    }

    /// Whether a fault was found (the walk is over).
    pub(crate) fn failed(&self) -> bool {
        self.fault.is_some()
    }

    /// Records a fault at `seq`, unless one was found before.
    pub(crate) fn fail(&mut self, seq: u64, fault: ChainFault) {
        if self.fault.is_none() {
            self.fault = Some(BadRecord { seq, fault });
        }
    }

    /// Checks the record stored under `key`; `false` once the walk has found a fault.
    pub(crate) fn step(&mut self, key: u64, decoded: Result<&Record, DecodeError>) -> bool {
        if self.failed() {
            return false;
        }
        let expected = self.expected();
        let bad = match decoded {
            Err(e) => Some(ChainFault::Undecodable(e)),
            Ok(r) if r.seq != expected || key != expected => Some(ChainFault::SeqGap {
                expected,
                found: if key != expected { key } else { r.seq },
            }),
            Ok(r) if r.prev_hash != self.head.hash => Some(ChainFault::BrokenLink {
                expected: self.head.hash.to_hex(),
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
                    self.head = Head {
                        seq: r.seq,
                        hash: r.hash,
                    };
                    None
                }
            }
        };
        match bad {
            Some(f) => {
                self.fail(expected, f);
                false
            }
            None => true,
        }
    }

    /// The outcome of the walk so far.
    pub(crate) fn report(self) -> VerifyReport {
        VerifyReport {
            records_checked: self.head.seq - self.anchor.seq,
            head: self.head,
            fault: self.fault,
        }
    }
}

/// Like [`walk`], but trusts the chain up to `anchor` (a record whose hash is known, e.g. from
/// a snapshot) and checks only what follows it.
pub(crate) fn walk_from(store: &dyn Store, anchor: Head) -> Result<VerifyReport, LogError> {
    if anchor.seq > 0 && !matches_hash_at(store, anchor.seq, &anchor.hash)? {
        return Ok(ChainWalker::anchor_mismatch(anchor).report());
    }
    let mut walker = ChainWalker::new(anchor);
    store.scan(anchor.seq + 1, &mut |(key, decoded)| {
        walker.step(key, decoded.as_ref().map_err(Clone::clone))
    })?;
    if !walker.failed() {
        if let Some((acked, acked_hash)) = store.acknowledged_head()? {
            let head = walker.head();
            if acked > head.seq {
                walker.fail(
                    head.seq + 1,
                    ChainFault::Missing {
                        store_head: head.seq,
                        marker_head: acked,
                        first_missing: head.seq + 1,
                    },
                );
            } else if acked > 0 && !matches_hash_at(store, acked, &acked_hash)? {
                walker.fail(
                    acked,
                    ChainFault::Tampered {
                        stored: "(record at the acknowledged head)".into(),
                        computed: format!("acknowledged hash {acked_hash}"),
                    },
                );
            }
        }
    }
    Ok(walker.report())
}

fn matches_hash_at(store: &dyn Store, seq: u64, hash: &Digest32) -> Result<bool, LogError> {
    Ok(store
        .read(seq, 1)?
        .first()
        .is_some_and(|r| r.seq == seq && r.hash == *hash && r.is_intact()))
}
