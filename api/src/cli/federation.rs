//! `federation create | show | list | update | delete | refresh`: federation relationships
//! with foreign trust domains, with SPIRE's flags (`--trustDomain`, `--bundleEndpointURL`,
//! `--bundleEndpointProfile`, `--endpointSpiffeID`, `--trustDomainBundlePath`,
//! `--trustDomainBundleFormat`, `--data`, `--id`) and output.
//!
//! `--data` reads SPIRE's JSON (`{"federationRelationships": [{"trustDomain", ...}]}`, the
//! bundle inline as `trustDomainBundle`: a PEM string or a SPIFFE bundle object) from a file,
//! or stdin for `-`. `federation show` also prints how refreshes are going, from the
//! `tessera-refresh-status` response metadata (a Tessera addition; SPIRE has no field for it).

mod input;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tessera_proto::spire::api::server::trustdomain::v1::trust_domain_client::TrustDomainClient;
use tessera_proto::spire::api::server::trustdomain::v1::{
    BatchCreateFederationRelationshipRequest, BatchDeleteFederationRelationshipRequest,
    BatchUpdateFederationRelationshipRequest, GetFederationRelationshipRequest,
    ListFederationRelationshipsRequest, RefreshBundleRequest,
};
use tessera_proto::spire::api::types;
use tessera_proto::spire::api::types::federation_relationship::BundleEndpointProfile;

use self::input::{from_data, from_flags};
use super::bundle::{bundle_json, item_failure, BundleFormat};
use super::common::{
    self, all_pages, code_name, connect, json, line, rpc, CliError, ClientArgs, OutputFormat,
};
use crate::admin::REFRESH_STATUS_METADATA;
use crate::timefmt::format_unix;

/// `federation ...`.
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Creates a federation relationship with a foreign trust domain.
    Create(WriteArgs),
    /// Shows one federation relationship and how its bundle refreshes are going.
    Show(ShowArgs),
    /// Lists federation relationships.
    List(ListArgs),
    /// Updates a federation relationship (every field is replaced).
    Update(WriteArgs),
    /// Deletes a federation relationship (its federated bundle stays: `bundle delete`).
    Delete(IdArgs),
    /// Fetches the foreign trust domain's bundle from its endpoint now.
    Refresh(IdArgs),
}

/// The fields of a relationship, as flags (SPIRE's names).
#[derive(Debug, Clone, Default, Args)]
pub struct RelationshipFlags {
    /// Name of the trust domain to federate with (e.g. partner.org).
    #[arg(long = "trustDomain", visible_alias = "trust-domain")]
    pub trust_domain: Option<String>,
    /// URL of the SPIFFE bundle endpoint that serves its bundle (https).
    #[arg(long = "bundleEndpointURL", visible_alias = "bundle-endpoint-url")]
    pub bundle_endpoint_url: Option<String>,
    /// Endpoint profile: https_web or https_spiffe.
    #[arg(
        long = "bundleEndpointProfile",
        visible_alias = "bundle-endpoint-profile"
    )]
    pub bundle_endpoint_profile: Option<String>,
    /// SPIFFE ID the bundle endpoint presents (https_spiffe only).
    #[arg(long = "endpointSpiffeID", visible_alias = "endpoint-spiffe-id")]
    pub endpoint_spiffe_id: Option<String>,
    /// Path to the trust domain's bundle, to start from (optional).
    #[arg(
        long = "trustDomainBundlePath",
        visible_alias = "trust-domain-bundle-path"
    )]
    pub bundle_path: Option<PathBuf>,
    /// Format of that bundle: pem or spiffe.
    #[arg(
        long = "trustDomainBundleFormat",
        visible_alias = "trust-domain-bundle-format",
        value_enum
    )]
    pub bundle_format: Option<BundleFormat>,
}

