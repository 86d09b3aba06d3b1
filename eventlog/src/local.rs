//! [`LocalLog`]: the single-writer log over an embedded [`Store`], with group commit.
//!
//! ```text
//!  appenders ──(bounded queue)──▶ writer thread ──▶ Store::write (one flush per group)
//!                                      │
//!                                      └─ head (watch) ──▶ subscriptions read the store
//! ```
//!
//! The writer drains every request waiting in the queue, seals them into one chain segment,
//! writes it with one flush, then answers them all: concurrent appenders share one fsync. A
//! full queue makes appenders wait (backpressure), it never grows. After a failed write the
//! log stops (fail-stop): every later append gets `LogError::Closed` with the cause.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::chain;
use crate::clock::Clock;
use crate::error::{ChainFault, LogError};
use crate::log::{AppendCondition, AppendReceipt, EventLog, Head, Subscription, VerifyReport};
use crate::record::{NewRecord, Record};
use crate::snapshot::{Snapshot, SnapshotStream};
use crate::store::memory::MemoryStore;
use crate::store::sled::SledStore;
use crate::store::Store;

/// Bounds of a [`LocalLog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Most records in one `append` call.
    pub max_batch_records: usize,
    /// Most records the writer seals into one flush; more waiting requests go in the next.
    pub max_group_records: usize,
    /// Append requests that may wait for the writer; further appenders wait for room.
    pub queue_depth: usize,
    /// Records a subscription reads from the store at a time.
    pub subscription_chunk: usize,
    /// How much of the chain to check when opening; a damaged log refuses to open.
    pub open_check: OpenCheck,
    /// Run the open check on its own thread instead of before `open` returns: reads (a
    /// replay) proceed meanwhile, appends wait for its verdict, and [`EventLog::opened`]
    /// reports it. A server replaying a long log then checks and replays on two cores.
    pub check_in_background: bool,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_batch_records: 10_000,
            max_group_records: 20_000,
            queue_depth: 4_096,
            subscription_chunk: 1_024,
            open_check: OpenCheck::FullChain,
            check_in_background: false,
        }
    }
}

/// How much of the chain [`LocalLog::open`] verifies before serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenCheck {
    /// Every record from seq 1 (the default): any damage anywhere refuses the open. Costs a
    /// SHA-256 per record.
    FullChain,
    /// Only the records after the latest snapshot, whose hash anchors the check: start-up
    /// time independent of log length. Older records are covered by `verify()`, which an
    /// operator or a background task runs.
    FromLatestSnapshot,
    /// Nothing: for tools that must open a damaged log to inspect it.
    Off,
}

struct Request {
    records: Vec<NewRecord>,
    condition: AppendCondition,
    reply: oneshot::Sender<Result<AppendReceipt, LogError>>,
}

/// A log with one writer in this process, over sled or memory.
#[derive(Debug, Clone)]
pub struct LocalLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    limits: LogLimits,
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    head: watch::Receiver<Head>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The open check's verdict: `None` while it runs.
    verdict: watch::Receiver<Option<Result<(), LogError>>>,
}

