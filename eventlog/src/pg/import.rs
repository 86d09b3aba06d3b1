//! Copying another log (e.g. a server's sled directory) into an empty PostgreSQL log: the
//! operator's way from one server to several.

use crate::chain::ChainWalker;
use crate::error::LogError;
use crate::log::{EventLog, Head};
use crate::record::Record;

use super::follow::CHANNEL;
use super::shared::{to_sql_seq, Shared};
use super::verify;

/// Records read from the source and inserted at a time.
const CHUNK: usize = 1_024;

const INSERT: &str = "INSERT INTO tessera_log (seq, hash, prev_hash, kind, recorded_at, record)
    SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BYTEA[], $4::TEXT[], $5::BIGINT[], $6::BYTEA[])";

/// Copies `source` into the (empty) table in one transaction, checking its chain on the way,
/// then verifies the table. Returns the number of records copied.
pub(crate) async fn import(shared: &Shared, source: &dyn EventLog) -> Result<u64, LogError> {
    let what = "importing records";
    let mut client = shared.client().await?;
    let tx = shared.within(what, client.transaction()).await?;
    // Appends from other servers wait until the import is in (then lose the race for seq 1
    // and catch up), rather than interleave with it.
    shared
        .within(
            what,
            tx.batch_execute("LOCK TABLE tessera_log IN EXCLUSIVE MODE"),
        )
        .await?;
    let existing: Option<i64> = shared
        .within(what, tx.query_one("SELECT max(seq) FROM tessera_log", &[]))
        .await?
        .try_get(0)
        .map_err(|e| shared.pg_error(what, &e))?;
    if let Some(existing) = existing {
        return Err(shared.storage(format!(
            "refusing to import into a log that already holds records (up to seq {}): \
             import only into an empty database",
            existing
        )));
    }
    let statement = shared.within(what, tx.prepare(INSERT)).await?;
    let mut walker = ChainWalker::new(Head::EMPTY);
    loop {
        let records = source.read(walker.expected(), CHUNK).await?;
        if records.is_empty() {
            break;
        }
        for r in &records {
            if !walker.step(r.seq, Ok(r)) {
                let report = walker.report();
                let bad = report.fault.map_or_else(
                    || {
                        (
                            r.seq,
                            crate::error::ChainFault::SeqGap {
                                expected: r.seq,
                                found: r.seq,
                            },
                        )
                    },
                    |b| (b.seq, b.fault),
                );
                return Err(LogError::Corrupt {
                    path: source.location(),
                    seq: bad.0,
                    fault: bad.1,
                });
            }
        }
        insert(shared, &tx, &statement, &records).await?;
    }
    let head = walker.head();
    shared
        .within(
            what,
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &head.seq.to_string()],
            ),
        )
        .await?;
    shared.within(what, tx.commit()).await?;
    shared.publish(head);
    let report = verify::walk(shared, Head::EMPTY).await?;
    if let Some(bad) = report.fault {
        return Err(shared.corrupt(bad.seq, bad.fault));
    }
    if report.head.seq < head.seq {
        return Err(shared.storage(format!(
            "after importing {} records the table verifies only up to seq {}",
            head.seq, report.head.seq
        )));
    }
    tracing::info!(location = %shared.location, records = head.seq, from = %source.location().display(), "event log imported");
    Ok(head.seq)
}

async fn insert(
    shared: &Shared,
    tx: &deadpool_postgres::Transaction<'_>,
    statement: &tokio_postgres::Statement,
    records: &[Record],
) -> Result<(), LogError> {
    let encoded: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
    let seqs: Vec<i64> = records.iter().map(|r| to_sql_seq(r.seq)).collect();
    let hashes: Vec<&[u8]> = records.iter().map(|r| &r.hash.0[..]).collect();
    let prevs: Vec<&[u8]> = records.iter().map(|r| &r.prev_hash.0[..]).collect();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    let times: Vec<i64> = records.iter().map(|r| r.recorded_at).collect();
    let bodies: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
    shared
        .within(
            "importing records",
            tx.execute(
                statement,
                &[&seqs, &hashes, &prevs, &kinds, &times, &bodies],
            ),
        )
        .await?;
    Ok(())
}