/// `federation create` and `federation update`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Path to a JSON file of relationships (SPIRE's format); `-` reads stdin.
    #[arg(long = "data")]
    pub data: Option<String>,
    #[command(flatten)]
    pub fields: RelationshipFlags,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `federation show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The trust domain of the relationship.
    #[arg(long = "trustDomain", visible_alias = "trust-domain")]
    pub trust_domain: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `federation list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `federation delete` and `federation refresh`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The trust domain (`partner.org` or `spiffe://partner.org`).
    #[arg(long = "id")]
    pub id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs a `federation` verb.
pub async fn run(cmd: FederationCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        FederationCommand::Create(a) => write(a, true, out).await,
        FederationCommand::Update(a) => write(a, false, out).await,
        FederationCommand::Show(a) => show(a, out).await,
        FederationCommand::List(a) => list(a, out).await,
        FederationCommand::Delete(a) => delete(a, out).await,
        FederationCommand::Refresh(a) => refresh(a, out).await,
    }
}

// === printing ===

/// A relationship, SPIRE's layout.
fn pretty(out: &mut dyn Write, r: &types::FederationRelationship) {
    line(
        out,
        format!("Trust domain              : {}", r.trust_domain),
    );
    line(
        out,
        format!("Bundle endpoint URL       : {}", r.bundle_endpoint_url),
    );
    match &r.bundle_endpoint_profile {
        Some(BundleEndpointProfile::HttpsWeb(_)) => {
            line(out, "Bundle endpoint profile   : https_web");
        }
        Some(BundleEndpointProfile::HttpsSpiffe(p)) => {
            line(out, "Bundle endpoint profile   : https_spiffe");
            line(
                out,
                format!("Endpoint SPIFFE ID        : {}", p.endpoint_spiffe_id),
            );
        }
        None => {}
    }
}

/// A relationship as JSON with the proto field names.
fn relationship_json(r: &types::FederationRelationship) -> Value {
    let mut v = json!({
        "trust_domain": r.trust_domain,
        "bundle_endpoint_url": r.bundle_endpoint_url,
    });
    match &r.bundle_endpoint_profile {
        Some(BundleEndpointProfile::HttpsWeb(_)) => v["https_web"] = json!({}),
        Some(BundleEndpointProfile::HttpsSpiffe(p)) => {
            v["https_spiffe"] = json!({ "endpoint_spiffe_id": p.endpoint_spiffe_id });
        }
        None => {}
    }
    if let Some(b) = &r.trust_domain_bundle {
        v["trust_domain_bundle"] = bundle_json(b);
    }
    v
}

/// The refresh status lines of `federation show`.
fn refresh_pretty(out: &mut dyn Write, status: Option<&Value>) {
    let Some(s) = status else {
        line(out, "Last refresh              : not attempted yet");
        return;
    };
    let time = |key: &str| match s.get(key).and_then(Value::as_i64) {
        Some(t) => format_unix(t),
        None => "never".into(),
    };
    line(
        out,
        format!("Last refresh              : {}", time("last_attempt_at")),
    );
    line(
        out,
        format!("Last successful refresh   : {}", time("last_success_at")),
    );
    if let Some(e) = s.get("last_error").and_then(Value::as_str) {
        line(out, format!("Last refresh error        : {e}"));
    }
    if let Some(n) = s
        .get("consecutive_failures")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
    {
        line(out, format!("Consecutive failures      : {n}"));
    }
    if s.get("next_refresh_at").and_then(Value::as_i64).is_some() {
        line(
            out,
            format!("Next refresh              : {}", time("next_refresh_at")),
        );
    }
}

// === verbs ===

async fn client(
    verb: &'static str,
    c: &ClientArgs,
) -> Result<TrustDomainClient<tonic::transport::Channel>, CliError> {
    Ok(TrustDomainClient::new(connect(verb, &c.socket_path).await?))
}