impl LocalLog {
    /// Opens the sled-backed log in `dir` (created if absent).
    pub fn open_sled(dir: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<Self, LogError> {
        Self::open(Arc::new(SledStore::open(dir)?), clock, LogLimits::default())
    }

    /// A new, empty in-memory log.
    pub fn in_memory(clock: Arc<dyn Clock>) -> Self {
        let store = Arc::new(MemoryStore::new("memory"));
        match Self::open(store, clock, LogLimits::default()) {
            Ok(log) => log,
            // An empty memory store always verifies, and starting a thread only fails when
            // the process is out of resources.
            Err(e) => panic!("cannot start an in-memory event log: {e}"),
        }
    }

    /// Opens a log over `store`: walks the chain (unless disabled) and starts the writer.
    pub fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        limits: LogLimits,
    ) -> Result<Self, LogError> {
        let anchor = match limits.open_check {
            OpenCheck::FullChain => Some(Head::EMPTY),
            OpenCheck::FromLatestSnapshot => Some(match store.latest_snapshot_anchor()? {
                Some((seq, hash)) => Head { seq, hash },
                None => Head::EMPTY,
            }),
            OpenCheck::Off => None,
        };
        let (verdict_tx, verdict) = watch::channel(None);
        let mut gate = None;
        let head = match anchor {
            Some(anchor) if limits.check_in_background => {
                let head = tail_head(store.as_ref())?;
                let (gate_tx, gate_rx) = std::sync::mpsc::channel();
                let checked = store.clone();
                std::thread::Builder::new()
                    .name("tessera-eventlog-check".into())
                    .spawn(move || {
                        let outcome = check_chain(checked.as_ref(), anchor).and_then(|found| {
                            if found == head {
                                Ok(())
                            } else {
                                Err(LogError::Corrupt {
                                    path: checked.location().to_path_buf(),
                                    seq: found.seq + 1,
                                    fault: crate::error::ChainFault::SeqGap {
                                        expected: found.seq + 1,
                                        found: head.seq,
                                    },
                                })
                            }
                        });
                        let _ =
                            gate_tx.send(outcome.as_ref().map_err(ToString::to_string).copied());
                        verdict_tx.send_replace(Some(outcome));
                    })
                    .map_err(|e| LogError::Storage {
                        path: store.location().to_path_buf(),
                        message: format!("cannot start the open-check thread: {e}"),
                    })?;
                gate = Some(gate_rx);
                head
            }
            Some(anchor) => {
                let head = check_chain(store.as_ref(), anchor)?;
                verdict_tx.send_replace(Some(Ok(())));
                head
            }
            None => {
                verdict_tx.send_replace(Some(Ok(())));
                last_head(store.as_ref())?
            }
        };
        let (queue_tx, queue_rx) = mpsc::channel(limits.queue_depth.max(1));
        let (head_tx, head_rx) = watch::channel(head);
        let writer = Writer {
            store: store.clone(),
            clock,
            max_group: limits.max_group_records.max(1),
            head,
            failed: None,
        };
        let handle = std::thread::Builder::new()
            .name("tessera-eventlog-writer".into())
            .spawn(move || writer.run(gate, queue_rx, head_tx))
            .map_err(|e| LogError::Storage {
                path: store.location().to_path_buf(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                limits,
                queue: Mutex::new(Some(queue_tx)),
                head: head_rx,
                writer: Mutex::new(Some(handle)),
                verdict,
            }),
        })
    }

    /// Stops accepting appends, lets queued ones finish, and waits for the writer to exit.
    /// Subscriptions end once they have delivered every committed record.
    pub fn close(&self) {
        self.inner.close();
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Whether a snapshot at `seq` with `hash` belongs to this log's history.
    fn check_snapshot_anchor(
        &self,
        seq: u64,
        hash: crate::record::Digest32,
    ) -> Result<(), LogError> {
        match self.inner.store.read(seq, 1)?.into_iter().next() {
            Some(r) if r.seq == seq && r.hash == hash => Ok(()),
            Some(r) if r.seq == seq => Err(LogError::SnapshotMismatch {
                seq,
                reason: format!(
                    "snapshot was taken after record hash {hash}, the log has {}",
                    r.hash
                ),
            }),
            _ => Err(LogError::SnapshotMismatch {
                seq,
                reason: "the log has no record at that seq".into(),
            }),
        }
    }
}

