//! `tessera.eventlog.v1.EventLog`: read and audit the log. Read-only.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tessera_eventlog::{Digest32, EventLog, Record};
use tessera_proto::tessera::eventlog::v1::{
    event_log_server, GetRequest, HeadRequest, HeadResponse, Record as PbRecord, TailRequest,
    VerifyRequest, VerifyResponse,
};
use tonic::{Request, Response, Status};

use super::AdminContext;
use crate::convert::{record_to_proto, ConvertError};
use crate::status::{check_limit, status, ApiError};

/// Records read from the log at a time.
const CHUNK: usize = 1_024;

/// The EventLog service.
#[derive(Debug, Clone)]
pub struct EventLogService {
    ctx: Arc<AdminContext>,
}

impl EventLogService {
    /// Over the shared context.
    pub fn new(ctx: Arc<AdminContext>) -> Self {
        Self { ctx }
    }

    fn log(&self) -> Arc<dyn EventLog> {
        self.ctx.server.log.raw().clone()
    }
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<PbRecord, Status>> + Send + 'static>>;

/// Committed records from `from` to `to` inclusive, read chunk by chunk.
fn range(
    log: Arc<dyn EventLog>,
    from: u64,
    to: u64,
) -> impl Stream<Item = Result<Record, Status>> + Send {
    futures::stream::unfold((log, from, false), move |(log, next, failed)| async move {
        if failed || next > to {
            return None;
        }
        let want = usize::try_from(to - next + 1).unwrap_or(CHUNK).min(CHUNK);
        match log.read(next, want).await {
            Ok(records) if records.is_empty() => None,
            Ok(records) => {
                let after = records.last().map_or(to + 1, |r| r.seq + 1);
                Some((
                    futures::stream::iter(records.into_iter().map(Ok)).left_stream(),
                    (log, after, false),
                ))
            }
            Err(e) => Some((
                futures::stream::iter([Err(status(e))]).right_stream(),
                (log, next, true),
            )),
        }
    })
    .flatten()
}

#[tonic::async_trait]
impl event_log_server::EventLog for EventLogService {
    type TailStream = RecordStream;

