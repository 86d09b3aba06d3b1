//! `agent list|show|evict|ban|count` and `token generate`.

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_proto::spire::api::server::agent::v1::agent_client::AgentClient;
use tessera_proto::spire::api::server::agent::v1::{
    count_agents_request, list_agents_request, BanAgentRequest, CountAgentsRequest,
    CreateJoinTokenRequest, DeleteAgentRequest, GetAgentRequest, ListAgentsRequest,
};
use tessera_proto::spire::api::types;

use super::common::{
    self, all_pages, connect, json, line, rpc, CliError, ClientArgs, OutputFormat,
};
use super::entry::MatchOn;
use super::render::{agent_json, agent_pretty};
use crate::convert::{selector_to_proto, spiffe_id_to_proto};

/// `agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Lists attested agents.
    List(ListArgs),
    /// Shows one attested agent.
    Show(IdArgs),
    /// Evicts an agent: its record is deleted and it must attest again.
    Evict(IdArgs),
    /// Bans an agent: it can neither renew nor attest until evicted.
    Ban(IdArgs),
    /// Counts attested agents.
    Count(ListArgs),
}

/// `agent list|count`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Agents attested this way (`join_token`, `x509pop`).
    #[arg(long = "attestationType", visible_alias = "attestation-type")]
    pub attestation_type: Option<String>,
    /// Agents with these node selectors (see --matchSelectorsOn); repeatable.
    #[arg(long = "selector")]
    pub selectors: Vec<String>,
    /// How --selector is compared with an agent's selectors.
    #[arg(
        long = "matchSelectorsOn",
        visible_alias = "match-selectors-on",
        value_enum,
        default_value = "superset"
    )]
    pub match_selectors_on: MatchOn,
    /// Banned agents only (or, with =false, unbanned only).
    #[arg(long = "banned", num_args = 0..=1, default_missing_value = "true")]
    pub banned: Option<bool>,
    /// Re-attestable agents only (or, with =false, the others).
    #[arg(long = "canReattest", visible_alias = "can-reattest", num_args = 0..=1, default_missing_value = "true")]
    pub can_reattest: Option<bool>,
    /// Agents whose SVID expires before this time (Unix seconds or RFC 3339).
    #[arg(long = "expiresBefore", visible_alias = "expires-before")]
    pub expires_before: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A verb on one agent.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The agent's SPIFFE ID.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Generates a join token for an agent to attest with.
    Generate(GenerateArgs),
}

/// `token generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// An extra SPIFFE ID (node alias) for the agent that uses the token.
    #[arg(long = "spiffeID", visible_alias = "spiffe-id")]
    pub spiffe_id: Option<String>,
    /// Token lifetime (seconds, or a duration such as "10m"); the server's default (600 s)
    /// when unset.
    #[arg(long = "ttl")]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs an `agent` verb.
pub async fn run(cmd: AgentCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        AgentCommand::List(a) => list(a, out, false).await,
        AgentCommand::Count(a) => list(a, out, true).await,
        AgentCommand::Show(a) => show(a, out).await,
        AgentCommand::Evict(a) => evict(a, out).await,
        AgentCommand::Ban(a) => ban(a, out).await,
    }
}

fn agent_id(verb: &'static str, a: &IdArgs) -> Result<types::Spiffeid, CliError> {
    let v = a.spiffe_id.as_deref().ok_or(CliError::Usage {
        verb,
        message: "--spiffeID is required".into(),
    })?;
    Ok(spiffe_id_to_proto(&common::spiffe_id(
        verb,
        "--spiffeID",
        v,
    )?))
}

fn filter(verb: &'static str, a: &ListArgs) -> Result<list_agents_request::Filter, CliError> {
    let by_selector_match = if a.selectors.is_empty() {
        None
    } else {
        Some(types::SelectorMatch {
            selectors: a
                .selectors
                .iter()
                .map(|s| common::selector(verb, "--selector", s).map(|s| selector_to_proto(&s)))
                .collect::<Result<_, _>>()?,
            r#match: match a.match_selectors_on {
                MatchOn::Exact => 0,
                MatchOn::Subset => 1,
                MatchOn::Superset => 2,
                MatchOn::Any => 3,
            },
        })
    };
    let by_expires_before = match &a.expires_before {
        Some(v) => common::timestamp(verb, "--expiresBefore", v)?.to_string(),
        None => String::new(),
    };
    Ok(list_agents_request::Filter {
        by_attestation_type: a.attestation_type.clone().unwrap_or_default(),
        by_selector_match,
        by_banned: a.banned,
        by_can_reattest: a.can_reattest,
        by_expires_before,
    })
}