impl Inner {
    fn close(&self) {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // The writer only exits by draining the queue; a panic there is a bug we report.
            if handle.join().is_err() {
                tracing::error!("event log writer thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Walks the chain from `anchor`; the head reached, or the first fault as an error.
fn check_chain(store: &dyn Store, anchor: Head) -> Result<Head, LogError> {
    let report = chain::walk_from(store, anchor)?;
    match report.fault {
        Some(bad) => Err(LogError::Corrupt {
            path: store.location().to_path_buf(),
            seq: bad.seq,
            fault: bad.fault,
        }),
        None => Ok(report.head),
    }
}

/// The last stored record's head, read directly (the open check confirms it later).
fn tail_head(store: &dyn Store) -> Result<Head, LogError> {
    match store.last_record()? {
        Some(r) => Ok(Head {
            seq: r.seq,
            hash: r.hash,
        }),
        None => Ok(Head::EMPTY),
    }
}

fn last_head(store: &dyn Store) -> Result<Head, LogError> {
    // Without the walk: the highest decodable record, wherever it is.
    let mut head = Head::EMPTY;
    store.scan(1, &mut |(_, decoded)| {
        if let Ok(r) = decoded {
            head = Head {
                seq: r.seq,
                hash: r.hash,
            };
        }
        true
    })?;
    Ok(head)
}

struct Writer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    max_group: usize,
    head: Head,
    failed: Option<String>,
}

impl Writer {
    fn run(
        mut self,
        gate: Option<std::sync::mpsc::Receiver<Result<(), String>>>,
        mut queue: mpsc::Receiver<Request>,
        head_tx: watch::Sender<Head>,
    ) {
        // With the open check in the background, nothing is written until it has passed;
        // after a fault every append fails with it.
        if let Some(gate) = gate {
            match gate.recv() {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => self.failed = Some(format!("the open check failed: {reason}")),
                Err(_) => self.failed = Some("the open check did not finish".into()),
            }
        }
        while let Some(first) = queue.blocking_recv() {
            let mut pending = first.records.len();
            let mut group = vec![first];
            while pending < self.max_group {
                match queue.try_recv() {
                    Ok(next) => {
                        pending += next.records.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group, &head_tx);
        }
    }

    fn commit(&mut self, group: Vec<Request>, head_tx: &watch::Sender<Head>) {
        if let Some(reason) = &self.failed {
            for req in group {
                let _ = req.reply.send(Err(LogError::Closed {
                    reason: Some(reason.clone()),
                }));
            }
            return;
        }
        let recorded_at = self.clock.now_unix_nanos();
        let mut next = self.head;
        let mut sealed = Vec::new();
        let mut outcomes = Vec::with_capacity(group.len());
        for req in group {
            if let AppendCondition::ExpectHead(expected) = req.condition {
                if expected != next.seq {
                    let conflict = LogError::Conflict {
                        expected,
                        actual: next.seq,
                    };
                    outcomes.push((req.reply, Err(conflict)));
                    continue;
                }
            }
            let first_seq = next.seq + 1;
            for new in req.records {
                let record = Record::seal(new, next.seq + 1, recorded_at, next.hash);
                next = Head {
                    seq: record.seq,
                    hash: record.hash,
                };
                sealed.push(record);
            }
            let receipt = AppendReceipt {
                first_seq,
                last_seq: next.seq,
                recorded_at,
            };
            outcomes.push((req.reply, Ok(receipt)));
        }
        if !sealed.is_empty() {
            if let Err(e) = self.store.write(&sealed) {
                let reason = e.to_string();
                tracing::error!(error = %reason, "event log write failed; the log stops accepting appends");
                self.failed = Some(reason.clone());
                for (reply, outcome) in outcomes {
                    let err = match outcome {
                        Ok(_) => LogError::Closed {
                            reason: Some(reason.clone()),
                        },
                        Err(e) => e,
                    };
                    let _ = reply.send(Err(err));
                }
                return;
            }
            self.head = next;
            head_tx.send_replace(next);
        }
        for (reply, outcome) in outcomes {
            // An appender that gave up waiting still had its records committed; nothing to undo.
            let _ = reply.send(outcome);
        }
    }
}

impl EventLog for LocalLog {
    fn append(
        &self,
        batch: Vec<NewRecord>,
        condition: AppendCondition,
    ) -> BoxFuture<'_, Result<AppendReceipt, LogError>> {
        async move {
            if batch.len() > self.inner.limits.max_batch_records {
                return Err(LogError::BatchTooLarge {
                    len: batch.len(),
                    limit: self.inner.limits.max_batch_records,
                });
            }
            for record in &batch {
                record.check().map_err(LogError::InvalidRecord)?;
            }
            let queue = self
                .inner
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .ok_or(LogError::Closed { reason: None })?;
            let (reply, answer) = oneshot::channel();
            queue
                .send(Request {
                    records: batch,
                    condition,
                    reply,
                })
                .await
                .map_err(|_| LogError::Closed { reason: None })?;
            answer
                .await
                .map_err(|_| LogError::Closed { reason: None })?
        }
        .boxed()
    }

    fn read(&self, from_seq: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Record>, LogError>> {
        let head = self.head().seq;
        async move {
            // Only committed records: a store may briefly hold records still being flushed.
            let limit = limit.min(
                usize::try_from(head.saturating_sub(from_seq.max(1)) + 1).unwrap_or(usize::MAX),
            );
            if from_seq > head || limit == 0 {
                return Ok(Vec::new());
            }
            self.inner.store.read(from_seq.max(1), limit)
        }
        .boxed()
    }

    fn subscribe(&self, from_seq: u64) -> Subscription {
        let follower = Follower {
            store: self.inner.store.clone(),
            head: self.inner.head.clone(),
            next: from_seq.max(1),
            chunk: self.inner.limits.subscription_chunk.max(1),
            buffered: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        })
        .boxed()
    }

    fn head(&self) -> Head {
        *self.inner.head.borrow()
    }

    fn verify(&self) -> BoxFuture<'_, Result<VerifyReport, LogError>> {
        let store = self.inner.store.clone();
        async move {
            tokio::task::spawn_blocking(move || chain::walk(store.as_ref()))
                .await
                .map_err(|e| LogError::Storage {
                    path: self.location(),
                    message: format!("verify task failed: {e}"),
                })?
        }
        .boxed()
    }

    fn save_snapshot(&self, seq: u64, data: Vec<u8>) -> BoxFuture<'_, Result<(), LogError>> {
        async move {
            let head = self.head();
            if seq == 0 || seq > head.seq {
                return Err(LogError::SnapshotMismatch {
                    seq,
                    reason: format!("the log's committed records are 1..={}", head.seq),
                });
            }
            let record = self.inner.store.read(seq, 1)?.into_iter().next();
            let Some(record) = record.filter(|r| r.seq == seq) else {
                return Err(LogError::SnapshotMismatch {
                    seq,
                    reason: "no record at that seq".into(),
                });
            };
            self.inner.store.put_snapshot(&Snapshot {
                seq,
                hash: record.hash,
                data,
            })
        }
        .boxed()
    }

    fn latest_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, LogError>> {
        async move {
            let Some(snapshot) = self.inner.store.latest_snapshot()? else {
                return Ok(None);
            };
            self.check_snapshot_anchor(snapshot.seq, snapshot.hash)?;
            Ok(Some(snapshot))
        }
        .boxed()
    }

    fn latest_snapshot_stream(&self) -> BoxFuture<'_, Result<Option<SnapshotStream>, LogError>> {
        async move {
            // Opening checks the whole file (150 MB at a million entries): off the async
            // threads.
            let store = self.inner.store.clone();
            let opened = tokio::task::spawn_blocking(move || store.latest_snapshot_stream())
                .await
                .map_err(|e| LogError::Storage {
                    path: self.inner.store.location().to_path_buf(),
                    message: format!("opening the latest snapshot did not finish: {e}"),
                })?;
            let Some(stream) = opened? else {
                return Ok(None);
            };
            self.check_snapshot_anchor(stream.seq, stream.hash)?;
            Ok(Some(stream))
        }
        .boxed()
    }

    fn location(&self) -> PathBuf {
        self.inner.store.location().to_path_buf()
    }

    fn opened(&self) -> BoxFuture<'_, Result<(), LogError>> {
        let mut verdict = self.inner.verdict.clone();
        async move {
            let outcome = verdict
                .wait_for(Option::is_some)
                .await
                .map_err(|_| LogError::Closed {
                    reason: Some("the open check stopped without a verdict".into()),
                })?
                .clone();
            outcome.unwrap_or(Ok(()))
        }
        .boxed()
    }
}

