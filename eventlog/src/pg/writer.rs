//! The writer task: group commit with optimistic concurrency on the head.
//!
//! It drains every request waiting in its queue, seals them on the head it knows, and writes
//! them with ONE statement, which is its own transaction:
//!
//! ```sql
//! WITH ins AS (INSERT INTO tessera_log ... SELECT * FROM UNNEST($1, ..., $6)
//!              WHERE $7 = 0 OR EXISTS (row $7 with hash $8) RETURNING seq)
//! SELECT n, pg_notify('tessera_log', $9) WHERE n > 0
//! ```
//!
//! The head check, the multi-row insert and the notification commit together or not at all,
//! in one round trip. A unique violation on `seq` means another server appended first: the
//! writer reads the new head, answers `ExpectHead` requests with `Conflict`, and reseals the
//! `Any` ones (up to [`MAX_ROUNDS`] times).
//!
//! A server that lost the race retries under an exclusive advisory lock (its transaction
//! reads the head after taking the lock, so it cannot lose again), while every optimistic
//! statement takes the same lock shared before inserting. Without that, a busy server that
//! commits one group per round trip starves another, which needs two (read head, insert).
//!
//! When the answer to a sent statement is lost (connection dropped, timeout), whether it
//! committed is unknown: the writer settles it on the next connection by looking for the
//! group's first record (its hash) before it seals anything else. Until then, appends get
//! `Unavailable`; nothing is ever answered `Ok` that is not in the table.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;

use crate::clock::Clock;
use crate::error::LogError;
use crate::log::{AppendCondition, AppendReceipt, Head};
use crate::record::{NewRecord, Record};

use super::shared::{digest, to_sql_seq, Counters, Shared};

mod settle;

use self::settle::Unknown;

/// Times the writer reseals `Any` requests after losing the race for the head.
const MAX_ROUNDS: usize = 16;

const INSERT: &str = "WITH ins AS (
    INSERT INTO tessera_log (seq, hash, prev_hash, kind, recorded_at, record)
    SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BYTEA[], $4::TEXT[], $5::BIGINT[], $6::BYTEA[])
    WHERE pg_advisory_xact_lock_shared($10::BIGINT)::TEXT = ''
      AND ($7::BIGINT = 0 OR EXISTS (SELECT 1 FROM tessera_log WHERE seq = $7 AND hash = $8::BYTEA))
    RETURNING seq
)
SELECT n, (SELECT pg_notify('tessera_log', $9::TEXT) WHERE n > 0)::TEXT
FROM (SELECT count(*) AS n FROM ins) AS inserted";

/// Advisory lock key serializing appenders after a lost race ("TSAP").
const APPEND_LOCK: i64 = 0x5453_4150;

/// An append waiting for the writer.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) records: Vec<NewRecord>,
    pub(crate) condition: AppendCondition,
    pub(crate) reply: oneshot::Sender<Result<AppendReceipt, LogError>>,
}

type Reply = oneshot::Sender<Result<AppendReceipt, LogError>>;

/// A request sealed for one attempt.
struct Member {
    records: Vec<Record>,
    condition: AppendCondition,
    reply: Reply,
}

impl Member {
    /// Back to a request, to be sealed again on another head.
    fn unseal(self) -> Request {
        Request {
            records: self
                .records
                .into_iter()
                .map(|r| NewRecord {
                    kind: r.kind,
                    schema_version: r.schema_version,
                    payload: r.payload,
                })
                .collect(),
            condition: self.condition,
            reply: self.reply,
        }
    }
}

/// A group sealed on `base`, up to `next`.
struct Sealed {
    base: Head,
    next: Head,
    recorded_at: i64,
    members: Vec<Member>,
}

impl Sealed {
    fn is_empty(&self) -> bool {
        self.next.seq == self.base.seq
    }
}

