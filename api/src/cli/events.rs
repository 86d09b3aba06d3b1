//! `events tail|show|verify|who|checkpoint`: read and audit the event log.
//!
//! `tail` filters and summarises records (filter.rs, summary.rs, tail.rs); `who` replays the
//! log to say which entries granted an identity to which agents, and when (who.rs);
//! `checkpoint` saves the latest signed checkpoint as an anchor, which `verify --anchor`
//! checks the log against (checkpoint.rs).

mod checkpoint;
mod filter;
mod summary;
mod tail;
mod who;

use std::io::Write;

use clap::{Args, Subcommand};
use tessera_proto::tessera::eventlog::v1::event_log_client::EventLogClient;
use tessera_proto::tessera::eventlog::v1::GetRequest;

use super::common::{connect, json, line, rpc, CliError, ClientArgs, OutputFormat};
use super::render::record_json;

/// `events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Prints records from a seq on (all by default), one line each (`seq time kind summary`),
    /// filtered by kind, entry, SPIFFE ID, agent and seq or time; with --follow, keeps
    /// printing new ones.
    Tail(TailArgs),
    /// Prints one record.
    Show(ShowArgs),
    /// Recomputes the hash chain, checks every signed checkpoint, and reports the first
    /// record that does not match; with --anchor, also that the log still holds the anchor.
    Verify(VerifyArgs),
    /// Replays the log: which entries granted a SPIFFE ID to which agents, over which
    /// intervals, with the seqs that opened and closed each grant.
    Who(WhoArgs),
    /// Prints the latest signed checkpoint of the log; with --output json, as an anchor
    /// document to keep outside the server for `events verify --anchor`.
    Checkpoint(CheckpointArgs),
}

/// `events checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `events tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// First seq to print (same as --since SEQ).
    #[arg(
        long = "fromSeq",
        visible_alias = "from-seq",
        default_value_t = 1,
        conflicts_with = "since"
    )]
    pub from_seq: u64,
    /// Only records of this kind (e.g. EntryCreated); repeatable.
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Only records about this entry (created, updated, deleted, expired).
    #[arg(long = "entryID", visible_alias = "entry-id")]
    pub entry_id: Option<String>,
    /// Only records about this SPIFFE ID: entries with it (their deletions included: the log
    /// is replayed from seq 1 to know which ids they had), the agent with it, join tokens
    /// aliasing it.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: Option<String>,
    /// Only records about this agent (attested, renewed, evicted, banned, token used).
    #[arg(long = "agentID", visible_alias = "agent-id")]
    pub agent_id: Option<String>,
    /// Only records from this point on: a seq (42) or an RFC 3339 time.
    #[arg(long = "since")]
    pub since: Option<String>,
    /// Only records up to this point (inclusive): a seq (42) or an RFC 3339 time.
    #[arg(long = "until")]
    pub until: Option<String>,
    /// Stop after printing this many records (0: no limit).
    #[arg(long = "limit", default_value_t = 0)]
    pub limit: u64,
    /// Keep the stream open and print records as they commit (until Ctrl-C, --limit or
    /// --until).
    #[arg(long = "follow")]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `events who`.
#[derive(Debug, Args)]
pub struct WhoArgs {
    /// The identity to account for.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: String,
    /// Only grants that held at this point: a seq (42) or an RFC 3339 time.
    #[arg(long = "at", conflicts_with_all = ["since", "until"])]
    pub at: Option<String>,
    /// Only grants that held at some point from here on: a seq or an RFC 3339 time.
    #[arg(long = "since")]
    pub since: Option<String>,
    /// Only grants that held at some point up to here: a seq or an RFC 3339 time.
    #[arg(long = "until")]
    pub until: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `events show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The record's seq.
    #[arg(long = "seq")]
    pub seq: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `events verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// First record to check (1: the start).
    #[arg(long = "fromSeq", visible_alias = "from-seq", default_value_t = 1)]
    pub from_seq: u64,
    /// Last record to check (0: the head).
    #[arg(long = "toSeq", visible_alias = "to-seq", default_value_t = 0)]
    pub to_seq: u64,
    /// An anchor saved by `events checkpoint --output json`: its signature is checked, then
    /// that the log still has the anchored record (not truncated before it, not rewritten
    /// at or before it).
    #[arg(long = "anchor")]
    pub anchor: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs an `events` verb.
pub async fn run(cmd: EventsCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        EventsCommand::Tail(a) => tail::run(a, out).await,
        EventsCommand::Show(a) => show(a, out).await,
        EventsCommand::Verify(a) => checkpoint::verify(a, out).await,
        EventsCommand::Who(a) => who::run(a, out).await,
        EventsCommand::Checkpoint(a) => checkpoint::latest(a, out).await,
    }
}

async fn show(a: ShowArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "events show";
    let mut client = EventLogClient::new(connect(VERB, &a.client.socket_path).await?);
    let r = client
        .get(GetRequest { seq: a.seq })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    match a.client.output {
        OutputFormat::Json => json(out, &record_json(&r)),
        OutputFormat::Pretty => {
            let at = r
                .recorded_at
                .as_ref()
                .map(|t| crate::timefmt::format_unix(t.seconds))
                .unwrap_or_default();
            line(out, format!("Seq              : {}", r.seq));
            line(out, format!("Recorded at      : {at}"));
            line(out, format!("Kind             : {}", r.kind));
            line(out, format!("Schema version   : {}", r.schema_version));
            line(
                out,
                format!("Prev hash        : {}", hex::encode(&r.prev_hash)),
            );
            line(out, format!("Hash             : {}", hex::encode(&r.hash)));
            line(out, format!("Payload          : {}", r.payload_json));
        }
    }
    Ok(())
}
