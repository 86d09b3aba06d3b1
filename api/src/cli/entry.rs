//! `entry create|show|update|delete|count`: registration entries, with SPIRE's flags, and
//! SPIRE's batch files (`create|update --data FILE`, `delete --file FILE`).
//!
//! The flags and `show`/`count` live here; entries from flags in `wire`, batch files in
//! `data`, the writing verbs in `write`.

mod data;
mod wire;
mod write;

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::{
    count_entries_request, CountEntriesRequest, GetEntryRequest, ListEntriesRequest,
};

pub use self::data::{MAX_DATA_BYTES, MAX_DATA_ENTRIES};
use self::wire::{entry_id, filter};
use super::common::{all_pages, connect, json, line, rpc, CliError, ClientArgs, OutputFormat};
use super::render::{entry_json, entry_pretty};

/// `entry ...`.
#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Creates a registration entry.
    Create(CreateArgs),
    /// Shows registration entries (all, or those the filters select).
    Show(ShowArgs),
    /// Updates a registration entry: only the fields given change.
    Update(UpdateArgs),
    /// Deletes a registration entry.
    Delete(DeleteArgs),
    /// Counts registration entries (all, or those the filters select).
    Count(CountArgs),
}

/// Fields of an entry, as `create` and `update` take them.
#[derive(Debug, Clone, Args)]
pub struct EntryFields {
    /// The SPIFFE ID that matching workloads get.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: Option<String>,
    /// The SPIFFE ID of the agent (or entry) the workloads run under.
    #[arg(long = "parentID", visible_alias = "parent-id")]
    pub parent_id: Option<String>,
    /// A `type:value` selector; repeat for several (all must match).
    #[arg(long = "selector")]
    pub selectors: Vec<String>,
    /// X509-SVID TTL (seconds, or a duration such as "1h"); server default when unset.
    #[arg(long = "x509SVIDTTL", visible_alias = "x509-svid-ttl")]
    pub x509_svid_ttl: Option<String>,
    /// JWT-SVID TTL (seconds, or a duration such as "5m"); server default when unset.
    #[arg(long = "jwtSVIDTTL", visible_alias = "jwt-svid-ttl")]
    pub jwt_svid_ttl: Option<String>,
    /// A DNS name for the X509-SVID; repeat for several.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// A trust domain whose bundle the workloads also get; repeat for several.
    #[arg(long = "federatesWith", visible_alias = "federates-with")]
    pub federates_with: Vec<String>,
    /// Whether the workloads may call the admin API.
    #[arg(long = "admin", num_args = 0..=1, default_missing_value = "true")]
    pub admin: Option<bool>,
    /// Whether the workloads may mint SVIDs for downstream servers.
    #[arg(long = "downstream", num_args = 0..=1, default_missing_value = "true")]
    pub downstream: Option<bool>,
    /// Make this a node alias: its parent is the server (spiffe://<td>/spire/server).
    #[arg(long = "node")]
    pub node: bool,
    /// A hint for workloads to tell their identities apart.
    #[arg(long = "hint")]
    pub hint: Option<String>,
    /// When the entry stops applying (Unix seconds or RFC 3339).
    #[arg(long = "entryExpiry", visible_alias = "entry-expiry")]
    pub entry_expiry: Option<String>,
}

