//! Following the table: the tailer task that moves this server's head when other servers
//! append, and the subscriptions that read behind the head.
//!
//! The tailer holds its own connection with `LISTEN tessera_log`. On every notification, and
//! every `poll_interval` without one (a notification is lost while the connection is down), it
//! reads the rows past the head, checks that they extend the chain, keeps them in memory and
//! publishes the new head. A damaged row stops it there (recorded for subscriptions).

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError};

use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::{ChainFault, LogError};
use crate::log::{BadRecord, Head, Subscription};
use crate::record::{Digest32, Record};

use super::shared::{Row, Shared};

/// The channel the writer notifies after each commit (payload: the last seq).
pub(crate) const CHANNEL: &str = "tessera_log";

/// Runs until the log shuts down.
pub(crate) async fn tail(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_signal();
    let wake = Arc::new(Notify::new());
    let mut client: Option<tokio_postgres::Client> = None;
    while !*shutdown.borrow() {
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            client = match listen(&shared, wake.clone()).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "event log tailer cannot listen yet");
                    None
                }
            };
        }
        if let Some(c) = &client {
            if let Err(e) = catch_up(&shared, c).await {
                tracing::debug!(error = %e, "event log tailer cannot read yet");
                if matches!(e, LogError::Unavailable { .. }) {
                    client = None;
                }
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(shared.config.poll_interval) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// A new connection listening on [`CHANNEL`]; its notifications wake `wake`.
async fn listen(shared: &Shared, wake: Arc<Notify>) -> Result<tokio_postgres::Client, LogError> {
    let (client, mut connection) = shared
        .within("connecting the tailer", shared.pg.connect(NoTls))
        .await?;
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "event log tailer connection ended");
                    break;
                }
            }
        }
    });
    shared
        .within(
            "listening for appends",
            client.batch_execute(&format!("LISTEN {CHANNEL}")),
        )
        .await?;
    Ok(client)
}

/// Reads every row past the published head, chunk by chunk, and publishes them.
async fn catch_up(shared: &Shared, client: &tokio_postgres::Client) -> Result<(), LogError> {
    if shared
        .fault
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
    {
        return Ok(());
    }
    let chunk = shared.config.subscription_chunk.max(1);
    loop {
        let head = *shared.head.borrow();
        let rows = shared.rows(client, head.seq + 1, chunk).await?;
        let full = rows.len() == chunk;
        let mut checker = Checker::new(head.seq + 1, Some(head.hash));
        let mut good = Vec::with_capacity(rows.len());
        for row in rows {
            match checker.check(row) {
                Ok(record) => good.push(record),
                Err(bad) => {
                    tracing::error!(
                        location = %shared.location, seq = bad.seq, fault = %bad.fault,
                        "event log: a damaged record in the table; this server follows no further"
                    );
                    shared.remember(&good);
                    if let Some(last) = good.last() {
                        shared.publish(Head {
                            seq: last.seq,
                            hash: last.hash,
                        });
                    }
                    *shared.fault.lock().unwrap_or_else(PoisonError::into_inner) = Some(bad);
                    shared.wake();
                    return Ok(());
                }
            }
        }
        let Some(last) = good.last() else {
            return Ok(());
        };
        let new_head = Head {
            seq: last.seq,
            hash: last.hash,
        };
        shared.remember(&good);
        shared.publish(new_head);
        if !full || shared.is_shut_down() {
            return Ok(());
        }
    }
}

/// Checks rows one after the other: dense seqs, intact hashes, each linked to the one before.
struct Checker {
    next: u64,
    prev: Option<Digest32>,
}

impl Checker {
    fn new(next: u64, prev: Option<Digest32>) -> Self {
        Self { next, prev }
    }

    fn check(&mut self, (seq, decoded): Row) -> Result<Record, BadRecord> {
        let expected = self.next;
        let fail = |fault| BadRecord {
            seq: expected,
            fault,
        };
        let record = decoded.map_err(|e| fail(ChainFault::Undecodable(e)))?;
        if seq != expected || record.seq != expected {
            return Err(fail(ChainFault::SeqGap {
                expected,
                found: if seq != expected { seq } else { record.seq },
            }));
        }
        if let Some(prev) = self.prev {
            if record.prev_hash != prev {
                return Err(fail(ChainFault::BrokenLink {
                    expected: prev.to_hex(),
                    found: record.prev_hash.to_hex(),
                }));
            }
        }
        let computed = record.expected_hash();
        if computed != record.hash {
            return Err(fail(ChainFault::Tampered {
                stored: record.hash.to_hex(),
                computed: computed.to_hex(),
            }));
        }
        self.next += 1;
        self.prev = Some(record.hash);
        Ok(record)
    }
}

