//! `entry create|show|update|delete|count`: registration entries, with SPIRE's flags.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tessera_identity::{EntryId, SpiffeId, SERVER_PATH};
use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::{
    count_entries_request, list_entries_request, BatchCreateEntryRequest, BatchDeleteEntryRequest,
    BatchUpdateEntryRequest, CountEntriesRequest, GetEntryRequest, ListEntriesRequest,
};
use tessera_proto::spire::api::types;

use super::common::{
    self, code_name, connect, json, line, rpc, CliError, ClientArgs, OutputFormat,
};
use super::render::{entry_json, entry_pretty};
use crate::convert::{selector_to_proto, spiffe_id_to_proto};

/// Most pages `entry show` follows (a bound on a misbehaving server, not on real data).
const MAX_PAGES: usize = 100_000;

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
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs an `entry` verb.
pub async fn run(cmd: EntryCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        EntryCommand::Create(a) => create(a, out).await,
        EntryCommand::Show(a) => show(a, out).await,
        EntryCommand::Update(a) => update(a, out).await,
        EntryCommand::Delete(a) => delete(a, out).await,
        EntryCommand::Count(a) => count(a, out).await,
    }
}

fn entry_id(verb: &'static str, value: &str) -> Result<EntryId, CliError> {
    EntryId::new(value).map_err(|e| CliError::Flag {
        verb,
        flag: "--entryID",
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

fn server_id(of: &SpiffeId) -> Result<SpiffeId, CliError> {
    SpiffeId::from_path(of.trust_domain(), SERVER_PATH).map_err(|e| CliError::Usage {
        verb: "entry",
        message: e.to_string(),
    })
}

/// Builds the wire entry and the mask of the fields given.
fn to_wire(
    verb: &'static str,
    f: &EntryFields,
) -> Result<(types::Entry, types::EntryMask), CliError> {
    let mut e = types::Entry::default();
    let mut m = types::EntryMask::default();
    let spiffe_id = f
        .spiffe_id
        .as_deref()
        .map(|v| common::spiffe_id(verb, "--spiffeID", v))
        .transpose()?;
    if let Some(id) = &spiffe_id {
        e.spiffe_id = Some(spiffe_id_to_proto(id));
        m.spiffe_id = true;
    }
    if f.node && f.parent_id.is_some() {
        return Err(CliError::Usage {
            verb,
            message: "--node and --parentID cannot be used together (--node sets the parent to the server)".into(),
        });
    }
    if f.node {
        let of = spiffe_id.as_ref().ok_or_else(|| CliError::Usage {
            verb,
            message: "--node needs --spiffeID (the server ID is in its trust domain)".into(),
        })?;
        e.parent_id = Some(spiffe_id_to_proto(&server_id(of)?));
        m.parent_id = true;
    } else if let Some(v) = &f.parent_id {
        e.parent_id = Some(spiffe_id_to_proto(&common::spiffe_id(
            verb,
            "--parentID",
            v,
        )?));
        m.parent_id = true;
    }
    if !f.selectors.is_empty() {
        e.selectors = f
            .selectors
            .iter()
            .map(|s| common::selector(verb, "--selector", s).map(|s| selector_to_proto(&s)))
            .collect::<Result<_, _>>()?;
        m.selectors = true;
    }
    if let Some(v) = &f.x509_svid_ttl {
        e.x509_svid_ttl = common::ttl_secs(verb, "--x509SVIDTTL", v)?;
        m.x509_svid_ttl = true;
    }
    if let Some(v) = &f.jwt_svid_ttl {
        e.jwt_svid_ttl = common::ttl_secs(verb, "--jwtSVIDTTL", v)?;
        m.jwt_svid_ttl = true;
    }
    if !f.dns.is_empty() {
        e.dns_names = f.dns.clone();
        m.dns_names = true;
    }
    if !f.federates_with.is_empty() {
        e.federates_with = f
            .federates_with
            .iter()
            .map(|td| {
                common::trust_domain(verb, "--federatesWith", td).map(|td| td.as_str().to_owned())
            })
            .collect::<Result<_, _>>()?;
        m.federates_with = true;
    }
    if let Some(v) = f.admin {
        e.admin = v;
        m.admin = true;
    }
    if let Some(v) = f.downstream {
        e.downstream = v;
        m.downstream = true;
    }
    if let Some(v) = &f.hint {
        e.hint = v.clone();
        m.hint = true;
    }
    if let Some(v) = &f.entry_expiry {
        e.expires_at = common::timestamp(verb, "--entryExpiry", v)?;
        m.expires_at = true;
    }
    Ok((e, m))
}

fn item_failure(verb: &'static str, status: Option<&types::Status>) -> Option<CliError> {
    let s = status?;
    if s.code == 0 {
        return None;
    }
    Some(CliError::Failed {
        verb,
        message: format!(
            "{}: {}",
            code_name(tonic::Code::from_i32(s.code)),
            s.message
        ),
    })
}

async fn create(a: CreateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "entry create";
    let (mut entry, _) = to_wire(VERB, &a.fields)?;
    if entry.spiffe_id.is_none() {
        return Err(CliError::Usage {
            verb: VERB,
            message: "--spiffeID is required".into(),
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
    let mut client = EntryClient::new(connect(VERB, &a.client.socket_path).await?);
    let resp = client
        .batch_create_entry(BatchCreateEntryRequest {
            entries: vec![entry],
            output_mask: None,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    let result = resp
        .results
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Failed {
            verb: VERB,
            message: "the server returned no result".into(),
        })?;
    if let Some(err) = item_failure(VERB, result.status.as_ref()) {
        return Err(err);
    }
    let created = result.entry.unwrap_or_default();
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "results": [{ "status": { "code": 0, "message": "OK" }, "entry": entry_json(&created) }] }),
        ),
        OutputFormat::Pretty => entry_pretty(out, &created),
    }
    Ok(())
}

async fn update(a: UpdateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "entry update";
    let id = a.entry_id.as_deref().ok_or(CliError::Usage {
        verb: VERB,
        message: "--entryID is required".into(),
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
    let mut client = EntryClient::new(connect(VERB, &a.client.socket_path).await?);
    let resp = client
        .batch_update_entry(BatchUpdateEntryRequest {
            entries: vec![entry],
            input_mask: Some(mask),
            output_mask: None,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    let result = resp
        .results
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Failed {
            verb: VERB,
            message: "the server returned no result".into(),
        })?;
    if let Some(err) = item_failure(VERB, result.status.as_ref()) {
        return Err(err);
    }
    let updated = result.entry.unwrap_or_default();
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "results": [{ "status": { "code": 0, "message": "OK" }, "entry": entry_json(&updated) }] }),
        ),
        OutputFormat::Pretty => entry_pretty(out, &updated),
    }
    Ok(())
}

async fn delete(a: DeleteArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "entry delete";
    let id = a.entry_id.as_deref().ok_or(CliError::Usage {
        verb: VERB,
        message: "--entryID is required".into(),
    })?;
    let id = entry_id(VERB, id)?;
    let mut client = EntryClient::new(connect(VERB, &a.client.socket_path).await?);
    let resp = client
        .batch_delete_entry(BatchDeleteEntryRequest {
            ids: vec![id.as_str().to_owned()],
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    let result = resp
        .results
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Failed {
            verb: VERB,
            message: "the server returned no result".into(),
        })?;
    if let Some(err) = item_failure(VERB, result.status.as_ref()) {
        return Err(err);
    }
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "results": [{ "status": { "code": 0, "message": "OK" }, "id": result.id }] }),
        ),
        OutputFormat::Pretty => line(out, format!("Deleted entry with ID: {}", result.id)),
    }
    Ok(())
}