/// `entry create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The id for the new entry; generated when unset.
    #[arg(long = "entryID", visible_alias = "entry-id")]
    pub entry_id: Option<String>,
    /// A JSON file of entries (SPIRE's `{"entries": [...]}`), instead of the field flags;
    /// `-` reads stdin.
    #[arg(long = "data")]
    pub data: Option<String>,
    #[command(flatten)]
    pub fields: EntryFields,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `entry update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The entry to update.
    #[arg(long = "entryID", visible_alias = "entry-id")]
    pub entry_id: Option<String>,
    /// A JSON file of entries with their `entry_id` (SPIRE's `{"entries": [...]}`), each
    /// replaced whole, instead of the field flags; `-` reads stdin.
    #[arg(long = "data")]
    pub data: Option<String>,
    #[command(flatten)]
    pub fields: EntryFields,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How a set filter is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MatchOn {
    /// Same set.
    Exact,
    /// The entry's set is within the filter's.
    Subset,
    /// The entry's set includes the filter's.
    Superset,
    /// At least one in common.
    Any,
}

impl MatchOn {
    fn wire(self) -> i32 {
        match self {
            Self::Exact => 0,
            Self::Subset => 1,
            Self::Superset => 2,
            Self::Any => 3,
        }
    }
}

/// Filters of `show` and `count`.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Entries with this SPIFFE ID.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: Option<String>,
    /// Entries with this parent ID.
    #[arg(long = "parentID", visible_alias = "parent-id")]
    pub parent_id: Option<String>,
    /// Entries with these selectors (see --matchSelectorsOn); repeatable.
    #[arg(long = "selector")]
    pub selectors: Vec<String>,
    /// Entries federating with these trust domains (see --matchFederatesWithOn); repeatable.
    #[arg(long = "federatesWith", visible_alias = "federates-with")]
    pub federates_with: Vec<String>,
    /// How --selector is compared with an entry's selectors.
    #[arg(
        long = "matchSelectorsOn",
        visible_alias = "match-selectors-on",
        value_enum,
        default_value = "superset"
    )]
    pub match_selectors_on: MatchOn,
    /// How --federatesWith is compared with an entry's.
    #[arg(
        long = "matchFederatesWithOn",
        visible_alias = "match-federates-with-on",
        value_enum,
        default_value = "superset"
    )]
    pub match_federates_with_on: MatchOn,
    /// Entries with this downstream flag.
    #[arg(long = "downstream", num_args = 0..=1, default_missing_value = "true")]
    pub downstream: Option<bool>,
    /// Entries with this hint.
    #[arg(long = "hint")]
    pub hint: Option<String>,
}

/// `entry show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Show only this entry.
    #[arg(long = "entryID", visible_alias = "entry-id")]
    pub entry_id: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `entry count`.
#[derive(Debug, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `entry delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The entry to delete.
    #[arg(long = "entryID", visible_alias = "entry-id")]
    pub entry_id: Option<String>,
    /// A JSON file of entry ids to delete (SPIRE's `{"ids": [...]}`); `-` reads stdin.
    #[arg(long = "file")]
    pub file: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs an `entry` verb.
pub async fn run(cmd: EntryCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        EntryCommand::Create(a) => write::create(a, out).await,
        EntryCommand::Show(a) => show(a, out).await,
        EntryCommand::Update(a) => write::update(a, out).await,
        EntryCommand::Delete(a) => write::delete(a, out).await,
        EntryCommand::Count(a) => count(a, out).await,
    }
}

async fn show(a: ShowArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "entry show";
    let wanted = a
        .entry_id
        .as_deref()
        .map(|id| entry_id(VERB, id))
        .transpose()?;
    let filter = filter(VERB, &a.filter)?;
    let mut client = EntryClient::new(connect(VERB, &a.client.socket_path).await?);
    let entries = match wanted {
        Some(id) => vec![client
            .get_entry(GetEntryRequest {
                id: id.as_str().to_owned(),
                output_mask: None,
            })
            .await
            .map_err(rpc(VERB))?
            .into_inner()],
        None => {
            all_pages(|page_token| {
                let (mut client, filter) = (client.clone(), filter.clone());
                async move {
                    let page = client
                        .list_entries(ListEntriesRequest {
                            filter: Some(filter),
                            output_mask: None,
                            page_size: 0,
                            page_token,
                        })
                        .await
                        .map_err(rpc(VERB))?
                        .into_inner();
                    Ok((page.entries, page.next_page_token))
                }
            })
            .await?
        }
    };
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "entries": entries.iter().map(entry_json).collect::<Vec<_>>() }),
        ),
        OutputFormat::Pretty => {
            match entries.len() {
                0 => line(out, "Found 0 entries"),
                1 => line(out, "Found 1 entry"),
                n => line(out, format!("Found {n} entries")),
            }
            for e in &entries {
                entry_pretty(out, e);
            }
        }
    }
    Ok(())
}

async fn count(a: CountArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "entry count";
    let f = filter(VERB, &a.filter)?;
    let mut client = EntryClient::new(connect(VERB, &a.client.socket_path).await?);
    let n = client
        .count_entries(CountEntriesRequest {
            filter: Some(count_entries_request::Filter {
                by_spiffe_id: f.by_spiffe_id,
                by_parent_id: f.by_parent_id,
                by_selectors: f.by_selectors,
                by_federates_with: f.by_federates_with,
                by_hint: f.by_hint,
                by_downstream: f.by_downstream,
            }),
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner()
        .count;
    match a.client.output {
        OutputFormat::Json => json(out, &json!({ "count": n })),
        OutputFormat::Pretty => line(out, format!("{n} registration entries")),
    }
    Ok(())
}
