//! `events tail`: streams records from the server, filters them (filter.rs says where and
//! why), and prints one summary line or one JSON object per record.

use std::io::Write;

use tessera_identity::EntryId;
use tessera_proto::tessera::eventlog::v1::event_log_client::EventLogClient;
use tessera_proto::tessera::eventlog::v1::TailRequest;

use super::filter::{decode, EntryNames, Filter, Point};
use super::summary;
use super::TailArgs;
use crate::cli::common::{connect, line, rpc, spiffe_id, CliError, OutputFormat};

const VERB: &str = "events tail";

/// The filters from the flags.
fn filter(a: &TailArgs) -> Result<Filter, CliError> {
    let entry_id = a
        .entry_id
        .as_deref()
        .map(|v| {
            EntryId::new(v).map_err(|e| CliError::Flag {
                verb: VERB,
                flag: "--entryID",
                value: v.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let since = match a.since.as_deref() {
        Some(v) => Some(Point::parse(VERB, "--since", v)?),
        None if a.from_seq > 1 => Some(Point::Seq(a.from_seq)),
        None => None,
    };
    Ok(Filter {
        kinds: a.kinds.clone(),
        entry_id,
        spiffe_id: a
            .spiffe_id
            .as_deref()
            .map(|v| spiffe_id(VERB, "--spiffeID", v))
            .transpose()?,
        agent_id: a
            .agent_id
            .as_deref()
            .map(|v| spiffe_id(VERB, "--agentID", v))
            .transpose()?,
        since,
        until: a
            .until
            .as_deref()
            .map(|v| Point::parse(VERB, "--until", v))
            .transpose()?,
    })
}

/// Runs `events tail`.
pub async fn run(a: TailArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let filter = filter(&a)?;
    // The server filters what it can without a fold: the kinds, and a start seq.
    let (from_seq, kinds) = if filter.needs_fold() {
        (1, Vec::new())
    } else {
        let from = match filter.since {
            Some(Point::Seq(s)) => s,
            _ => 1,
        };
        (from, filter.kinds.clone())
    };
    let mut client = EventLogClient::new(connect(VERB, &a.client.socket_path).await?);
    let mut stream = client
        .tail(TailRequest {
            from_seq,
            kinds,
            limit: 0,
            follow: a.follow,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    let mut names = EntryNames::default();
    let mut printed = 0u64;
    while let Some(record) = stream.message().await.map_err(rpc(VERB))? {
        let event = decode(&record);
        let about = event.as_ref().map(|e| names.apply(e)).unwrap_or_default();
        if filter.matches(&record, &about) {
            match a.client.output {
                // One JSON object per line, so a follower can be piped to `jq` or a SIEM.
                OutputFormat::Json => {
                    line(out, summary::json_line(&record, event.as_ref(), &about))
                }
                OutputFormat::Pretty => line(out, summary::line(&record, event.as_ref(), &about)),
            }
            let _ = out.flush();
            printed += 1;
            if a.limit > 0 && printed >= a.limit {
                break;
            }
        }
        if filter.finished_after(&record, a.follow) {
            break;
        }
    }
    Ok(())
}
