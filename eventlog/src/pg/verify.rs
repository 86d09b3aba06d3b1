//! Walking the chain in the table: `verify()` and the check at open.

use crate::chain::ChainWalker;
use crate::error::{ChainFault, LogError};
use crate::log::{Head, VerifyReport};
use crate::record::Record;

use super::shared::{digest, from_sql_seq, to_sql_limit, to_sql_seq, Shared};

/// Rows read at a time by a walk (a walk reads the whole table, so larger than a chunk).
const MIN_WALK_CHUNK: usize = 4_096;

/// Walks the whole table from seq 1; a table that ends before this server's head is missing
/// records it saw committed.
pub(crate) async fn verify(shared: &Shared) -> Result<VerifyReport, LogError> {
    let seen = *shared.head.borrow();
    let mut report = walk(shared, Head::EMPTY).await?;
    if report.fault.is_none() && report.head.seq < seen.seq {
        report.fault = Some(crate::log::BadRecord {
            seq: report.head.seq + 1,
            fault: ChainFault::Missing {
                store_head: report.head.seq,
                marker_head: seen.seq,
                first_missing: report.head.seq + 1,
            },
        });
    }
    Ok(report)
}

/// Walks from `anchor`; the head reached, or the first fault as `Corrupt`.
pub(crate) async fn check_chain(shared: &Shared, anchor: Head) -> Result<Head, LogError> {
    let report = walk(shared, anchor).await?;
    match report.fault {
        Some(bad) => Err(shared.corrupt(bad.seq, bad.fault)),
        None => Ok(report.head),
    }
}

/// Checks every row after `anchor` (whose row must have the anchor's hash): the records'
/// chain, and that the columns copied out of each record agree with it.
pub(crate) async fn walk(shared: &Shared, anchor: Head) -> Result<VerifyReport, LogError> {
    let what = "verifying the chain";
    let client = shared.client().await?;
    if anchor.seq > 0 {
        let rows = shared.rows(&client, anchor.seq, 1).await?;
        let matches = rows.first().is_some_and(|(seq, decoded)| {
            *seq == anchor.seq
                && decoded
                    .as_ref()
                    .is_ok_and(|r| r.seq == anchor.seq && r.hash == anchor.hash && r.is_intact())
        });
        if !matches {
            return Ok(ChainWalker::anchor_mismatch(anchor).report());
        }
    }
    let chunk = shared.config.subscription_chunk.max(MIN_WALK_CHUNK);
    let mut walker = ChainWalker::new(anchor);
    let mut after = anchor.seq;
    loop {
        let rows = shared
            .within(
                what,
                client.query(
                    "SELECT seq, hash, prev_hash, kind, recorded_at, record FROM tessera_log
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&to_sql_seq(after), &to_sql_limit(chunk)],
                ),
            )
            .await?;
        for row in &rows {
            let get = |e: tokio_postgres::Error| shared.pg_error(what, &e);
            let seq = from_sql_seq(row.try_get(0).map_err(get)?);
            let columns = Columns {
                hash: row.try_get(1).map_err(get)?,
                prev_hash: row.try_get(2).map_err(get)?,
                kind: row.try_get(3).map_err(get)?,
                recorded_at: row.try_get(4).map_err(get)?,
            };
            let decoded = Record::decode(row.try_get(5).map_err(get)?);
            if let Ok(record) = &decoded {
                // Only for a record that is itself intact: damage to the record is reported
                // by the chain check, which says more.
                if record.is_intact() && seq == walker.expected() {
                    if let Some(fault) = columns.disagree_with(record) {
                        walker.fail(seq, fault);
                        return Ok(walker.report());
                    }
                }
            }
            if !walker.step(seq, decoded.as_ref().map_err(Clone::clone)) {
                return Ok(walker.report());
            }
            after = seq;
        }
        if rows.len() < chunk {
            return Ok(walker.report());
        }
    }
}

/// The columns a row copies out of its record, for operators' queries.
struct Columns<'a> {
    hash: &'a [u8],
    prev_hash: &'a [u8],
    kind: &'a str,
    recorded_at: i64,
}

impl Columns<'_> {
    fn disagree_with(&self, record: &Record) -> Option<ChainFault> {
        let (column, stored, actual) = if digest(self.hash) != record.hash || self.hash.len() != 32
        {
            ("hash", hex::encode(self.hash), record.hash.to_hex())
        } else if digest(self.prev_hash) != record.prev_hash || self.prev_hash.len() != 32 {
            (
                "prev_hash",
                hex::encode(self.prev_hash),
                record.prev_hash.to_hex(),
            )
        } else if self.kind != record.kind {
            ("kind", self.kind.to_string(), record.kind.clone())
        } else if self.recorded_at != record.recorded_at {
            (
                "recorded_at",
                self.recorded_at.to_string(),
                record.recorded_at.to_string(),
            )
        } else {
            return None;
        };
        Some(ChainFault::Tampered {
            stored: format!("{column} column {stored}"),
            computed: format!("the record's {column} {actual}"),
        })
    }
}