async fn write(a: WriteArgs, create: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let verb = if create {
        "federation create"
    } else {
        "federation update"
    };
    let relationships = match &a.data {
        Some(path) => {
            let f = &a.fields;
            if f.trust_domain.is_some()
                || f.bundle_endpoint_url.is_some()
                || f.bundle_endpoint_profile.is_some()
                || f.endpoint_spiffe_id.is_some()
                || f.bundle_path.is_some()
                || f.bundle_format.is_some()
            {
                return Err(CliError::Usage {
                    verb,
                    message: "--data gives every field: drop the other relationship flags".into(),
                });
            }
            from_data(verb, path)?
        }
        None => vec![from_flags(verb, &a.fields)?],
    };
    let mut c = client(verb, &a.client).await?;
    let results: Vec<(Option<types::Status>, Option<types::FederationRelationship>)> = if create {
        c.batch_create_federation_relationship(BatchCreateFederationRelationshipRequest {
            federation_relationships: relationships.clone(),
            output_mask: None,
        })
        .await
        .map_err(rpc(verb))?
        .into_inner()
        .results
        .into_iter()
        .map(|r| (r.status, r.federation_relationship))
        .collect()
    } else {
        c.batch_update_federation_relationship(BatchUpdateFederationRelationshipRequest {
            federation_relationships: relationships.clone(),
            input_mask: None,
            output_mask: None,
        })
        .await
        .map_err(rpc(verb))?
        .into_inner()
        .results
        .into_iter()
        .map(|r| (r.status, r.federation_relationship))
        .collect()
    };
    let mut failures = Vec::new();
    let mut shown = Vec::new();
    for (i, (status, r)) in results.into_iter().enumerate() {
        let asked = relationships
            .get(i)
            .map(|r| r.trust_domain.as_str())
            .unwrap_or("?");
        match item_failure(verb, asked, status.as_ref()) {
            Some(CliError::Failed { message, .. }) => failures.push(message),
            Some(other) => return Err(other),
            None => shown.push((status, r.unwrap_or_default())),
        }
    }
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "results": shown.iter().map(|(s, r)| json!({
                "status": s.as_ref().map(|s| json!({ "code": s.code, "message": s.message })),
                "federation_relationship": relationship_json(r),
            })).collect::<Vec<_>>() }),
        ),
        OutputFormat::Pretty => {
            for (_, r) in &shown {
                line(out, "");
                pretty(out, r);
            }
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    let action = if create { "create" } else { "update" };
    Err(CliError::Failed {
        verb,
        message: format!(
            "failed to {action} {} of {} federation relationships: {}",
            failures.len(),
            relationships.len(),
            failures.join("; ")
        ),
    })
}

async fn show(a: ShowArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "federation show";
    let td = a.trust_domain.as_deref().ok_or(CliError::Usage {
        verb: VERB,
        message: "--trustDomain is required (e.g. partner.org)".into(),
    })?;
    let td = common::trust_domain(VERB, "--trustDomain", td)?;
    let response = client(VERB, &a.client)
        .await?
        .get_federation_relationship(GetFederationRelationshipRequest {
            trust_domain: td.as_str().to_owned(),
            output_mask: None,
        })
        .await
        .map_err(rpc(VERB))?;
    let status: Option<Value> = response
        .metadata()
        .get(REFRESH_STATUS_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| serde_json::from_str(s).ok());
    let r = response.into_inner();
    match a.client.output {
        OutputFormat::Json => {
            let mut v = relationship_json(&r);
            v["refresh_status"] = status.unwrap_or(Value::Null);
            json(out, &v);
        }
        OutputFormat::Pretty => {
            line(
                out,
                format!(
                    "Found a federation relationship with trust domain {}:",
                    r.trust_domain
                ),
            );
            line(out, "");
            pretty(out, &r);
            refresh_pretty(out, status.as_ref());
        }
    }
    Ok(())
}

async fn list(a: ListArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "federation list";
    let c = client(VERB, &a.client).await?;
    let all = all_pages(|page_token| {
        let mut c = c.clone();
        async move {
            let page = c
                .list_federation_relationships(ListFederationRelationshipsRequest {
                    output_mask: None,
                    page_size: 0,
                    page_token,
                })
                .await
                .map_err(rpc(VERB))?
                .into_inner();
            Ok((page.federation_relationships, page.next_page_token))
        }
    })
    .await?;
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "federation_relationships": all.iter().map(relationship_json).collect::<Vec<_>>() }),
        ),
        OutputFormat::Pretty => {
            let noun = if all.len() == 1 {
                "relationship"
            } else {
                "relationships"
            };
            line(out, format!("Found {} federation {noun}", all.len()));
            for r in &all {
                line(out, "");
                pretty(out, r);
            }
        }
    }
    Ok(())
}

