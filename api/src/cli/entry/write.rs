//! `entry create | update | delete`: one entry from flags, or a batch from `--data` /
//! `--file`, sent in one batch call. Output as SPIRE's: each entry (or deleted id) that
//! succeeded; with `--output json`, every result under its proto names. A batch with a failed
//! item exits 1 and names each failed item by its index in the file.

use std::io::Write;

use serde_json::{json, Value};
use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::{
    BatchCreateEntryRequest, BatchDeleteEntryRequest, BatchUpdateEntryRequest,
};
use tessera_proto::spire::api::types;

use super::data::{read_entries, read_ids, Purpose};
use super::wire::{entry_id, given_flags, to_wire};
use super::{CreateArgs, DeleteArgs, UpdateArgs};
use crate::cli::common::{code_name, connect, json, line, rpc, CliError, OutputFormat};
use crate::cli::render::{entry_json, entry_pretty, id_string};

/// `--data` replaces the entry flags; refuses both together.
fn refuse_flags_with_data(
    verb: &'static str,
    flags: Vec<&'static str>,
    entry_id: bool,
) -> Result<(), CliError> {
    let mut flags = flags;
    if entry_id {
        flags.insert(0, "--entryID");
    }
    if flags.is_empty() {
        return Ok(());
    }
    Err(CliError::Usage {
        verb,
        message: format!(
            "--data cannot be used with {}: put those fields in the file's entries instead, or drop --data",
            flags.join(", ")
        ),
    })
}

/// A result's code and message (a missing status is the server's fault).
fn outcome(status: Option<&types::Status>) -> (i32, String) {
    match status {
        Some(s) => (s.code, s.message.clone()),
        None => (
            tonic::Code::Unknown as i32,
            "the server returned no status".into(),
        ),
    }
}

fn status_json(code: i32, message: &str) -> Value {
    let message = if code == 0 { "OK" } else { message };
    json!({ "code": code, "message": message })
}

/// Prints a create/update batch's results; fails naming each failed item. `single`: the
/// flag form, whose failure is the item's status alone (`entry create: AlreadyExists: ...`).
fn report(
    verb: &'static str,
    what: &str,
    out: &mut dyn Write,
    output: OutputFormat,
    sent: &[types::Entry],
    results: Vec<(Option<types::Status>, Option<types::Entry>)>,
    single: bool,
) -> Result<(), CliError> {
    if results.len() != sent.len() {
        return Err(CliError::Failed {
            verb,
            message: format!(
                "the server returned {} results for {} entries",
                results.len(),
                sent.len()
            ),
        });
    }
    let mut failed = Vec::new();
    let mut shown = Vec::new();
    for (i, ((status, entry), asked)) in results.into_iter().zip(sent).enumerate() {
        let (code, message) = outcome(status.as_ref());
        // As SPIRE: a failed item is shown with the entry that was sent.
        let entry = match entry {
            Some(e) if code == 0 => e,
            _ => asked.clone(),
        };
        if code != 0 {
            failed.push((
                i,
                code,
                message.clone(),
                id_string(entry.spiffe_id.as_ref()),
            ));
        }
        shown.push((code, message, entry));
    }
    match output {
        OutputFormat::Json => {
            let results: Vec<Value> = shown
                .iter()
                .map(|(code, msg, e)| json!({ "status": status_json(*code, msg), "entry": entry_json(e) }))
                .collect();
            if !single || failed.is_empty() {
                json(out, &json!({ "results": results }));
            }
        }
        OutputFormat::Pretty => {
            for (_, _, e) in shown.iter().filter(|(code, _, _)| *code == 0) {
                entry_pretty(out, e);
            }
        }
    }
    failures(verb, what, "entries", sent.len(), failed, single)
}

fn failures(
    verb: &'static str,
    what: &str,
    list: &str,
    total: usize,
    failed: Vec<(usize, i32, String, String)>,
    single: bool,
) -> Result<(), CliError> {
    if failed.is_empty() {
        return Ok(());
    }
    let item =
        |code: i32, message: &str| format!("{}: {message}", code_name(tonic::Code::from_i32(code)));
    if single {
        let (_, code, message, _) = &failed[0];
        return Err(CliError::Failed {
            verb,
            message: item(*code, message),
        });
    }
    let mut message = format!("failed to {what} {} of {total} entries:", failed.len());
    for (i, code, msg, label) in &failed {
        message.push_str(&format!("\n  {list}[{i}] ({label}): {}", item(*code, msg)));
    }
    Err(CliError::Failed { verb, message })
}

