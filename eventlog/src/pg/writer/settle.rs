//! Commits whose answer was lost: settled by looking for the group's first record.

use std::pin::Pin;

use tokio::time::Sleep;

use crate::error::LogError;
use crate::log::Head;
use crate::record::{Digest32, Record};

use super::super::shared::{digest, to_sql_seq, Counters};
use super::{Outcome, Sealed, Writer};

/// A group whose statement was sent but whose answer was lost.
pub(super) struct Unknown {
    first_seq: u64,
    first_hash: Digest32,
    last: Head,
    records: Vec<Record>,
    /// Elapses once the server has cancelled the statement if it was still running
    /// (`statement_timeout`): after that, a missing row means it never committed.
    settled: Pin<Box<Sleep>>,
}

impl Writer {
    /// The answer to a sent statement was lost: settle it now if the database answers, or
    /// remember it for the next group.
    pub(super) async fn lost(&mut self, sealed: &Sealed, e: LogError) -> Outcome {
        let (base, next) = (sealed.base, sealed.next);
        let records: Vec<Record> = sealed
            .members
            .iter()
            .flat_map(|m| m.records.iter().cloned())
            .collect();
        let Some(first) = records.first() else {
            return Outcome::Failed(e);
        };
        let (first_seq, first_hash) = (first.seq, first.hash);
        tracing::warn!(
            location = %self.shared.location, first_seq, last_seq = next.seq, error = %e,
            "event log: the answer to a commit was lost; settling whether it was written"
        );
        self.unknown = Some(Unknown {
            first_seq,
            first_hash,
            last: next,
            records,
            settled: Box::pin(tokio::time::sleep(
                self.shared.config.statement_timeout + std::time::Duration::from_millis(500),
            )),
        });
        let settled = match self.shared.client().await {
            Ok(client) => self.settle(&client).await,
            Err(e) => Err(e),
        };
        match settled {
            Ok(()) if self.head == next => Outcome::Inserted,
            Ok(()) => {
                // Not written: the same records may go again, on the same head.
                debug_assert_eq!(self.head, base);
                Outcome::Failed(self.shared.unavailable(format!(
                    "the connection was lost while appending ({e}); nothing was written"
                )))
            }
            Err(later) => Outcome::Lost(self.shared.unavailable(format!(
                "the answer to appending seqs {first_seq}..={} was lost ({e}) and the database \
                 cannot be asked yet ({later}); whether they were written is unknown until it \
                 answers again",
                next.seq
            ))),
        }
    }

    /// Settles the unknown outcome, if any: advances the head if the group was written.
    pub(super) async fn settle(
        &mut self,
        client: &deadpool_postgres::Client,
    ) -> Result<(), LogError> {
        let Some(unknown) = self.unknown.as_mut() else {
            return Ok(());
        };
        let mut waited = false;
        loop {
            let row = self
                .shared
                .within(
                    "settling a lost commit",
                    client.query_opt(
                        "SELECT hash FROM tessera_log WHERE seq = $1",
                        &[&to_sql_seq(unknown.first_seq)],
                    ),
                )
                .await?;
            let found = match row {
                Some(row) => {
                    Some(digest(row.try_get::<_, &[u8]>(0).map_err(|e| {
                        self.shared.pg_error("settling a lost commit", &e)
                    })?))
                }
                None => None,
            };
            if found == Some(unknown.first_hash) {
                let Some(unknown) = self.unknown.take() else {
                    return Ok(());
                };
                tracing::info!(
                    first_seq = unknown.first_seq,
                    "event log: the lost commit was written"
                );
                self.committed(unknown.last, &unknown.records);
                Counters::add(&self.shared.stats.transactions, 1);
                return Ok(());
            }
            if found.is_some() || waited {
                // Another record holds the seq, or the statement can no longer be running.
                self.unknown = None;
                return Ok(());
            }
            // The statement may still be running on the server: wait until its
            // statement_timeout has cancelled it, then look once more.
            unknown.settled.as_mut().await;
            waited = true;
        }
    }
}
