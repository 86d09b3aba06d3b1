//! `tessera.eventlog.v1.EventLog`: read and audit the log. Read-only.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tessera_actors::server::checkpoint::scan;
use tessera_eventlog::{Digest32, EventLog, Record};
use tessera_proto::tessera::eventlog::v1::verify_response::Fault;
use tessera_proto::tessera::eventlog::v1::{
    event_log_server, Checkpoint, GetRequest, HeadRequest, HeadResponse, LatestCheckpointRequest,
    Record as PbRecord, TailRequest, VerifyRequest, VerifyResponse,
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
        if req.anchor_seq > 0 && (from > 1 || to < head) {
            // The anchor's record is only proved by re-hashing the chain from seq 1 through
            // it: a narrower range would trust stored hashes it did not recompute.
            return Err(status(ConvertError::Invalid {
                field: "from_seq",
                value: format!("{from}..{to}"),
                rule: "an anchor is checked against the whole log; drop --fromSeq/--toSeq".into(),
            }));
        }
        if req.anchor_seq > 0 {
            if let Some(failed) =
                check_anchor(log.as_ref(), head, req.anchor_seq, &req.anchor_hash).await?
            {
                return Ok(Response::new(failed));
            }
        }
        let mut response = if from == 1 && to == head {
            let report = log.verify().await.map_err(status)?;
            VerifyResponse {
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
                ..VerifyResponse::default()
            }
        } else {
            verify_range(log.clone(), from, to).await?
        };
        if !response.ok {
            response.set_fault(Fault::Chain);
            return Ok(Response::new(response));
        }
        let trust_domain = &self.ctx.server.settings.trust_domain;
        let audit = scan::audit(log.as_ref(), trust_domain, from, to)
            .await
            .map_err(status)?;
        response.checkpoints_checked = audit.checked;
        if let Some((seq, reason)) = audit.first_bad {
            response.ok = false;
            response.first_bad_seq = seq;
            response.reason = format!("signed checkpoint in record {seq}: {reason}");
            response.set_fault(Fault::Checkpoint);
        }
        Ok(Response::new(response))
    }

    async fn latest_checkpoint(
        &self,
        _request: Request<LatestCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, Status> {
        let log = self.log();
        let head = log.head().seq;
        let found = scan::find_latest(log.as_ref(), head, None)
            .await
            .map_err(status)?
            .ok_or_else(|| {
                status(ApiError::NotFound(format!(
                    "the log (head seq {head}) has no signed checkpoint yet; the server signs \
                     one once enough records or time have passed since the last (see the \
                     [audit] checkpoint settings), as long as it has an active JWT key"
                )))
            })?;
        // Handed out as an anchor to keep: checked first (signature, key from the log, the
        // hash it covers), so a forged or damaged record is never passed on as one.
        let trust_domain = &self.ctx.server.settings.trust_domain;
        let audit = scan::audit(
            log.as_ref(),
            trust_domain,
            found.record_seq,
            found.record_seq,
        )
        .await
        .map_err(status)?;
        if let Some((seq, reason)) = audit.first_bad {
            return Err(Status::data_loss(format!(
                "the latest signed checkpoint (record {seq}) does not verify: {reason}; run                  `events verify` and investigate before keeping any anchor"
            )));
        }
        let c = found.checkpoint;
        Ok(Response::new(Checkpoint {
            record_seq: found.record_seq,
            recorded_at: Some(crate::convert::timestamp(found.recorded_at)),
            trust_domain: self.ctx.server.settings.trust_domain.to_string(),
            server_id: c.server_id.unwrap_or_default(),
            seq: c.seq,
            hash: c.hash,
            signed_at: c.signed_at,
            kid: c.kid,
            public_key_der: c.public_key_der,
            signature: c.signature,
        }))
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

/// The failure, if the log no longer holds the anchored record (`anchor_seq`, `anchor_hash`).
async fn check_anchor(
    log: &dyn EventLog,
    head: u64,
    anchor_seq: u64,
    anchor_hash: &[u8],
) -> Result<Option<VerifyResponse>, Status> {
    if anchor_hash.len() != 32 {
        return Err(status(ConvertError::Invalid {
            field: "anchor_hash",
            value: hex::encode(anchor_hash),
            rule: "must be the 32-byte SHA-256 of the anchored record".into(),
        }));
    }
    let failed = |first_bad_seq, reason, fault| {
        let mut r = VerifyResponse {
            ok: false,
            first_bad_seq,
            reason,
            ..VerifyResponse::default()
        };
        r.set_fault(fault);
        Some(r)
    };
    if head < anchor_seq {
        return Ok(failed(
            head + 1,
            format!(
                "log truncated: the anchor covers seq {anchor_seq} but the log ends at seq {head}"
            ),
            Fault::Truncated,
        ));
    }
    let found = log.read(anchor_seq, 1).await.map_err(status)?;
    Ok(match found.first() {
        Some(r) if r.seq == anchor_seq && r.hash.0[..] == *anchor_hash => None,
        Some(r) if r.seq == anchor_seq => failed(
            anchor_seq,
            format!(
                "log rewritten at or before seq {anchor_seq}: the anchor has hash {}, the log's \
                 record there has hash {}",
                hex::encode(anchor_hash),
                r.hash
            ),
            Fault::Rewritten,
        ),
        _ => failed(
            anchor_seq,
            format!(
                "log truncated: the anchor covers seq {anchor_seq}, which the log no longer has"
            ),
            Fault::Truncated,
        ),
    })
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
            ..VerifyResponse::default()
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
        ..VerifyResponse::default()
    })
}