/// The state of one subscription: the next seq to deliver and what has been read ahead.
struct Follower {
    store: Arc<dyn Store>,
    head: watch::Receiver<Head>,
    next: u64,
    chunk: usize,
    buffered: VecDeque<Record>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Record, LogError>> {
        loop {
            if let Some(r) = self.buffered.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            // Read the head and mark it seen in one step: any commit after this wakes
            // `changed()` below, so no record is missed between reading the store and waiting.
            let head = self.head.borrow_and_update().seq;
            if head >= self.next {
                let limit = self
                    .chunk
                    .min(usize::try_from(head - self.next + 1).unwrap_or(usize::MAX));
                match self.store.read(self.next, limit) {
                    Ok(records) => {
                        for r in records {
                            if r.seq != self.next {
                                self.done = true;
                                return Some(Err(LogError::Corrupt {
                                    path: self.store.location().to_path_buf(),
                                    seq: self.next,
                                    fault: ChainFault::SeqGap {
                                        expected: self.next,
                                        found: r.seq,
                                    },
                                }));
                            }
                            self.next += 1;
                            self.buffered.push_back(r);
                        }
                        if self.buffered.is_empty() {
                            self.done = true;
                            return Some(Err(LogError::Corrupt {
                                path: self.store.location().to_path_buf(),
                                seq: self.next,
                                fault: ChainFault::Missing {
                                    store_head: self.next - 1,
                                    marker_head: head,
                                    first_missing: self.next,
                                },
                            }));
                        }
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            if self.head.changed().await.is_err() {
                // The writer is gone; deliver anything committed that we have not read yet.
                if self.head.borrow().seq < self.next {
                    self.done = true;
                }
            }
        }
    }
}