/// What one attempt at a group did.
enum Outcome {
    Inserted,
    /// Another server appended first.
    LostRace,
    /// Nothing was written.
    Failed(LogError),
    /// The statement may or may not have committed.
    Lost(LogError),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    head: Head,
    unknown: Option<Unknown>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, clock: Arc<dyn Clock>, head: Head) -> Self {
        Self {
            shared,
            clock,
            head,
            unknown: None,
        }
    }

    pub(crate) async fn run(mut self, mut queue: mpsc::Receiver<Request>) {
        let max_group = self.shared.config.max_group_records.max(1);
        while let Some(first) = queue.recv().await {
            let mut pending = first.records.len();
            let mut group = vec![first];
            while pending < max_group {
                match queue.try_recv() {
                    Ok(next) => {
                        pending += next.records.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group).await;
        }
    }

    /// Commits a group, retrying the `Any` requests when another server wins the head.
    async fn commit(&mut self, mut group: Vec<Request>) {
        // `ExpectHead` requests beaten by an earlier request of the same group: answered
        // with the head once the group is settled.
        let mut beaten: Vec<(u64, Reply)> = Vec::new();
        let mut rounds = 0;
        while !group.is_empty() {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                let actual = self.head.seq;
                for req in group.drain(..) {
                    let expected = match req.condition {
                        AppendCondition::ExpectHead(expected) => expected,
                        AppendCondition::Any => actual,
                    };
                    self.answer(req.reply, Err(LogError::Conflict { expected, actual }));
                }
                break;
            }
            self.adopt_published_head();
            let mut client = match self.ready().await {
                Ok(client) => client,
                Err(e) => {
                    self.fail(&mut group, &e);
                    break;
                }
            };
            let statement = match self
                .shared
                .within("appending", client.prepare_cached(INSERT))
                .await
            {
                Ok(statement) => statement,
                Err(e) => {
                    self.fail(&mut group, &e);
                    break;
                }
            };
            // After a lost race: take the append lock, then read the head it protects.
            // A caller that decided on a head this writer has not seen yet (it read the
            // table directly, ahead of the tailer's notification) would be refused forever
            // on the stale head: read the head it speaks of first.
            if rounds == 1 && self.behind_a_caller(&group) {
                match self.shared.last_head(&**client).await {
                    Ok(db_head) if db_head.seq > self.head.seq => {
                        self.head = db_head;
                        self.shared.publish(db_head);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.fail(&mut group, &e);
                        break;
                    }
                }
            }
            let attempt = if rounds > 1 {
                self.attempt_locked(&mut client, &statement, &mut group, &mut beaten)
                    .await
            } else {
                let sealed = self.seal(&mut group, &mut beaten);
                let outcome = if sealed.is_empty() {
                    Outcome::Inserted
                } else {
                    self.insert(&**client, &statement, &sealed).await
                };
                Ok((sealed, outcome))
            };
            let (sealed, outcome) = match attempt {
                Ok(attempt) => attempt,
                Err(e) => {
                    self.fail(&mut group, &e);
                    break;
                }
            };
            if sealed.is_empty() {
                // Nothing to write (only empty batches or conflicts).
                for m in sealed.members {
                    self.answer_receipt(m, sealed.recorded_at);
                }
                break;
            }
            let outcome = match outcome {
                Outcome::Lost(e) => {
                    // The connection is suspect: never hand it back to the pool.
                    drop(deadpool_postgres::Object::take(client));
                    self.lost(&sealed, e).await
                }
                Outcome::LostRace => match self.shared.last_head(&**client).await {
                    Ok(db_head) if db_head.seq > sealed.base.seq => {
                        Counters::add(&self.shared.stats.lost_races, 1);
                        self.head = db_head;
                        self.shared.publish(db_head);
                        Outcome::LostRace
                    }
                    Ok(db_head) => Outcome::Failed(self.shared.storage(format!(
                        "appending at seq {}: the seq is taken, yet the table ends at seq {}",
                        sealed.base.seq + 1,
                        db_head.seq
                    ))),
                    Err(e) => Outcome::Failed(e),
                },
                other => other,
            };
            let Sealed {
                members,
                next,
                recorded_at,
                ..
            } = sealed;
            match outcome {
                Outcome::Inserted => {
                    let all: Vec<Record> = members
                        .iter()
                        .flat_map(|m| m.records.iter().cloned())
                        .collect();
                    self.committed(next, &all);
                    Counters::add(&self.shared.stats.transactions, 1);
                    for m in members {
                        self.answer_receipt(m, recorded_at);
                    }
                }
                Outcome::LostRace => {
                    let actual = self.head.seq;
                    for m in members {
                        match m.condition {
                            AppendCondition::ExpectHead(expected) => {
                                self.answer(m.reply, Err(LogError::Conflict { expected, actual }));
                            }
                            AppendCondition::Any => group.push(m.unseal()),
                        }
                    }
                }
                Outcome::Failed(e) | Outcome::Lost(e) => {
                    for m in members {
                        self.answer(m.reply, Err(e.clone()));
                    }
                }
            }
        }
        let actual = self.head.seq;
        for (expected, reply) in beaten {
            self.answer(reply, Err(LogError::Conflict { expected, actual }));
        }
    }

    /// Seals the group on this writer's head. `ExpectHead` requests on another head are
    /// answered `Conflict` at once; those beaten by an earlier one in the group wait in
    /// `beaten`.
    fn seal(&mut self, group: &mut Vec<Request>, beaten: &mut Vec<(u64, Reply)>) -> Sealed {
        let base = self.head;
        let recorded_at = self.clock.now_unix_nanos();
        let mut next = base;
        let mut members = Vec::with_capacity(group.len());
        for req in group.drain(..) {
            if let AppendCondition::ExpectHead(expected) = req.condition {
                if expected != base.seq {
                    let actual = base.seq;
                    self.answer(req.reply, Err(LogError::Conflict { expected, actual }));
                    continue;
                }
                if next.seq != base.seq {
                    beaten.push((expected, req.reply));
                    continue;
                }
            }
            let mut records = Vec::with_capacity(req.records.len());
            for new in req.records {
                let record = Record::seal(new, next.seq + 1, recorded_at, next.hash);
                next = Head {
                    seq: record.seq,
                    hash: record.hash,
                };
                records.push(record);
            }
            members.push(Member {
                records,
                condition: req.condition,
                reply: req.reply,
            });
        }
        Sealed {
            base,
            next,
            recorded_at,
            members,
        }
    }

    /// One attempt under the exclusive append lock: no other server's statement can commit
    /// between reading the head and inserting.
    async fn attempt_locked(
        &mut self,
        client: &mut deadpool_postgres::Client,
        statement: &tokio_postgres::Statement,
        group: &mut Vec<Request>,
        beaten: &mut Vec<(u64, Reply)>,
    ) -> Result<(Sealed, Outcome), LogError> {
        let what = "appending under the append lock";
        let tx = self.shared.within(what, client.transaction()).await?;
        self.shared
            .within(
                what,
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK]),
            )
            .await?;
        let head = self.shared.last_head(&*tx).await?;
        if head.seq > self.head.seq {
            self.head = head;
            self.shared.publish(head);
        }
        let sealed = self.seal(group, beaten);
        if sealed.is_empty() {
            return Ok((sealed, Outcome::Inserted));
        }
        let outcome = match self.insert(&*tx, statement, &sealed).await {
            Outcome::Inserted => {
                match tokio::time::timeout(self.shared.op_timeout(), tx.commit()).await {
                    Ok(Ok(())) => Outcome::Inserted,
                    Ok(Err(e)) if e.as_db_error().is_some() => {
                        Outcome::Failed(self.shared.pg_error(what, &e))
                    }
                    Ok(Err(e)) => Outcome::Lost(self.shared.pg_error(what, &e)),
                    Err(_) => Outcome::Lost(self.shared.unavailable(format!(
                        "{what}: no answer within {:?}",
                        self.shared.op_timeout()
                    ))),
                }
            }
            // Dropping the transaction rolls it back.
            other => other,
        };
        Ok((sealed, outcome))
    }

    fn fail(&self, group: &mut Vec<Request>, e: &LogError) {
        for req in group.drain(..) {
            self.answer(req.reply, Err(e.clone()));
        }
    }

    /// A head the tailer (or a reader) found past ours: records another server committed.
    /// Whether a request expects a head beyond the one this writer knows.
    fn behind_a_caller(&self, group: &[Request]) -> bool {
        group.iter().any(|r| {
            matches!(r.condition, AppendCondition::ExpectHead(expected) if expected > self.head.seq)
        })
    }

    fn adopt_published_head(&mut self) {
        if self.unknown.is_some() {
            return;
        }
        let published = *self.shared.head.borrow();
        if published.seq > self.head.seq {
            self.head = published;
        }
    }

    /// A connection, with any unknown outcome settled first.
    async fn ready(&mut self) -> Result<deadpool_postgres::Client, LogError> {
        let client = self.shared.client().await?;
        if self.unknown.is_some() {
            self.settle(&client).await?;
            self.adopt_published_head();
        }
        Ok(client)
    }

    /// Writes the sealed records in one statement, on `conn` (the connection itself, or a
    /// transaction on it).
    async fn insert(
        &self,
        conn: &impl tokio_postgres::GenericClient,
        statement: &tokio_postgres::Statement,
        sealed: &Sealed,
    ) -> Outcome {
        let what = "appending";
        let (base, members) = (sealed.base, &sealed.members);
        let records: Vec<&Record> = members.iter().flat_map(|m| m.records.iter()).collect();
        let encoded: Vec<Vec<u8>> = records.iter().map(|r| r.encode()).collect();
        let seqs: Vec<i64> = records.iter().map(|r| to_sql_seq(r.seq)).collect();
        let hashes: Vec<&[u8]> = records.iter().map(|r| &r.hash.0[..]).collect();
        let prevs: Vec<&[u8]> = records.iter().map(|r| &r.prev_hash.0[..]).collect();
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        let times: Vec<i64> = records.iter().map(|r| r.recorded_at).collect();
        let bodies: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let base_seq = to_sql_seq(base.seq);
        let base_hash = &base.hash.0[..];
        let last = records.last().map_or(base.seq, |r| r.seq).to_string();
        let sent = tokio::time::timeout(
            self.shared.op_timeout(),
            conn.query_one(
                statement,
                &[
                    &seqs,
                    &hashes,
                    &prevs,
                    &kinds,
                    &times,
                    &bodies,
                    &base_seq,
                    &base_hash,
                    &last,
                    &APPEND_LOCK,
                ],
            ),
        )
        .await;
        match sent {
            Ok(Ok(row)) => match row.try_get::<_, i64>(0) {
                Ok(n) if usize::try_from(n).ok() == Some(records.len()) => Outcome::Inserted,
                Ok(_) => Outcome::Failed(self.diverged(conn, base).await),
                Err(e) => Outcome::Lost(self.shared.pg_error(what, &e)),
            },
            Ok(Err(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Outcome::LostRace,
            // The server answered with an error: the statement, its own transaction, rolled
            // back.
            Ok(Err(e)) if e.as_db_error().is_some() => {
                Outcome::Failed(self.shared.pg_error(what, &e))
            }
            Ok(Err(e)) => Outcome::Lost(self.shared.pg_error(what, &e)),
            Err(_) => Outcome::Lost(self.shared.unavailable(format!(
                "{what}: no answer within {:?}",
                self.shared.op_timeout()
            ))),
        }
    }

    /// The head check failed: the row this server's head names is not in the table.
    async fn diverged(&self, client: &impl tokio_postgres::GenericClient, base: Head) -> LogError {
        let found = match self
            .shared
            .within(
                "checking the head",
                client.query_opt(
                    "SELECT hash FROM tessera_log WHERE seq = $1",
                    &[&to_sql_seq(base.seq)],
                ),
            )
            .await
        {
            Ok(Some(row)) => match row.try_get::<_, &[u8]>(0) {
                Ok(hash) => format!("has hash {}", digest(hash)),
                Err(_) => "has an unreadable hash".into(),
            },
            Ok(None) => "has no such row".into(),
            Err(e) => return e,
        };
        self.shared.storage(format!(
            "this server's head is seq {} with hash {}, but the table {found}: the database was \
             restored from an older backup, replaced or altered; refusing to append (check \
             the database, then restart this server; `events verify` names damage)",
            base.seq, base.hash
        ))
    }

    fn committed(&mut self, head: Head, records: &[Record]) {
        self.head = head;
        self.shared.remember(records);
        self.shared.publish(head);
    }

    fn answer_receipt(&self, member: Member, recorded_at: i64) {
        let count = member.records.len() as u64;
        let receipt = match (member.records.first(), member.records.last()) {
            (Some(first), Some(last)) => AppendReceipt {
                first_seq: first.seq,
                last_seq: last.seq,
                recorded_at,
            },
            _ => AppendReceipt {
                first_seq: self.head.seq + 1,
                last_seq: self.head.seq,
                recorded_at,
            },
        };
        Counters::add(&self.shared.stats.records, count);
        self.answer(member.reply, Ok(receipt));
    }

    fn answer(&self, reply: Reply, outcome: Result<AppendReceipt, LogError>) {
        let stats = &self.shared.stats;
        match &outcome {
            Ok(_) => Counters::add(&stats.appends, 1),
            Err(LogError::Conflict { .. }) => Counters::add(&stats.conflicts, 1),
            Err(LogError::Unavailable { .. }) => Counters::add(&stats.unavailable, 1),
            Err(_) => {}
        }
        // An appender that gave up waiting still had its records committed (or not): the
        // log is right either way.
        let _ = reply.send(outcome);
    }
}