async fn list(a: ListArgs, out: &mut dyn Write, count_only: bool) -> Result<(), CliError> {
    let verb = if count_only {
        "agent count"
    } else {
        "agent list"
    };
    let f = filter(verb, &a)?;
    let mut client = AgentClient::new(connect(verb, &a.client.socket_path).await?);
    if count_only {
        let n = client
            .count_agents(CountAgentsRequest {
                filter: Some(count_agents_request::Filter {
                    by_attestation_type: f.by_attestation_type,
                    by_selector_match: f.by_selector_match,
                    by_banned: f.by_banned,
                    by_can_reattest: f.by_can_reattest,
                    by_expires_before: f.by_expires_before,
                }),
            })
            .await
            .map_err(rpc(verb))?
            .into_inner()
            .count;
        match a.client.output {
            OutputFormat::Json => json(out, &json!({ "count": n })),
            OutputFormat::Pretty => line(out, format!("{n} attested agents")),
        }
        return Ok(());
    }
    let agents = all_pages(|page_token| {
        let (mut client, filter) = (client.clone(), f.clone());
        async move {
            let page = client
                .list_agents(ListAgentsRequest {
                    filter: Some(filter),
                    output_mask: None,
                    page_size: 0,
                    page_token,
                })
                .await
                .map_err(rpc(verb))?
                .into_inner();
            Ok((page.agents, page.next_page_token))
        }
    })
    .await?;
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "agents": agents.iter().map(agent_json).collect::<Vec<_>>() }),
        ),
        OutputFormat::Pretty => {
            match agents.len() {
                0 => line(out, "No attested agents found"),
                1 => line(out, "Found 1 attested agent:\n"),
                n => line(out, format!("Found {n} attested agents:\n")),
            }
            for agent in &agents {
                agent_pretty(out, agent, false);
            }
        }
    }
    Ok(())
}

async fn show(a: IdArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "agent show";
    let id = agent_id(VERB, &a)?;
    let mut client = AgentClient::new(connect(VERB, &a.client.socket_path).await?);
    let agent = client
        .get_agent(GetAgentRequest {
            id: Some(id),
            output_mask: None,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    match a.client.output {
        OutputFormat::Json => json(out, &agent_json(&agent)),
        OutputFormat::Pretty => {
            line(out, "Found an attested agent given its SPIFFE ID\n");
            agent_pretty(out, &agent, true);
        }
    }
    Ok(())
}

async fn evict(a: IdArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "agent evict";
    let id = agent_id(VERB, &a)?;
    let mut client = AgentClient::new(connect(VERB, &a.client.socket_path).await?);
    client
        .delete_agent(DeleteAgentRequest { id: Some(id) })
        .await
        .map_err(rpc(VERB))?;
    match a.client.output {
        OutputFormat::Json => json(out, &json!({})),
        OutputFormat::Pretty => line(out, "Agent evicted successfully"),
    }
    Ok(())
}

async fn ban(a: IdArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "agent ban";
    let id = agent_id(VERB, &a)?;
    let mut client = AgentClient::new(connect(VERB, &a.client.socket_path).await?);
    client
        .ban_agent(BanAgentRequest { id: Some(id) })
        .await
        .map_err(rpc(VERB))?;
    match a.client.output {
        OutputFormat::Json => json(out, &json!({})),
        OutputFormat::Pretty => line(out, "Agent banned successfully"),
    }
    Ok(())
}

/// Runs a `token` verb.
pub async fn run_token(cmd: TokenCommand, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "token generate";
    let TokenCommand::Generate(a) = cmd;
    let agent_id = a
        .spiffe_id
        .as_deref()
        .map(|v| common::spiffe_id(VERB, "--spiffeID", v).map(|id| spiffe_id_to_proto(&id)))
        .transpose()?;
    let ttl = a
        .ttl
        .as_deref()
        .map(|v| common::ttl_secs(VERB, "--ttl", v))
        .transpose()?
        .unwrap_or(0);
    let mut client = AgentClient::new(connect(VERB, &a.client.socket_path).await?);
    let token = client
        .create_join_token(CreateJoinTokenRequest {
            ttl,
            token: String::new(),
            agent_id,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "value": token.value, "expires_at": token.expires_at }),
        ),
        OutputFormat::Pretty => line(out, format!("Token: {}", token.value)),
    }
    Ok(())
}