pub(super) async fn create(a: CreateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "entry create";
    let (entries, single) = match &a.data {
        Some(path) => {
            refuse_flags_with_data(VERB, given_flags(&a.fields), a.entry_id.is_some())?;
            (read_entries(VERB, path, Purpose::Create)?, false)
        }
        None => (vec![create_from_flags(&a)?], true),
    };
    let mut client = EntryClient::new(connect(VERB, &a.client.socket_path).await?);
    let resp = client
        .batch_create_entry(BatchCreateEntryRequest {
            entries: entries.clone(),
            output_mask: None,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    let results = resp
        .results
        .into_iter()
        .map(|r| (r.status, r.entry))
        .collect();
    report(
        VERB,
        "create",
        out,
        a.client.output,
        &entries,
        results,
        single,
    )
}

fn create_from_flags(a: &CreateArgs) -> Result<types::Entry, CliError> {
    const VERB: &str = "entry create";
    let (mut entry, _) = to_wire(VERB, &a.fields)?;
    if entry.spiffe_id.is_none() {
        return Err(CliError::Usage {
            verb: VERB,
            message: "--spiffeID is required (or --data FILE for a batch)".into(),
        });
    }
    if entry.parent_id.is_none() {
        return Err(CliError::Usage {
            verb: VERB,
            message: "--parentID is required (or --node for a node alias)".into(),
        });
    }
    if entry.selectors.is_empty() {
        return Err(CliError::Usage {
            verb: VERB,
            message: "at least one --selector is required (e.g. --selector unix:uid:1000)".into(),
        });
    }
    if let Some(id) = &a.entry_id {
        entry.id = entry_id(VERB, id)?.as_str().to_owned();
    }
    Ok(entry)
}

pub(super) async fn update(a: UpdateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "entry update";
    // From a file, every field is replaced (no mask), as SPIRE's update does.
    let (entries, mask, single) = match &a.data {
        Some(path) => {
            refuse_flags_with_data(VERB, given_flags(&a.fields), a.entry_id.is_some())?;
            (read_entries(VERB, path, Purpose::Update)?, None, false)
        }
        None => {
            let id = a.entry_id.as_deref().ok_or(CliError::Usage {
                verb: VERB,
                message: "--entryID is required (or --data FILE for a batch)".into(),
            })?;
            let id = entry_id(VERB, id)?;
            let (mut entry, mask) = to_wire(VERB, &a.fields)?;
            if mask == types::EntryMask::default() {
                return Err(CliError::Usage {
                    verb: VERB,
                    message: "nothing to update: give at least one field flag (--spiffeID, --selector, --x509SVIDTTL, ...)".into(),
                });
            }
            entry.id = id.as_str().to_owned();
            (vec![entry], Some(mask), true)
        }
    };
    let mut client = EntryClient::new(connect(VERB, &a.client.socket_path).await?);
    let resp = client
        .batch_update_entry(BatchUpdateEntryRequest {
            entries: entries.clone(),
            input_mask: mask,
            output_mask: None,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    let results = resp
        .results
        .into_iter()
        .map(|r| (r.status, r.entry))
        .collect();
    report(
        VERB,
        "update",
        out,
        a.client.output,
        &entries,
        results,
        single,
    )
}

pub(super) async fn delete(a: DeleteArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "entry delete";
    let (ids, single) =
        match (&a.file, &a.entry_id) {
            (Some(_), Some(_)) => return Err(CliError::Usage {
                verb: VERB,
                message:
                    "--file cannot be used with --entryID: list the id in the file, or drop --file"
                        .into(),
            }),
            (Some(path), None) => (read_ids(VERB, path)?, false),
            (None, Some(id)) => (vec![entry_id(VERB, id)?.as_str().to_owned()], true),
            (None, None) => {
                return Err(CliError::Usage {
                    verb: VERB,
                    message: "--entryID is required (or --file FILE with {\"ids\": [...]})".into(),
                })
            }
        };
    let mut client = EntryClient::new(connect(VERB, &a.client.socket_path).await?);
    let resp = client
        .batch_delete_entry(BatchDeleteEntryRequest { ids: ids.clone() })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    if resp.results.len() != ids.len() {
        return Err(CliError::Failed {
            verb: VERB,
            message: format!(
                "the server returned {} results for {} ids",
                resp.results.len(),
                ids.len()
            ),
        });
    }
    let mut failed = Vec::new();
    let mut results = Vec::new();
    let mut deleted = 0usize;
    for (i, (r, asked)) in resp.results.into_iter().zip(&ids).enumerate() {
        let (code, message) = outcome(r.status.as_ref());
        if code == 0 {
            deleted += 1;
            if a.client.output == OutputFormat::Pretty {
                line(out, format!("Deleted entry with ID: {asked}"));
            }
        } else {
            failed.push((i, code, message.clone(), asked.clone()));
        }
        results.push(json!({ "status": status_json(code, &message), "id": asked }));
    }
    match a.client.output {
        OutputFormat::Json if !single || failed.is_empty() => {
            json(out, &json!({ "results": results }))
        }
        OutputFormat::Pretty if !single => {
            line(out, format!("Deleted {deleted} entries successfully"))
        }
        _ => {}
    }
    failures(VERB, "delete", "ids", ids.len(), failed, single)
}