fn required_id(
    verb: &'static str,
    id: Option<&str>,
) -> Result<tessera_identity::TrustDomain, CliError> {
    let id = id.ok_or(CliError::Usage {
        verb,
        message: "--id is required: the trust domain, e.g. partner.org".into(),
    })?;
    common::trust_domain(verb, "--id", id)
}

async fn delete(a: IdArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "federation delete";
    let td = required_id(VERB, a.id.as_deref())?;
    let result = client(VERB, &a.client)
        .await?
        .batch_delete_federation_relationship(BatchDeleteFederationRelationshipRequest {
            trust_domains: vec![td.as_str().to_owned()],
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner()
        .results
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Failed {
            verb: VERB,
            message: "the server returned no result".into(),
        })?;
    let what = format!("failed to delete federation relationship {:?}", td.as_str());
    if let Some(e) = item_failure(VERB, &what, result.status.as_ref()) {
        return Err(e);
    }
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({ "results": [{
                "status": { "code": 0, "message": "OK" },
                "trust_domain": result.trust_domain,
            }] }),
        ),
        OutputFormat::Pretty => line(out, "federation relationship deleted."),
    }
    Ok(())
}

async fn refresh(a: IdArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "federation refresh";
    let td = required_id(VERB, a.id.as_deref())?;
    let outcome = client(VERB, &a.client)
        .await?
        .refresh_bundle(RefreshBundleRequest {
            trust_domain: td.as_str().to_owned(),
        })
        .await;
    match outcome {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::NotFound => {
            return Err(CliError::Failed {
                verb: VERB,
                message: format!(
                    "there is no federation relationship with trust domain {:?}; `federation list` shows them",
                    td.as_str()
                ),
            })
        }
        Err(s) => {
            return Err(CliError::Failed {
                verb: VERB,
                message: format!("failed to refresh bundle: {}: {}", code_name(s.code()), s.message()),
            })
        }
    }
    match a.client.output {
        OutputFormat::Json => json(out, &json!({ "code": 0, "message": "OK" })),
        OutputFormat::Pretty => line(out, "Bundle refreshed"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(status: Option<&Value>) -> String {
        let mut out = Vec::new();
        refresh_pretty(&mut out, status);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn refresh_status_lines() {
        assert_eq!(
            printed(None),
            "Last refresh              : not attempted yet\n"
        );
        let failing = json!({
            "last_attempt_at": 1_700_000_100,
            "last_success_at": null,
            "last_error": "connection refused",
            "consecutive_failures": 2,
            "next_refresh_at": 1_700_000_400,
        });
        assert_eq!(
            printed(Some(&failing)),
            "Last refresh              : 2023-11-14T22:15:00Z\n\
             Last successful refresh   : never\n\
             Last refresh error        : connection refused\n\
             Consecutive failures      : 2\n\
             Next refresh              : 2023-11-14T22:20:00Z\n"
        );
    }

    #[test]
    fn data_errors_name_the_item_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.json");
        std::fs::write(
            &path,
            r#"{"federationRelationships": [
                {"trustDomain": "a.org", "bundleEndpointURL": "https://a.org", "bundleEndpointProfile": "https_web"},
                {"trustDomain": "b.org", "bundleEndpointURL": "https://b.org", "bundleEndpointProfile": "https_spiffe"}
            ]}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let e = from_data("federation create", p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("federation create: --data {p}: item 1: endpointSPIFFEID is required with --bundleEndpointProfile https_spiffe: the SPIFFE ID the endpoint presents (e.g. spiffe://partner.org/spire/server)")
        );
        std::fs::write(&path, "{}").unwrap();
        let e = from_data("federation create", p).unwrap_err().to_string();
        assert!(e.contains("no \"federationRelationships\" array"), "{e}");
    }
}