    async fn tail(&self, request: Request<TailRequest>) -> Result<Response<RecordStream>, Status> {
        let req = request.into_inner();
        let limits = &self.ctx.limits;
        check_limit(
            "the number of kinds in the filter",
            req.kinds.len(),
            limits.max_event_kinds,
            "max_event_kinds",
        )
        .map_err(status)?;
        let permit = self
            .ctx
            .tail_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                status(ApiError::Busy {
                    what: "open EventLog.Tail streams",
                    max: limits.max_tail_streams,
                    key: "max_tail_streams",
                })
            })?;
        let log = self.log();
        let from = req.from_seq.max(1);
        let records: Pin<Box<dyn Stream<Item = Result<Record, Status>> + Send>> = if req.follow {
            Box::pin(log.subscribe(from).map(|r| r.map_err(status)))
        } else {
            let head = log.head().seq;
            Box::pin(range(log, from, head))
        };
        let kinds = req.kinds;
        let limit = usize::try_from(req.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let stream = records
            .filter(move |r| {
                let keep = match r {
                    Ok(r) => kinds.is_empty() || kinds.iter().any(|k| k == &r.kind),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .take(limit)
            .map(move |r| {
                // The permit lives as long as the stream.
                let _held = &permit;
                r.map(|r| record_to_proto(&r))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<PbRecord>, Status> {
        let seq = request.into_inner().seq;
        if seq == 0 {
            return Err(status(ConvertError::Missing { field: "seq" }));
        }
        let log = self.log();
        let records = log.read(seq, 1).await.map_err(status)?;
        match records.first() {
            Some(r) if r.seq == seq => Ok(Response::new(record_to_proto(r))),
            _ => Err(status(ApiError::NotFound(format!(
                "no record at seq {seq}; the log's head is seq {}",
                log.head().seq
            )))),
        }
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let req = request.into_inner();
        let log = self.log();
        let head = log.head().seq;
        let from = req.from_seq.max(1);
        let to = if req.to_seq == 0 { head } else { req.to_seq };
        if to > head {
            return Err(status(ConvertError::Invalid {
                field: "to_seq",
                value: to.to_string(),
                rule: format!("must not be past the log's head (seq {head})"),
            }));
        }
        if from > to && to > 0 {
            return Err(status(ConvertError::Invalid {
                field: "from_seq",
                value: from.to_string(),
                rule: format!("must not be after to_seq ({to})"),
            }));
        }
        if from == 1 && to == head {
            let report = log.verify().await.map_err(status)?;
            return Ok(Response::new(VerifyResponse {
                ok: report.is_ok(),
                records_checked: report.records_checked,
                first_bad_seq: report.fault.as_ref().map_or(0, |f| f.seq),
                reason: report
                    .fault
                    .as_ref()
                    .map(|f| f.fault.to_string())
                    .unwrap_or_default(),
                last_good_hash: if report.head.seq == 0 {
                    vec![]
                } else {
                    report.head.hash.0.to_vec()
                },
            }));
        }
        Ok(Response::new(verify_range(log, from, to).await?))
    }

    async fn head(&self, _request: Request<HeadRequest>) -> Result<Response<HeadResponse>, Status> {
        let log = self.log();
        let head = log.head();
        if head.seq == 0 {
            return Ok(Response::new(HeadResponse::default()));
        }
        let recorded_at = log
            .read(head.seq, 1)
            .await
            .map_err(status)?
            .first()
            .map(|r| crate::convert::timestamp(r.recorded_at));
        Ok(Response::new(HeadResponse {
            seq: head.seq,
            hash: head.hash.0.to_vec(),
            recorded_at,
        }))
    }
}

/// Walks `from..=to`, anchored on the stored hash of `from - 1`.
async fn verify_range(
    log: Arc<dyn EventLog>,
    from: u64,
    to: u64,
) -> Result<VerifyResponse, Status> {
    let mut prev = if from > 1 {
        match log.read(from - 1, 1).await.map_err(status)?.first() {
            Some(r) if r.seq == from - 1 => r.hash,
            _ => {
                return Err(status(ApiError::NotFound(format!(
                    "no record at seq {}",
                    from - 1
                ))))
            }
        }
    } else {
        Digest32::GENESIS
    };
    let mut expected = from;
    let mut checked = 0u64;
    let mut last_good = if from > 1 { Some(prev) } else { None };
    let mut records = Box::pin(range(log, from, to));
    let fail =
        |seq: u64, reason: String, checked: u64, last_good: Option<Digest32>| VerifyResponse {
            ok: false,
            records_checked: checked,
            first_bad_seq: seq,
            reason,
            last_good_hash: last_good.map(|h| h.0.to_vec()).unwrap_or_default(),
        };
    while let Some(r) = records.next().await {
        let r = r?;
        if r.seq != expected {
            return Ok(fail(
                expected,
                format!("expected seq {expected}, found seq {}", r.seq),
                checked,
                last_good,
            ));
        }
        if r.prev_hash != prev {
            return Ok(fail(
                r.seq,
                format!("prev_hash does not match the hash of seq {}", r.seq - 1),
                checked,
                last_good,
            ));
        }
        if !r.is_intact() {
            return Ok(fail(
                r.seq,
                "stored hash differs from the recomputed one".into(),
                checked,
                last_good,
            ));
        }
        prev = r.hash;
        last_good = Some(r.hash);
        checked += 1;
        expected += 1;
    }
    if expected <= to {
        return Ok(fail(
            expected,
            format!("record seq {expected} is missing"),
            checked,
            last_good,
        ));
    }
    Ok(VerifyResponse {
        ok: true,
        records_checked: checked,
        first_bad_seq: 0,
        reason: String::new(),
        last_good_hash: last_good.map(|h| h.0.to_vec()).unwrap_or_default(),
    })
}