fn filter(verb: &'static str, f: &FilterArgs) -> Result<list_entries_request::Filter, CliError> {
    let mut w = list_entries_request::Filter::default();
    if let Some(v) = &f.spiffe_id {
        w.by_spiffe_id = Some(spiffe_id_to_proto(&common::spiffe_id(
            verb,
            "--spiffeID",
            v,
        )?));
    }
    if let Some(v) = &f.parent_id {
        w.by_parent_id = Some(spiffe_id_to_proto(&common::spiffe_id(
            verb,
            "--parentID",
            v,
        )?));
    }
    if !f.selectors.is_empty() {
        w.by_selectors = Some(types::SelectorMatch {
            selectors: f
                .selectors
                .iter()
                .map(|s| common::selector(verb, "--selector", s).map(|s| selector_to_proto(&s)))
                .collect::<Result<_, _>>()?,
            r#match: f.match_selectors_on.wire(),
        });
    }
    if !f.federates_with.is_empty() {
        w.by_federates_with = Some(types::FederatesWithMatch {
            trust_domains: f
                .federates_with
                .iter()
                .map(|td| {
                    common::trust_domain(verb, "--federatesWith", td)
                        .map(|td| td.as_str().to_owned())
                })
                .collect::<Result<_, _>>()?,
            r#match: f.match_federates_with_on.wire(),
        });
    }
    w.by_hint = f.hint.clone();
    w.by_downstream = f.downstream;
    Ok(w)
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
            let mut all = Vec::new();
            let mut token = String::new();
            for _ in 0..MAX_PAGES {
                let page = client
                    .list_entries(ListEntriesRequest {
                        filter: Some(filter.clone()),
                        output_mask: None,
                        page_size: 0,
                        page_token: token,
                    })
                    .await
                    .map_err(rpc(VERB))?
                    .into_inner();
                all.extend(page.entries);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            all
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