/// Records from `from` on: catch-up, then live.
pub(crate) fn subscribe(shared: Arc<Shared>, from: u64) -> Subscription {
    let follower = Follower {
        head: shared.head.clone(),
        shutdown: shared.shutdown_signal(),
        shared,
        checker: Checker::new(from, None),
        buffered: VecDeque::new(),
        failure: None,
        done: false,
    };
    futures::stream::unfold(follower, |mut f| async move {
        let item = f.next().await?;
        Some((item, f))
    })
    .boxed()
}

struct Follower {
    shared: Arc<Shared>,
    head: watch::Receiver<Head>,
    shutdown: watch::Receiver<bool>,
    checker: Checker,
    buffered: VecDeque<Record>,
    /// Damage found after the buffered records: delivered once they are.
    failure: Option<LogError>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Record, LogError>> {
        loop {
            if let Some(r) = self.buffered.pop_front() {
                return Some(Ok(r));
            }
            if let Some(e) = self.failure.take() {
                self.done = true;
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            let next = self.checker.next;
            // Read the head and mark it seen in one step: a commit after this wakes
            // `changed()` below, so nothing is missed between reading and waiting.
            let head = self.head.borrow_and_update().seq;
            if head >= next {
                let chunk = self.shared.config.subscription_chunk.max(1);
                let want = chunk.min(usize::try_from(head - next + 1).unwrap_or(usize::MAX));
                match self.fill(next, want).await {
                    Ok(()) => continue,
                    Err(Some(e)) => {
                        // The good records before the damage go first.
                        self.failure = Some(e);
                        continue;
                    }
                    Err(None) => {
                        // The database is unreachable: not an error, wait and read again.
                        if self.pause().await {
                            return None;
                        }
                        continue;
                    }
                }
            }
            let fault = self
                .shared
                .fault
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(bad) = fault.filter(|bad| bad.seq == next) {
                self.done = true;
                return Some(Err(self.shared.corrupt(bad.seq, bad.fault)));
            }
            if *self.shutdown.borrow() {
                // Closed: everything this handle saw committed has been delivered.
                self.done = true;
                continue;
            }
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    }
                }
                _ = self.shutdown.changed() => {}
            }
        }
    }

    /// Buffers up to `want` records from `next`: from memory, else from the table.
    /// `Err(Some)`: damage (ends the stream); `Err(None)`: the database cannot be reached.
    async fn fill(&mut self, next: u64, want: usize) -> Result<(), Option<LogError>> {
        let cached = self
            .shared
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .range(next, want);
        let rows: Vec<Row> = if cached.is_empty() {
            let read = async {
                let client = self.shared.client().await?;
                self.shared.rows(&client, next, want).await
            };
            match read.await {
                Ok(rows) => rows,
                // Unreachable, or the pool closed with the log: wait (the wait ends at once
                // when the log has shut down).
                Err(LogError::Unavailable { .. })
                | Err(LogError::Storage { .. })
                | Err(LogError::Closed { .. }) => return Err(None),
                Err(e) => return Err(Some(e)),
            }
        } else {
            cached.into_iter().map(|r| (r.seq, Ok(r))).collect()
        };
        if rows.is_empty() {
            // The head says `next` is committed, yet the table does not have it.
            return Err(Some(self.shared.corrupt(
                next,
                ChainFault::Missing {
                    store_head: next - 1,
                    marker_head: self.head.borrow().seq,
                    first_missing: next,
                },
            )));
        }
        for row in rows {
            let record = self
                .checker
                .check(row)
                .map_err(|bad| Some(self.shared.corrupt(bad.seq, bad.fault)))?;
            self.buffered.push_back(record);
        }
        Ok(())
    }

    /// Waits `poll_interval` (or until shutdown); `true` if the log shut down.
    async fn pause(&mut self) -> bool {
        if *self.shutdown.borrow_and_update() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(self.shared.config.poll_interval) => false,
            _ = self.shutdown.changed() => true,
        }
    }
}
